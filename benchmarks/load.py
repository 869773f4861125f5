"""Load: `imagebot run` (a real subprocess) against loopback fakes with a fixed render latency.

Scenarios, each with a floor measured in the same run against the same fakes:
  slack   N concurrent /imagine through Slack's HTTP path (signed slash commands); floor = a plain
          script doing the same SDK call plus files_upload_v2.
  discord N concurrent /imagine interactions through the Discord fake (when the adapter is there);
          floor = the same SDK call plus a channel file upload with discord.py's HTTP client.
  4k      M concurrent 3840x2160 png jobs through the Slack path.
Acks have a floor too (benchmarks/_ack_floor.py): the platform library alone, acking and doing nothing else,
driven by the same burst. Slack requests come from benchmarks/_sender.py, which writes pre-signed requests on
open connections; Discord interactions are written back to back by the fake's gateway and timed from the moment
each frame is on the socket to its callback's arrival. The Discord ack floor's client has a fake Discord of its
own (a fake's gateway sends every interaction to every client), so it stays connected beside the bot.
Each scenario runs --rounds pairs (at least 5), interleaved: the floors (ack, then end-to-end), then the bot's
burst, then the floors again...: each pair's ratios compare moments seconds apart, not minutes (this machine's
speed drifts). Every figure is the median over the pairs; `*_spread` is max - min of the per-pair ratios.
Prints ack p50/p99/max (and p99 over the ack floor), end-to-end / floor ratio, the bot's event-loop
lag p99 (its /metrics) and peak RSS (VmHWM of the bot process), and the RSS budget (2.5 x image bytes
in flight + 150 MB).
Last line: JSON with ack_p99_ms, ratio (+ ratio_spread), ack_over_floor_slack / _discord (+ _spread),
loop_lag_p99_ms, peak_rss_mb, rss_budget_mb and `ok` (every target met).
Targets: ack p99 over its floor <= 1.15 on Slack and <= 1.30 on Discord (medians of the per-pair ratios),
end-to-end ratio <= 1.05, loop lag p99 <= 20 ms, peak RSS <= budget.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._common import free_port, offline_server_process, percentile
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack

ROOT = Path(__file__).resolve().parent.parent


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bot:
    """`imagebot run` as a subprocess."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            **env,
            "IMAGEBOT_HTTP_HOST": "127.0.0.1",
            "IMAGEBOT_HTTP_PORT": str(self.port),
            "IMAGEBOT_LOG_LEVEL": "WARNING",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Bot:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "run"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.env["BENCH_LOG"], "wb"),
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"bot exited: see {self.env['BENCH_LOG']}")
                await asyncio.sleep(0.1)
        raise RuntimeError("bot did not become healthy")

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(60)

    async def metric(self, name: str) -> float:
        # With IMAGEBOT_METRICS_TOKEN set the bot answers /metrics only to a bearer of it.
        token = self.env.get("IMAGEBOT_METRICS_TOKEN", "").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/metrics", headers=headers) as response,
        ):
            response.raise_for_status()  # a refusal is not a zero
            text = await response.text()
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match[1]) if match else 0.0


async def slack_burst(
    fake: FakeSlack, bot: Bot, n: int, flags: str, tag: str
) -> tuple[list[float], list[float]]:
    """n signed slash commands at once, from a sender process; (ack seconds, end-to-end seconds) per job."""
    users = [f"U{tag}{i}" for i in range(n)]
    # One prompt for all (the offline server renders it once); the user id tells jobs apart.
    payloads = [
        fake.slash_command_payload(text=f"load test {flags}", channel_id=f"C{i % 8}", user_id=user)
        for i, user in enumerate(users)
    ]
    report = await send_slash_commands(fake, f"{bot.url}/slack/events", payloads)
    sent = dict(zip(users, report["sent"], strict=True))
    done: dict[str, float] = {}
    deadline = time.monotonic() + 600
    while len(done) < n and time.monotonic() < deadline:
        for call in fake.calls_to("files.completeUploadExternal"):
            match = re.match(r"<@(U\w+)>", call.args.get("initial_comment", ""))
            if match and match[1] in sent and match[1] not in done:
                done[match[1]] = call.at
        await asyncio.sleep(0.05)
    if len(done) < n:
        raise RuntimeError(f"only {len(done)} of {n} uploads arrived")
    return report["acks"], [done[k] - sent[k] for k in done]


async def _module_process(name: str) -> asyncio.subprocess.Process:
    """benchmarks.`name` in a process of its own, run as a module from the root (so the bot and tests/fakes
    import as packages), its stdin and stdout piped to us."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"benchmarks.{name}",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _run_module(name: str, job: dict[str, Any]) -> Any:
    """benchmarks.`name` given `job` as JSON on its stdin; what it prints, read as JSON."""
    proc = await _module_process(name)
    out, _ = await proc.communicate(json.dumps(job).encode())
    return json.loads(out)


async def send_slash_commands(fake: FakeSlack, url: str, payloads: list[dict[str, str]]) -> dict[str, Any]:
    """Signed slash commands, all at once, from the sender process: {"sent": [...], "acks": [...]}."""
    job = {
        "url": url,
        "secret": fake.signing_secret,
        "payloads": payloads,
        "warm": fake.slash_command_payload(text="--size 1x1", channel_id="C0", user_id="Uwarm"),
    }
    return dict(await _run_module("_sender", job))


@contextlib.asynccontextmanager
async def ack_floor(spec: dict[str, Any]) -> AsyncIterator[None]:
    """The platform library alone, acking and nothing else, in its own process (benchmarks/_ack_floor.py)."""
    proc = await _module_process("_ack_floor")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(spec).encode() + b"\n")
    await asyncio.wait_for(proc.stdout.readline(), 60)  # "ready"
    try:
        yield
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)


@contextlib.asynccontextmanager
async def slack_ack_floor(fake: FakeSlack) -> AsyncIterator[Callable[[int], Awaitable[list[float]]]]:
    """The Slack ack floor's process, kept up beside the bot; yields `burst(n)` -> ack seconds per request."""
    port = free_port()
    spec = {
        "mode": "slack",
        "port": port,
        "secret": fake.signing_secret,
        "token": fake.bot_token,
        "slack_url": fake.api_url,
    }
    url = f"http://127.0.0.1:{port}/slack/events"

    async def burst(n: int) -> list[float]:
        payloads = [
            fake.slash_command_payload(text="load test", channel_id=f"C{i % 8}", user_id=f"Ufloor{i}")
            for i in range(n)
        ]
        return list((await send_slash_commands(fake, url, payloads))["acks"])

    async with ack_floor(spec):
        yield burst


@contextlib.asynccontextmanager
async def discord_ack_floor(n: int) -> AsyncIterator[Callable[[], Awaitable[list[float]]]]:
    """The Discord ack floor's client on a fake Discord of its own, kept connected beside the bot; yields
    `burst()` -> ack seconds per interaction."""
    fake = FakeDiscord(premium_tier=3)
    await fake.start()
    try:
        async with ack_floor({"mode": "discord", "api_url": fake.api_url, "token": fake.token}):

            async def burst() -> list[float]:
                return (await discord_burst(fake, n, wait_for_images=False))[0]

            yield burst
    finally:
        await fake.stop()


async def slack_floor(fake: FakeSlack, base_url: str, n: int, size: str, fmt: str) -> list[float]:
    """The same work done by a plain script in its own process: one SDK call, then files_upload_v2."""
    job = {
        "base_url": base_url,
        "slack_url": fake.api_url,
        "token": fake.bot_token,
        "n": n,
        "size": size,
        "format": fmt,
    }
    return await _floor(job)


async def _floor(job: dict[str, Any]) -> list[float]:
    return list(await _run_module("_floor", job))


async def discord_burst(
    fake: FakeDiscord, n: int, *, wait_for_images: bool = True
) -> tuple[list[float], list[float]]:
    """n /imagine interactions at once over the gateway; (ack seconds, end-to-end seconds) per job."""
    options = [
        {"name": "prompt", "type": 3, "value": "load test"},
        {"name": "size", "type": 3, "value": "1024x1024"},
        {"name": "quality", "type": 3, "value": "low"},
    ]
    # Built first, then written back to back: each is timed from the moment its frame is on the socket.
    burst = await fake.send_interactions(
        [{"name": "imagine", "options": options, "user_id": 10_000 + i} for i in range(n)]
    )
    sent = {ix["token"]: at for ix, at in burst}
    acks: dict[str, float] = {}
    done: dict[str, float] = {}
    deadline = time.monotonic() + 600
    while (len(done) if wait_for_images else len(acks)) < n and time.monotonic() < deadline:
        for call in fake.calls:
            parts = call.path.split("/")
            if call.method == "POST" and call.path.endswith("/callback") and parts[3] in sent:
                acks.setdefault(parts[3], call.at)
            elif call.method == "PATCH" and call.files and len(parts) > 3 and parts[3] in sent:
                content = str((call.json or {}).get("content", "")) if isinstance(call.json, dict) else ""
                if "request id" in content:
                    done.setdefault(parts[3], call.at)
        await asyncio.sleep(0.05)
    if len(done) < n and wait_for_images:
        raise RuntimeError(f"only {len(done)} of {n} Discord images arrived")
    return [acks[t] - sent[t] for t in acks], [done[t] - sent[t] for t in done]


async def discord_floor(fake: FakeDiscord, base_url: str, n: int) -> list[float]:
    """A plain script in its own process: the same streamed SDK call (2 previews), then a multipart post."""
    job = {
        "base_url": base_url,
        "slack_url": "",
        "token": "",
        "n": n,
        "size": "1024x1024",
        "format": "jpeg",
        "discord_token": fake.token,
        "discord_channel_url": f"{fake.api_url}/channels/{fake.channel_id}/messages",
    }
    return await _floor(job)


async def until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def summarise(
    acks: list[float], e2e: list[float], floor: list[float], ack_floor: list[float]
) -> dict[str, float]:
    """One round of one scenario."""
    return {
        "jobs": len(e2e),
        "ack_p50_ms": round(percentile(acks, 50) * 1000, 1),
        "ack_p99_ms": round(percentile(acks, 99) * 1000, 1),
        "ack_max_ms": round(max(acks) * 1000, 1),
        "ack_floor_p99_ms": round(percentile(ack_floor, 99) * 1000, 1),
        # The bot's ack p99 over the library's alone, in the same round (the floor moves +-30% between runs).
        "ack_over_floor": round(percentile(acks, 99) / percentile(ack_floor, 99), 3),
        "e2e_mean_s": round(sum(e2e) / len(e2e), 3),
        "floor_mean_s": round(sum(floor) / len(floor), 3),
        "ratio": round((sum(e2e) / len(e2e)) / (sum(floor) / len(floor)), 4),
    }


async def measure(
    name: str,
    burst: Callable[[int], Awaitable[tuple[list[float], list[float]]]],
    floor: Callable[[], Awaitable[list[float]]],
    ack_floor: Callable[[], Awaitable[list[float]]],
    rounds: int,
) -> dict[str, Any]:
    """One scenario, as `rounds` interleaved pairs: the floors (ack, end-to-end), then the bot's burst."""
    pairs = []
    for r in range(rounds):
        acks_floor = await ack_floor()
        e2e_floor = await floor()
        acks, e2e = await burst(r)
        pairs.append(summarise(acks, e2e, e2e_floor, acks_floor))
        print(
            f"  {name} pair {r + 1}: ratio {pairs[-1]['ratio']}, ack/floor {pairs[-1]['ack_over_floor']}",
            flush=True,
        )
    return combine(name, pairs)


def combine(name: str, rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Each figure's median over the pairs, with the spread (max - min) of the per-pair ratios."""

    def median(key: str) -> float:
        ordered = sorted(r[key] for r in rounds)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else round((ordered[middle - 1] + ordered[middle]) / 2, 4)

    def spread(key: str) -> float:
        return round(max(r[key] for r in rounds) - min(r[key] for r in rounds), 4)

    result: dict[str, Any] = {key: median(key) for key in rounds[0]}
    result["pairs"] = len(rounds)
    result["ack_p99_over_floor"] = round(result["ack_p99_ms"] / result["ack_floor_p99_ms"], 3)
    result["ratio_spread"] = spread("ratio")
    result["ack_over_floor_spread"] = spread("ack_over_floor")
    result["ratio_range"] = [min(r["ratio"] for r in rounds), max(r["ratio"] for r in rounds)]
    result["ack_p99_range_ms"] = [min(r["ack_p99_ms"] for r in rounds), max(r["ack_p99_ms"] for r in rounds)]
    print(f"{name}: {result}", flush=True)
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, offline_server_process(args.latency) as base_url:
        fake = FakeSlack()
        await fake.start()
        discord = FakeDiscord(premium_tier=3)
        await discord.start()
        env = {
            "DISCORD_TOKEN": discord.token,
            "DISCORD_API_URL": discord.api_url,
            "SLACK_BOT_TOKEN": fake.bot_token,
            "SLACK_SIGNING_SECRET": fake.signing_secret,
            "SLACK_API_URL": fake.api_url,
            "OPENAI_API_KEY": "bench-key",
            "OPENAI_BASE_URL": base_url,
            "IMAGEBOT_DB": f"{tmp}/bench.sqlite3",
            "IMAGEBOT_MAX_IN_FLIGHT": str(max(args.jobs, args.jobs_4k, args.jobs_discord)),
            "IMAGEBOT_API_TIMEOUT": "600",
            "BENCH_LOG": os.environ.get("BENCH_LOG", f"{tmp}/bot.log"),
        }
        try:
            async with (
                slack_ack_floor(fake) as slack_acks,
                discord_ack_floor(args.jobs_discord or 1) as discord_acks,
                Bot(env) as bot,
            ):
                # Warm the server's render cache and every connection pool once.
                await slack_burst(fake, bot, 1, "--size 1024x1024 --quality low", "warm")
                results["slack"] = await measure(
                    "slack",
                    lambda r: slack_burst(fake, bot, args.jobs, "--size 1024x1024 --quality low", f"s{r}x"),
                    lambda: slack_floor(fake, base_url, args.jobs, "1024x1024", "jpeg"),
                    lambda: slack_acks(args.jobs),
                    args.rounds,
                )
                if args.jobs_discord:
                    await until(lambda: discord.identified_sessions == 1, "the bot's gateway session")
                    await discord.wait_for("PUT", rf"/applications/{discord.application_id}/commands")
                    await discord_burst(discord, 1)  # warm-up
                    results["discord"] = await measure(
                        "discord",
                        lambda r: discord_burst(discord, args.jobs_discord),
                        lambda: discord_floor(discord, base_url, args.jobs_discord),
                        discord_acks,
                        args.rounds,
                    )
                png_bytes = 0
                if args.jobs_4k:
                    results["4k"] = await measure(
                        "4k",
                        lambda r: slack_burst(
                            fake, bot, args.jobs_4k, "--size 3840x2160 --format png --quality low", f"k{r}x"
                        ),
                        lambda: slack_floor(fake, base_url, args.jobs_4k, "3840x2160", "png"),
                        lambda: slack_acks(args.jobs_4k),
                        args.rounds,
                    )
                    png_bytes = max(len(u.bytes) for u in fake.uploaded if u.name.endswith(".png"))
                jpeg_bytes = max(len(u.bytes) for u in fake.uploaded if u.name.endswith(".jpg"))
                results["loop_lag_p99_ms"] = round(
                    await bot.metric("imagebot_event_loop_lag_p99_seconds") * 1000, 2
                )
                samples = await bot.metric("imagebot_event_loop_lag_seconds_count")
                late = samples - await bot.metric('imagebot_event_loop_lag_seconds_bucket{le="0.02"}')
                results["loop_lag_over_20ms_share"] = round(late / samples, 4) if samples else 0.0
                results["peak_rss_mb"] = round(vm_hwm_mb(bot.proc.pid), 1)  # type: ignore[union-attr]
                in_flight = max(max(args.jobs, args.jobs_discord) * jpeg_bytes, args.jobs_4k * png_bytes)
                results["image_bytes_in_flight_mb"] = round(in_flight / 1e6, 1)
                results["rss_budget_mb"] = round(2.5 * in_flight / 1e6 + 150, 1)
        finally:
            await fake.stop()
            await discord.stop()
    return results


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """The last line: the figures the targets are about, each a median of per-pair ratios, with spreads."""
    scenarios = [results[k] for k in ("slack", "discord", "4k") if k in results]
    slack, discord = results.get("slack"), results.get("discord")
    out: dict[str, Any] = {
        "ack_p50_ms": max(s["ack_p50_ms"] for s in scenarios),
        "ack_p99_ms": max(s["ack_p99_ms"] for s in scenarios),
        "ack_max_ms": max(s["ack_max_ms"] for s in scenarios),
        "ratio": max(s["ratio"] for s in scenarios),
        "ratio_spread": max(s["ratio_spread"] for s in scenarios),
        "ack_p99_over_floor": max(s["ack_p99_over_floor"] for s in scenarios),
        # Targets: <= 1.15 on Slack, <= 1.30 on Discord; medians of the per-pair ratios.
        "ack_over_floor_slack": slack["ack_over_floor"] if slack else None,
        "ack_over_floor_slack_spread": slack["ack_over_floor_spread"] if slack else None,
        "ack_over_floor_discord": discord["ack_over_floor"] if discord else None,
        "ack_over_floor_discord_spread": discord["ack_over_floor_spread"] if discord else None,
        "loop_lag_p99_ms": results["loop_lag_p99_ms"],
        "peak_rss_mb": results["peak_rss_mb"],
        "rss_budget_mb": results["rss_budget_mb"],
        "pairs": min(s["pairs"] for s in scenarios),
    }
    out["ok"] = (
        (slack is None or slack["ack_over_floor"] <= 1.15)
        and (discord is None or discord["ack_over_floor"] <= 1.30)
        and out["ratio"] <= 1.05
        and out["loop_lag_p99_ms"] <= 20
        and out["peak_rss_mb"] <= out["rss_budget_mb"]
    )
    out["detail"] = results
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--jobs-4k", type=int, default=50)
    parser.add_argument("--jobs-discord", type=int, default=200)
    parser.add_argument("--latency", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5, help="floor/bot pairs per scenario (at least 5)")
    parsed = parser.parse_args()
    if parsed.rounds < 5:
        parser.error("--rounds: at least 5 floor/bot pairs (one pair's ratio is noise)")
    print(json.dumps(verdict(asyncio.run(main(parsed)))))
