"""Reading Slack's payloads: who sent a command, a click or a form, in which workspace, channel and thread."""

from __future__ import annotations

from typing import Any

from bot.model.request import Requester


def team(body: dict[str, Any]) -> str:
    return str((body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id") or "")


def commander(payload: dict[str, Any]) -> Requester:
    """Who ran a slash command, in which workspace and channel."""
    return Requester(
        "slack",
        payload.get("team_id") or payload.get("team") or "",
        payload.get("channel_id") or payload.get("channel") or "",
        payload.get("user_id") or payload.get("user") or "",
    )


def clicker(body: dict[str, Any]) -> Requester:
    """Who clicked a button, in which workspace and channel."""
    channel = str(
        (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
    )
    return Requester("slack", team(body), channel, str(body["user"]["id"]))


def click_thread(body: dict[str, Any]) -> str | None:
    """The thread of the message a button is on (a job's own message: the root of its thread)."""
    container = body.get("container") or {}
    message = body.get("message") or {}
    return (
        message.get("thread_ts")
        or container.get("thread_ts")
        or message.get("ts")
        or container.get("message_ts")
        or None
    )
