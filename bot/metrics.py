"""Prometheus metrics: jobs by status, spend, render time, jobs in flight and queued, API attempts."""

from __future__ import annotations

import asyncio
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

JOBS = Counter(
    "imagebot_images_total", "Image calls by final status", ["platform", "status"], registry=REGISTRY
)
SPEND = Counter(
    "imagebot_spend_usd_total", "Money settled in the ledger, USD", ["platform"], registry=REGISTRY
)
RENDER_SECONDS = Histogram(
    "imagebot_render_seconds",
    "Seconds per successful image call",
    buckets=(1, 5, 15, 30, 60, 90, 120, 180, 240, 300, 420, 600),
    registry=REGISTRY,
)
FENCED = Counter(
    "imagebot_lease_lapsed_total",
    "Times this process found its lease lapsed and stopped its jobs (fencing)",
    registry=REGISTRY,
)
OVERAGE = Counter(
    "imagebot_settlement_overage_micros_total",
    "Micro-dollars charged above a row's reservation (the estimate was not an upper bound)",
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "imagebot_deliveries_total",
    "Image deliveries by outcome (delivered, retried, undelivered, redelivered)",
    ["outcome"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("imagebot_calls_in_flight", "API calls in flight", registry=REGISTRY)
QUEUED = Gauge("imagebot_calls_queued", "API calls waiting for a slot", registry=REGISTRY)
ACTIONS = Counter(
    "imagebot_actions_total",
    "Result buttons pressed, by kind (reroll, vary, upscale, edit, delete)",
    ["platform", "kind"],
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "imagebot_api_attempts_total", "HTTP attempts to the image API by outcome", ["outcome"], registry=REGISTRY
)
OUT_OF_CREDIT = Counter(
    "imagebot_api_out_of_credit", "Images failed because the API account is out of credit", registry=REGISTRY
)


def exposition() -> bytes:
    """The text format Prometheus scrapes."""
    return generate_latest(REGISTRY)


class LoopLagProbe:
    """Measures how late a short sleep wakes up: how long the event loop was blocked.

    Feeds a histogram, and keeps recent samples so /metrics can show an exact recent p99.
    """

    def __init__(self, interval: float = 0.01, keep: int = 20_000) -> None:
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=keep)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - start - self.interval)
            self.samples.append(lag)
            LOOP_LAG.observe(lag)

    def p99(self) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[int(0.99 * (len(ordered) - 1))]


LOOP_LAG = Histogram(
    "imagebot_event_loop_lag_seconds",
    "How late the event loop ran a 10 ms timer",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
LOOP_LAG_P99 = Gauge(
    "imagebot_event_loop_lag_p99_seconds", "p99 of recent event-loop lag samples", registry=REGISTRY
)
