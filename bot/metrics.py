"""Prometheus metrics: jobs by status, spend, render time, jobs in flight and queued, API attempts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

JOBS = Counter("imagebot_images_total", "Image calls by final status", ["platform", "status"], registry=REGISTRY)
SPEND = Counter("imagebot_spend_usd_total", "Money settled in the ledger, USD", ["platform"], registry=REGISTRY)
RENDER_SECONDS = Histogram("imagebot_render_seconds", "Seconds per successful image call",
                           buckets=(1, 5, 15, 30, 60, 90, 120, 180, 240, 300, 420, 600), registry=REGISTRY)
IN_FLIGHT = Gauge("imagebot_calls_in_flight", "API calls in flight", registry=REGISTRY)
QUEUED = Gauge("imagebot_calls_queued", "API calls waiting for a slot", registry=REGISTRY)
ATTEMPTS = Counter("imagebot_api_attempts_total", "HTTP attempts to the image API by outcome", ["outcome"],
                   registry=REGISTRY)


def exposition() -> bytes:
    """The text format Prometheus scrapes."""
    return generate_latest(REGISTRY)
