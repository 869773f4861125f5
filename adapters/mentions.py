"""Reading a platform's mentions: what an admin typed after `/imagine-admin` names a person, a channel, a role
or a user group in its platform's syntax; this turns it into the core's typed `Target` (bot/commands.py).

Slack sends `<@U1|bob>`, `<#C1|general>`, `<!subteam^S1|@designers>`; Discord `<@1>`, `<@!1>`, `<#1>`, `<@&1>`.
A bare id is read by its platform's shape: on Slack `U…`/`W…` is a user and `C…`/`G…` a channel, on Discord a
number is a user; the console and the CLI take either. Roles, user groups, @here and plain `@name` text are
refused as targets with what to do instead. Discord's slash commands need none of this: their typed options
are Targets already (adapters/discord/).
"""

from __future__ import annotations

import re

from bot import platforms
from bot.commands import EVERYONE, AdminRequest, Mentions, Target, parse_admin
from bot.errors import UserError
from bot.i18n import msg

# <@U123>, <@U123|name>, <@!123> (Discord nick), <#C123>, <#C123|name>.
_MENTION = re.compile(r"^<(?P<kind>@!?|#)(?P<id>[A-Za-z0-9]+)(?:\|[^>]*)?>$")
_ROLE = re.compile(r"^<@&(?P<id>\d+)>$")  # Discord role
_GROUP = re.compile(r"^<!subteam\^(?P<id>[A-Za-z0-9]+)(?:\|[^>]*)?>$")  # Slack user group
_EVERYONE = re.compile(
    r"^(?:<!(?:here|channel|everyone)(?:\|[^>]*)?>|@(?:here|channel|everyone))$", re.IGNORECASE
)
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SLACK_CHANNEL = re.compile(r"^[CG][A-Z0-9]{2,}$")
_DISCORD_ID = re.compile(r"^[0-9]{1,20}$")
_PER = msg("commands.per")


class PlatformMentions(Mentions):
    """The mentions of one platform (`slack`, `discord`, or a local one: console, CLI)."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.slack = platform == "slack"
        self.discord = platform == "discord"

    def target(self, text: str) -> Target:
        """`<@U1>`, `<@U1|bob>`, `<@!1>` -> a user; `<#C1>`, `<#C1|general>` -> a channel; `workspace`/`guild`/
        `server` -> the caller's tenant. The id is one inside the caller's tenant: the core keys it there."""
        text = text.strip()
        if text.lower() in ("workspace", "guild", "server"):
            return Target(kind="workspace", shown=text)
        match = _MENTION.match(text)
        if match:
            return Target(kind="channel" if match["kind"] == "#" else "user", id=match["id"], shown=text)
        if _ROLE.match(text):
            raise UserError(msg("commands.target_role", text=text, per=_PER))
        if _GROUP.match(text):
            raise UserError(msg("commands.target_group", text=text, per=_PER))
        if _EVERYONE.match(text):
            raise UserError(msg("commands.target_everyone", text=text, per=_PER))
        app = platforms.of(self.platform).name
        example_user, example_channel = (
            ("123456789012345678", "123456789012345678") if self.discord else ("U012ABCDEF", "C012ABCDEF")
        )
        if text.startswith("@"):
            raise UserError(msg("commands.plain_user", text=repr(text), app=app, example=example_user))
        if text.startswith("#"):
            raise UserError(msg("commands.plain_channel", text=repr(text), app=app, example=example_channel))
        slack_user, slack_channel, discord_id = (
            bool(_SLACK_USER.match(text)),
            bool(_SLACK_CHANNEL.match(text)),
            bool(_DISCORD_ID.match(text)),
        )
        if self.slack:
            if slack_user or slack_channel:
                return Target(kind="user" if slack_user else "channel", id=text, shown=text)
            if discord_id:
                raise UserError(msg("commands.not_slack_id", text=repr(text)))
        elif self.discord:
            if discord_id:
                return Target(kind="user", id=text, shown=text)
            if slack_user or slack_channel:
                raise UserError(msg("commands.not_discord_id", text=repr(text)))
        elif slack_user or discord_id or slack_channel:  # console, CLI: either kind of id
            return Target(kind="channel" if slack_channel else "user", id=text, shown=text)
        raise UserError(msg("commands.not_a_target", text=repr(text)))

    def group(self, text: str) -> Target:
        """The target of `allow` / `deny`: a Discord role `<@&1>`, a Slack user group `<!subteam^S1|@x>`, or
        `everyone`. UserError naming the forms otherwise."""
        word = text.strip()
        if word.lower() in ("everyone", "@everyone", "<!everyone>"):
            return Target(kind=EVERYONE, shown=word)
        role, group = _ROLE.match(word), _GROUP.match(word)
        if role and not self.slack:
            return Target(kind="role", id=role["id"], shown=word)
        if group and not self.discord:
            return Target(kind="group", id=group["id"], shown=word)
        kind = msg("access.a_role") if self.discord else msg("access.a_user_group")
        raise UserError(msg("access.not_a_group", word=repr(word), kind=kind))


def read_admin(text: str, platform: str) -> AdminRequest:
    """`/imagine-admin` text as `platform` writes it -> the core's typed request (bot/commands.py)."""
    return parse_admin(text, PlatformMentions(platform))
