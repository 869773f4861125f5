"""Slack load only: 200 concurrent /imagine through the real HTTP path (see load.py for the method).

Last line: JSON with ack_p50_ms, ack_p99_ms, ack_max_ms, ratio. Targets: ack p99 <= 100 ms, ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from benchmarks.load import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--latency", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.jobs_4k = 0
    args.jobs_discord = 0
    slack = asyncio.run(main(args))["slack"]
    print(
        json.dumps(
            {
                k: slack[k]
                for k in (
                    "ack_p50_ms",
                    "ack_p99_ms",
                    "ack_max_ms",
                    "ack_floor_p99_ms",
                    "ack_p99_over_floor",
                    "ratio",
                    "ratio_range",
                )
            }
        )
    )
