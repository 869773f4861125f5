"""Install helpers: the Slack app manifest and the Discord invite URL, with exactly what the bot needs."""

from __future__ import annotations

from typing import Any

SLACK_COMMANDS = [
    ("/imagine", "Make an image with gpt-image-2", "<prompt> [--size 2k] [--quality high] [--count 2]"),
    ("/imagine-usage", "This channel's image usage and spend", "[--days N]"),
    ("/imagine-quota", "Your remaining image quota", ""),
    (
        "/imagine-settings",
        "Your own defaults: size, quality, format, count, mode, language",
        "[size=2k quality=high ... | NAME=default | reset]  (alone: a form)",
    ),
    (
        "/imagine-info",
        "A job's card: prompt, settings, cost, request ids",
        "[N from /imagine-history | job id]",
    ),
    ("/imagine-history", "Your last jobs, with links and costs", "[N]"),
    (
        "/imagine-admin",
        "Admin: quotas, access rules, spend",
        "help | quota <@user|#channel|workspace> <limits> | report --all | channel <#channel> on|off ... | "
        "allow|deny <@group|everyone> | block|unblock <@user> | settings | dashboard",
    ),
]
# Commands whose text names users and channels: Slack sends them escaped, as <@U123|bob> and <#C123|general>,
# ids the bot can act on (unescaped it sends a plain "@bob", which names nobody for certain). /imagine is left
# unescaped on purpose: its text is the prompt, verbatim, and "@bob" should reach the image model as typed.
SLACK_ESCAPED_COMMANDS = frozenset({"/imagine-admin"})
SLACK_BOT_SCOPES = [
    "commands",  # slash commands
    "chat:write",  # progress messages, summaries, ephemeral errors
    "files:write",  # upload images into threads (files_upload_v2)
    "files:read",  # download images users attach to edit replies
    "channels:history",  # thread replies in public channels (reply-to-edit)
    "groups:history",  # thread replies in private channels
    "app_mentions:read",  # @imagebot with images attached (fusion)
    "users:read",  # users.info: is the caller a workspace admin?
    "usergroups:read",  # usergroups.users.list: /imagine-admin allow|deny @usergroup
]
SLACK_EVENTS = [
    "app_mention",
    "message.channels",
    "message.groups",
    "app_home_opened",  # the Home tab: the user's quota and last images (admins: settings, spend)
]
# The Home tab on; the Messages tab stays as Slack makes it (shown, read-only): the bot reads no DMs.
SLACK_APP_HOME = {
    "home_tab_enabled": True,
    "messages_tab_enabled": True,
    "messages_tab_read_only_enabled": True,
}


def slack_manifest(
    *, socket_mode: bool = True, request_url: str = "https://YOUR-HOST/slack/events"
) -> dict[str, Any]:
    """A Slack app manifest (paste into api.slack.com/apps -> Create New App -> From a manifest)."""
    commands: list[dict[str, Any]] = []
    for name, description, hint in SLACK_COMMANDS:
        command: dict[str, Any] = {
            "command": name,
            "description": description,
            "should_escape": name in SLACK_ESCAPED_COMMANDS,
        }
        if hint:
            command["usage_hint"] = hint
        if not socket_mode:
            command["url"] = request_url
        commands.append(command)
    events: dict[str, Any] = {"bot_events": SLACK_EVENTS}
    interactivity: dict[str, Any] = {"is_enabled": True}
    if not socket_mode:
        events["request_url"] = request_url
        interactivity["request_url"] = request_url
    return {
        "display_information": {
            "name": "imagebot",
            "description": "Make and edit images with gpt-image-2",
            "background_color": "#2c3e50",
        },
        "features": {
            "bot_user": {"display_name": "imagebot", "always_online": True},
            "app_home": dict(SLACK_APP_HOME),
            "slash_commands": commands,
        },
        "oauth_config": {"scopes": {"bot": SLACK_BOT_SCOPES}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }


# Discord: exactly the permissions the bot uses, as bits of the OAuth2 `permissions` integer.
DISCORD_PERMISSIONS = {
    "View Channel": 1 << 10,  # see the channels it is used in
    "Send Messages": 1 << 11,  # progress, images, replies (token past 15 min, reply-to-edit)
    "Embed Links": 1 << 14,  # link previews in its messages
    "Attach Files": 1 << 15,  # the images, previews and usage charts
    "Read Message History": 1 << 16,  # reply to messages and fetch the image a reply points at
    "Send Messages in Threads": 1 << 38,  # the same inside threads
}
DISCORD_SCOPES = ("bot", "applications.commands")


def discord_invite_url(client_id: str) -> str:
    """The OAuth2 URL that adds the bot to a server with its slash commands and only the permissions it uses."""
    from urllib.parse import quote, urlencode

    permissions = sum(DISCORD_PERMISSIONS.values())
    query = urlencode(
        {"client_id": client_id, "permissions": permissions, "scope": " ".join(DISCORD_SCOPES)},
        quote_via=quote,
    )
    return f"https://discord.com/oauth2/authorize?{query}"
