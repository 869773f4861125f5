"""`imagebot run`: the core plus every adapter whose tokens are set, an HTTP server, and shutdown."""

from __future__ import annotations

import sys

from bot.config import Settings


async def run(settings: Settings) -> int:
    if not (settings.slack_enabled or settings.discord_enabled):
        print("imagebot: no chat platform configured. Set SLACK_BOT_TOKEN (+ SLACK_APP_TOKEN for Socket Mode, "
              "or SLACK_SIGNING_SECRET for HTTP mode) and/or DISCORD_TOKEN.\n"
              'Try it locally meanwhile: imagebot imagine "a poster for our launch" --out poster.jpg, '
              "or imagebot console.", file=sys.stderr)
        return 0
    raise NotImplementedError
