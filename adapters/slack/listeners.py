"""What the adapter's groups of bolt listeners share (commands.py, actions.py, events.py): the adapter they
belong to, and `register`, which adds them to the bolt app. Each listener is thin: the middleware has acked
and told it `who` asks, `asker` and `run`; it reads its payload and hands the work to `run`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slack_bolt.app.async_app import AsyncApp

if TYPE_CHECKING:
    from .parts import SlackSide


class Listeners:
    def __init__(self, slack: SlackSide) -> None:
        self.slack = slack
        self.core = slack.core

    def register(self, app: AsyncApp) -> None:
        raise NotImplementedError
