"""`imagebot run` as a real process: kill -9 and restart, SIGTERM, health, metrics, and no secret in logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot import store
from tests.e2e.harness import free_port
from tests.fakes.slack import FakeSlack

SECRETS = {
    "bot": "xoxb-SECRET-bot-token-4242",
    "signing": "SECRET-signing-secret-4242",
    "openai": "sk-SECRET-openai-key-4242",
}


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(bot_token=SECRETS["bot"], signing_secret=SECRETS["signing"])
    await fake.start()
    yield fake
    await fake.stop()


class BotProcess:
    def __init__(self, tmp: Path, slack: FakeSlack, **env: str) -> None:
        self.port = free_port()
        self.db = tmp / "imagebot.sqlite3"
        self.log = tmp / f"bot-{self.port}.log"
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_"))
        }
        self.env.update(
            {
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_SIGNING_SECRET": slack.signing_secret,
                "SLACK_API_URL": slack.api_url,
                "OPENAI_API_KEY": SECRETS["openai"],
                "IMAGEBOT_OFFLINE": "1",
                "IMAGEBOT_DB": str(self.db),
                "IMAGEBOT_HTTP_HOST": "127.0.0.1",
                "IMAGEBOT_HTTP_PORT": str(self.port),
                "IMAGEBOT_PROGRESS_INTERVAL": "0.2",
                "IMAGEBOT_LOG_LEVEL": "INFO",
                **env,
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", "run"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert self.proc.poll() is None, self.log.read_text()
                await asyncio.sleep(0.05)
        raise AssertionError("bot did not become healthy")

    def rows(self) -> list[dict]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY id")]
        finally:
            conn.close()

    async def wait_rows(self, predicate, timeout: float = 20) -> list[dict]:  # type: ignore[no-untyped-def]
        for _ in range(int(timeout / 0.05)):
            rows = self.rows()
            if predicate(rows):
                return rows
            await asyncio.sleep(0.05)
        raise AssertionError(f"ledger never matched: {self.rows()}")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the bot and wait off the loop (the fakes it talks to live on this loop)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.to_thread(self.proc.wait, timeout)


@pytest.mark.parametrize("database", ["fresh", "older schema"])
async def test_kill_9_during_a_render_then_restart(database: str, slack: FakeSlack, tmp_path: Path) -> None:
    # A short lease: the restarted bot recovers the killed one's job once its lease expired (SPEC §5).
    bot = BotProcess(tmp_path, slack, IMAGEBOT_OFFLINE_LATENCY="30", IMAGEBOT_LEASE_SECONDS="2")
    if database == "older schema":
        db = store.sqlite_utils.Database(str(bot.db))
        store.migrate(db, target=1)
        db.execute(
            "INSERT INTO ledger (job_id, status, reserved_micros, actual_micros, user, channel, workspace, "
            "platform, day, month, created_at) VALUES ('old', 'delivered', 5, 5, 'U0', 'C1', 'T0001', "
            "'slack', '2026-11-01', '2026-11', '2026-11-01T00:00:00')"
        )
        db.conn.close()
    await bot.start()
    await slack.send_slash_command(f"{bot.url}/slack/events", text="a slow one --quality low")
    await bot.wait_rows(lambda rows: any(r["status"] == "running" for r in rows))
    thread_ts = slack.messages["C1"][0]["ts"]
    assert await bot.stop(signal.SIGKILL) == -signal.SIGKILL
    bot.env["IMAGEBOT_OFFLINE_LATENCY"] = "0.1"
    await bot.start()
    rows = await bot.wait_rows(lambda rows: any(r["status"] == "interrupted" for r in rows))
    [job] = [r for r in rows if r["job_id"] != "old"]
    assert (
        job["status"] == "interrupted" and job["actual_micros"] == job["reserved_micros"]
    )  # call had started
    told = await slack.wait_for("chat.postMessage", 2)
    assert told[-1].args["thread_ts"] == thread_ts
    assert "interrupted by a restart" in told[-1].args["text"] and "charged" in told[-1].args["text"]
    if database == "older schema":
        assert rows[0]["job_id"] == "old" and rows[0]["actual_micros"] == 5
        conn = sqlite3.connect(bot.db)
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == store.SCHEMA_VERSION
        conn.close()
    assert await bot.stop() == 0


async def test_sigterm_lets_running_jobs_finish_within_the_grace(slack: FakeSlack, tmp_path: Path) -> None:
    bot = BotProcess(tmp_path, slack, IMAGEBOT_OFFLINE_LATENCY="1.5", IMAGEBOT_SHUTDOWN_GRACE="20")
    await bot.start()
    await slack.send_slash_command(f"{bot.url}/slack/events", text="finish me --quality low")
    await bot.wait_rows(lambda rows: any(r["status"] == "running" for r in rows))
    assert await bot.stop(signal.SIGTERM) == 0
    [row] = bot.rows()
    assert row["status"] == "delivered"
    assert len(slack.uploaded) == 1


async def test_sigterm_past_the_grace_interrupts_and_tells_the_user(slack: FakeSlack, tmp_path: Path) -> None:
    bot = BotProcess(tmp_path, slack, IMAGEBOT_OFFLINE_LATENCY="60", IMAGEBOT_SHUTDOWN_GRACE="0.5")
    await bot.start()
    await slack.send_slash_command(f"{bot.url}/slack/events", text="too slow --quality low")
    await bot.wait_rows(lambda rows: any(r["status"] == "running" for r in rows))
    assert await bot.stop(signal.SIGTERM) == 0
    [row] = bot.rows()
    assert row["status"] == "interrupted" and row["actual_micros"] == row["reserved_micros"]
    assert "shutting down" in slack.calls_to("chat.postMessage")[-1].args["text"]


async def test_health_metrics_and_no_secret_in_logs_or_ledger(slack: FakeSlack, tmp_path: Path) -> None:
    bot = BotProcess(
        tmp_path, slack, IMAGEBOT_OFFLINE_LATENCY="0.1", IMAGEBOT_OFFLINE_FAULTS="500,ok,moderation"
    )
    await bot.start()
    events = f"{bot.url}/slack/events"
    await slack.send_slash_command(events, text="first --quality low")  # 500 then success
    await bot.wait_rows(lambda rows: len(rows) == 1 and rows[0]["status"] == "delivered")
    await slack.send_slash_command(events, text="second --quality low")  # moderation
    await bot.wait_rows(lambda rows: len(rows) == 2 and rows[1]["status"] == "failed")
    await slack.send_slash_command(events, text="bad --size 1x1")
    await slack.send_slash_command(events, text="forged", bad_signature=True)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{bot.url}/healthz") as response:
            health = await response.json()
            assert response.status == 200 and health["checks"] == {"database": "ok", "slack": "ok"}
        async with session.get(f"{bot.url}/metrics") as response:
            text = await response.text()
    assert 'imagebot_images_total{platform="slack",status="rendered"} 1.0' in text
    assert 'imagebot_images_total{platform="slack",status="failed"} 1.0' in text
    assert 'imagebot_api_attempts_total{outcome="5xx"} 1.0' in text
    assert "imagebot_render_seconds_bucket" in text and "imagebot_calls_in_flight" in text
    assert await bot.stop() == 0
    logs = bot.log.read_text()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("request_id", "").startswith("req_") for line in lines)
    database = b"".join(p.read_bytes() for p in tmp_path.glob("imagebot.sqlite3*"))
    for secret in SECRETS.values():
        assert secret not in logs
        assert secret.encode() not in database
