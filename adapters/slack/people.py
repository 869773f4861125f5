"""What the bot asks Slack about people: a person's locale, whether they administer the workspace, and the
members of user groups (the access rules' `member_of`). Reads are cached briefly, failures never."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Collection

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.model.request import Requester
from bot.policy.access import MembershipUnknown

from .client import why_not

log = logging.getLogger("imagebot.slack")

LOCALE_CACHE_SECONDS = 3600.0  # how long a user's Slack locale is trusted before users.info again
MAX_KNOWN_LOCALES = 10_000  # users whose locale is kept (the oldest is forgotten first)
GROUP_CACHE_SECONDS = 60.0  # how long a user group's members are trusted before usergroups.users.list again


class People:
    """users.info and usergroups.users.list through `client`, with their caches."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}  # user group -> (read at, its members)
        # (workspace, user) -> (read at, their Slack locale): `slack_locale`, oldest first.
        self._locales: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()

    async def slack_locale(self, who: Requester) -> str | None:
        """The person's Slack locale (`users.info` with include_locale, e.g. `zh-CN`), or None if Slack does not
        say. Asked after the ack, never before it; kept per user for LOCALE_CACHE_SECONDS in a bounded cache,
        so a burst of jobs asks once. A failed call is not kept: the next message asks again."""
        key = (who.workspace, who.user)
        now = time.monotonic()
        known = self._locales.get(key)
        if known is not None and now - known[0] < LOCALE_CACHE_SECONDS:
            return known[1]
        try:
            info = await self.client.users_info(user=who.user, include_locale=True)
        except Exception as exc:
            log.info("slack locale not read", extra={"user": who.user, "error": why_not(exc)})
            return None
        locale = (info.get("user") or {}).get("locale")
        self._locales[key] = (now, str(locale) if locale else None)
        self._locales.move_to_end(key)
        while len(self._locales) > MAX_KNOWN_LOCALES:
            self._locales.popitem(last=False)
        return self._locales[key][1]

    async def is_workspace_admin(self, who: Requester) -> bool:
        """An admin or owner of this workspace. A Slack Connect guest's is_admin is about their own
        workspace (their users.info team_id), so it counts only when that is the command's workspace."""
        try:
            info = await self.client.users_info(user=who.user)
        except SlackApiError:
            return False
        person = info.get("user") or {}
        return person.get("team_id") == who.workspace and bool(
            person.get("is_admin") or person.get("is_owner")
        )

    async def in_groups(self, user: str, groups: Collection[str]) -> bool:
        """A member of any of these user groups (usergroups.users.list, each read at most once a minute): True
        if in one, False if in none. A group that cannot be read proves nothing either way: unless the user is
        in another one, MembershipUnknown (the rules then refuse, for allow and deny alike)."""
        unreadable = False
        for group in groups:
            try:
                if user in await self.group_members(group):
                    return True
            except MembershipUnknown:
                unreadable = True
        if unreadable:
            raise MembershipUnknown(user)
        return False

    async def group_members(self, group: str) -> frozenset[str]:
        """A user group's members, cached for GROUP_CACHE_SECONDS; a failed read raises MembershipUnknown and is
        never cached (the next request asks again)."""
        now = time.monotonic()
        cached = self._groups.get(group)
        if cached is not None and now - cached[0] < GROUP_CACHE_SECONDS:
            return cached[1]
        try:
            answer = await self.client.usergroups_users_list(usergroup=group)
            members = frozenset(answer.get("users") or ())
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            # A deleted group, no usergroups:read, a rate limit, a network failure: nobody can tell.
            log.warning("slack user group unreadable", extra={"group": group, "error": why_not(exc)})
            raise MembershipUnknown(group) from None
        self._groups[group] = (now, members)
        return members
