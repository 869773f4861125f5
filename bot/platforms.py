"""The chat platforms the bot knows, in one table: the only place in the core that names them.

Everything else in the core asks this table (is the platform local? what does it call a tenant?) instead of
comparing platform names. The adapters (adapters/) own everything about a platform's syntax: they turn its
mentions and typed options into typed values (bot/commands.py `Target`, `AdminRequest`) before the core sees
them. CI fails on a platform name written as a string anywhere else in bot/ (.ci/platform_names.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    """What the core needs to know about one platform."""

    name: str  # as its users call it ("Slack"); "the" where it has no name of its own
    tenant: str  # what it calls a tenant: "workspace" or "server"
    local: bool  # a terminal whose user holds the database: an operator, under no access rule, waits for its jobs
    mentions: bool  # shows `<@user>` and `<#channel>` as mentions


PLATFORMS: dict[str, Platform] = {
    "slack": Platform(name="Slack", tenant="workspace", local=False, mentions=True),
    "discord": Platform(name="Discord", tenant="server", local=False, mentions=True),
    "console": Platform(name="the", tenant="workspace", local=True, mentions=False),
    "cli": Platform(name="the", tenant="workspace", local=True, mentions=False),
}
_UNKNOWN = Platform(name="the", tenant="workspace", local=False, mentions=False)


def of(platform: str) -> Platform:
    """The table's row for `platform` (one it does not know: not local, no mentions)."""
    return PLATFORMS.get(platform, _UNKNOWN)


def is_local(platform: str) -> bool:
    """The console and the CLI: whoever runs them holds the database."""
    return of(platform).local
