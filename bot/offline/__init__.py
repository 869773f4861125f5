"""The offline image server (docs/rules.md §8): an OpenAI-compatible Images API for offline use and for tests.

It validates a request by its model's rules from the price table (`rules`), renders a real image with
Pillow at the requested size and format and streams partial images (`drawing`), reports `usage` by the
price model, and has knobs for latency and a queue of faults (`server`). The bot talks to it through the
same OpenAI SDK code path as in production.
"""

from __future__ import annotations

from bot.offline.server import CallRecord, OfflineImageServer, main_forever, parse_faults

__all__ = ["CallRecord", "OfflineImageServer", "main_forever", "parse_faults"]
