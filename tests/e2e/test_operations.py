"""`imagebot run` as a real process: kill -9 and restart, SIGTERM, health, metrics, and no secret in logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.store import schema as store
from tests.e2e.harness import running_bot, slack_env
from tests.fakes.slack import FakeSlack
from tests.pg import free_port
from tests.support.processes import SECRETS, BotProcess


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(bot_token=SECRETS["bot"], signing_secret=SECRETS["signing"])
    await fake.start()
    yield fake
    await fake.stop()


@pytest.mark.parametrize("database", ["fresh", "older schema"])
async def test_kill_9_during_a_render_then_restart(database: str, slack: FakeSlack, tmp_path: Path) -> None:
    # A short lease: the restarted bot recovers the killed one's job once its lease expired (docs/rules.md §5).
    bot = BotProcess(tmp_path, slack, IMAGEBOT_OFFLINE_LATENCY="30", IMAGEBOT_LEASE_SECONDS="2")
    if database == "older schema":
        db = store.sqlite_utils.Database(str(bot.db))
        store.migrate(db, target=1)
        db.execute(
            'INSERT INTO ledger (job_id, status, reserved_micros, actual_micros, "user", channel, workspace, '
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
    bot.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    # Draining: not ready (a load balancer stops sending work), still live, while the job finishes.
    status, body = await bot.until(lambda status, _: status == 503)
    assert body["checks"]["process"] == "shutting down" and body["not_ready"] == ["process"], body
    assert (await bot.get("/livez"))[0] == 200
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


async def test_port_0_listens_on_a_free_port_and_the_log_names_it(slack: FakeSlack, tmp_path: Path) -> None:
    """IMAGEBOT_HTTP_PORT=0 (docs/operations.md): the server takes any free port, and its `http server listening`
    line names that port, not 0 (BotProcess reads it from there; every test of this file runs so)."""
    bot = BotProcess(tmp_path, slack)
    assert bot.env["IMAGEBOT_HTTP_PORT"] == "0"
    await bot.start()
    [line] = [json.loads(line) for line in bot.log_lines() if "http server listening" in line]
    assert line["port"] == bot.port and 0 < line["port"] < 65536, line
    assert (await bot.get("/livez"))[0] == 200
    assert await bot.stop() == 0


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


# --- health: /livez, /readyz (its own database connection), /healthz ---------------------------------------


async def test_readyz_answers_at_once_while_the_database_queue_is_busy(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """The ledger runs every query on one thread: a health check queued behind them would say nothing about
    the database and would time out under load. /readyz asks the database on its own connection."""
    async with running_bot(tmp_path, slack_env(slack)) as bot:
        busy, release = threading.Event(), threading.Event()

        def hold(db: object) -> None:
            busy.set()
            release.wait(10)

        holding = asyncio.create_task(bot.core.ledger.run_db(hold))
        try:
            assert await asyncio.to_thread(busy.wait, 10)  # the ledger's one thread is taken
            async with aiohttp.ClientSession() as session:
                for path in ("/livez", "/readyz", "/healthz"):
                    began = time.monotonic()
                    async with session.get(f"{bot.url}{path}") as response:
                        body = await response.json()
                        took = time.monotonic() - began
                    assert response.status == 200, (path, response.status, body)
                    assert took < 1.0, (path, took)
                    if path != "/livez":
                        assert body["checks"] == {"database": "ok", "slack": "ok"}, body
        finally:
            release.set()
            await holding


async def test_slack_auth_test_failing_at_start_is_retried_not_ready_until_then(
    slack: FakeSlack, tmp_path: Path
) -> None:
    """auth.test fails three times at start (Slack 503): the bot is live but not ready and tries again; once it
    succeeds the bot is ready and answers a mention (it ignored every mention for the process's life)."""
    slack.fail_next["auth.test"] = {"status": 503, "error": "service_unavailable", "times": 3}
    bot = BotProcess(tmp_path, slack)
    await bot.start(ready=False)
    status, body = await bot.until(lambda status, _: status != 0)
    assert status == 503 and body["checks"]["slack"] != "ok" and "slack" in body["not_ready"], body
    assert (await bot.get("/livez"))[0] == 200
    await bot.until(lambda status, _: status == 200, timeout=30)
    assert len(slack.calls_to("auth.test")) >= 4
    await slack.send_event(
        f"{bot.url}/slack/events", slack.message_event(text="a fox --quality low", mention=True)
    )
    await bot.wait_rows(lambda rows: len(rows) == 1 and rows[0]["status"] == "delivered")
    assert await bot.stop() == 0
    assert "Traceback" not in bot.log.read_text()


# --- Socket Mode: a refused token is fatal; no route to Slack is retried; SIGTERM always stops it ------------


def socket_mode(slack: FakeSlack, **env: str) -> dict[str, str]:
    return {"SLACK_APP_TOKEN": slack.app_token, "SLACK_SIGNING_SECRET": "", **env}


async def test_socket_mode_with_a_refused_app_token_exits_2_with_one_line(
    slack: FakeSlack, tmp_path: Path
) -> None:
    bot = BotProcess(tmp_path, slack, **socket_mode(slack, SLACK_APP_TOKEN="xapp-refused-token"))
    await bot.start(ready=False)
    code = await bot.exited(20)
    if code is None:  # still running: what it says meanwhile, for the failure message
        health = await bot.get("/healthz")
        bot.proc.kill()  # type: ignore[union-attr]
        raise AssertionError(
            f"still running after 20 s; /healthz {health}; log: {bot.log.read_text()[-600:]}"
        )
    lines = bot.log_lines()
    assert code == 2, lines
    assert "Traceback" not in bot.log.read_text()
    assert "SLACK_APP_TOKEN" in lines[-1] and "invalid_auth" in lines[-1], lines[-1]
    assert "xapp-refused-token" not in bot.log.read_text()


async def test_socket_mode_is_ready_only_once_the_socket_is_connected(
    slack: FakeSlack, tmp_path: Path
) -> None:
    bot = BotProcess(tmp_path, slack, **socket_mode(slack))
    await bot.start()
    assert [c.status for c in slack.calls_to("socket_connect")] == [101]
    ack = await slack.socket_send("slash_commands", slack.slash_command_payload(text="a fox --quality low"))
    assert ack["envelope_id"]
    await bot.wait_rows(lambda rows: len(rows) == 1 and rows[0]["status"] == "delivered")
    assert await bot.stop() == 0


async def test_socket_mode_with_no_route_to_slack_is_not_ready_and_stops_on_sigterm(
    slack: FakeSlack, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/api/"  # nothing listens there
    bot = BotProcess(tmp_path, slack, **socket_mode(slack, SLACK_API_URL=closed, IMAGEBOT_SHUTDOWN_GRACE="5"))
    await bot.start(ready=False)
    status, body = await bot.until(lambda status, _: status != 0)
    assert status == 503 and body["checks"]["slack"] != "ok", body
    assert (await bot.get("/livez"))[0] == 200
    await bot.until(lambda *_: bot.log.read_text().count("slack start-up: retrying") >= 2, "/livez")
    status, body = await bot.get("/readyz")
    assert (
        status == 503 and "auth.test" in body["checks"]["slack"] and "retrying" in body["checks"]["slack"]
    ), body
    began = time.monotonic()
    assert await bot.stop(signal.SIGTERM, timeout=15) == 0
    assert time.monotonic() - began < 7  # within the grace (5 s)
    assert "Traceback" not in bot.log.read_text()


# --- Discord and the database at start: configuration errors are one line; outages are retried --------------


async def test_a_refused_discord_token_exits_2_with_one_line(slack: FakeSlack, tmp_path: Path) -> None:
    from tests.fakes.discord import FakeDiscord

    fake = FakeDiscord()
    await fake.start()
    try:
        bot = BotProcess(
            tmp_path,
            slack,
            SLACK_BOT_TOKEN="",
            SLACK_SIGNING_SECRET="",
            DISCORD_TOKEN="not-the-token",
            DISCORD_API_URL=fake.api_url,
        )
        await bot.start(ready=False)
        code = await bot.exited(30)
        if code is None:
            bot.proc.kill()  # type: ignore[union-attr]
        lines = bot.log_lines()
        assert code == 2, lines[-5:]
        assert "Traceback" not in bot.log.read_text(), lines[-5:]
        assert "DISCORD_TOKEN" in lines[-1] and "not-the-token" not in bot.log.read_text(), lines[-1]
    finally:
        await fake.stop()


async def test_discord_with_no_dns_is_retried_not_ready_and_stops_on_sigterm(
    slack: FakeSlack, tmp_path: Path
) -> None:
    bot = BotProcess(
        tmp_path,
        slack,
        SLACK_BOT_TOKEN="",
        SLACK_SIGNING_SECRET="",
        DISCORD_TOKEN="some-token",
        DISCORD_API_URL="http://imagebot-test-no-such-host.invalid/api/v10",
    )
    await bot.start(ready=False)
    # Once the database is open (a moment after the first answer), only Discord is not ready.
    status, body = await bot.until(lambda status, body: status != 0 and body["checks"]["database"] == "ok")
    assert status == 503 and body["checks"]["discord"] != "ok" and body["not_ready"] == ["discord"], body
    await bot.until(lambda *_: "retrying" in bot.log.read_text(), "/livez")
    assert await bot.stop(signal.SIGTERM, timeout=15) == 0
    text = bot.log.read_text()
    assert "Traceback" not in text and '"exc"' not in text, text[-800:]


async def test_an_unreachable_postgresql_at_start_is_retried_not_ready_and_stops_on_sigterm(
    slack: FakeSlack, tmp_path: Path
) -> None:
    url = f"postgresql://imagebot:pw-SECRET-4242@127.0.0.1:{free_port()}/imagebot"  # nothing listens there
    bot = BotProcess(tmp_path, slack, IMAGEBOT_DB=url)
    await bot.start(ready=False)
    status, body = await bot.until(lambda status, _: status != 0)
    assert status == 503 and body["checks"]["database"] != "ok" and "database" in body["not_ready"], body
    assert (await bot.get("/livez"))[0] == 200
    await bot.until(lambda *_: bot.log.read_text().count("retrying") >= 2, "/livez")
    assert await bot.stop(signal.SIGTERM, timeout=15) == 0
    text = bot.log.read_text()
    assert "Traceback" not in text and '"exc"' not in text, text[-800:]
    assert "pw-SECRET-4242" not in text


def test_a_one_shot_command_with_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "IMAGEBOT_"))
    }
    env["IMAGEBOT_DB"] = f"postgresql://imagebot:pw-SECRET-4242@127.0.0.1:{free_port()}/imagebot"
    run = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "report"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "IMAGEBOT_DB" in run.stderr, run.stderr
    assert "pw-SECRET-4242" not in run.stderr


# --- deploy/compose.yaml and the Dockerfile -------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_compose_keeps_metrics_private_requires_a_password_and_waits_for_ready_replicas() -> None:
    import yaml

    text = (ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8")
    compose = yaml.safe_load(text)
    services = compose["services"]
    # Published ports (/metrics carries spend) listen on loopback only.
    published = {name: service.get("ports", []) for name, service in services.items()}
    assert any(published.values())
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), (name, port)
    # No default database password: compose refuses to start without one.
    assert "POSTGRES_PASSWORD:-" not in text and "PG_PASSWORD:-" not in text
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    replicas = [name for name, service in services.items() if service.get("image") == "imagebot"]
    assert len(replicas) >= 2
    for name in replicas:
        service = services[name]
        assert "${POSTGRES_PASSWORD:?" in service["environment"]["IMAGEBOT_DB"], name
        assert "/readyz" in " ".join(service["healthcheck"]["test"]), name
    # The load balancer starts once the replicas are ready, and proxies no /metrics.
    depends = services["lb"]["depends_on"]
    assert {name: depends[name]["condition"] for name in replicas} == dict.fromkeys(
        replicas, "service_healthy"
    )
    nginx = compose["configs"]["lb_conf"]["content"]
    assert "/metrics" not in nginx and "/readyz" in nginx
    # Open-source nginx has no active health checks: a replica that answers 503 (starting, its database lost)
    # or cannot be reached is skipped for a while, and Slack's POST is sent to the other replica instead.
    servers = re.findall(r"^\s*server (imagebot-\d+):3000 (.*);$", nginx, re.MULTILINE)
    assert sorted(host for host, _ in servers) == sorted(replicas), servers
    for _, options in servers:
        assert "max_fails=1" in options and "fail_timeout=" in options, options
    events = nginx[nginx.index("location = /slack/events") :]
    events = events[: events.index("location", 1)]
    [retry] = re.findall(r"proxy_next_upstream (.*);", events)
    assert {"error", "timeout", "http_503", "non_idempotent"} <= set(retry.split()), retry
    # The replicas serve Slack only (HTTP mode), and the file says so.
    assert text.startswith("# Slack only:"), text[:80]


def test_the_dockerfile_health_check_asks_readyz() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    [check] = [line for line in dockerfile.splitlines() if line.startswith("HEALTHCHECK")]
    assert "/readyz" in check and "/healthz" not in check


class Gate:
    """A TCP forwarder on loopback to `port` that, while shut, hangs up on every connection (and cuts the
    ones it carries): PostgreSQL as a replica sees it during an outage."""

    def __init__(self, port: int) -> None:
        self.target, self.is_open, self.port = port, False, 0
        self.carried: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def shut(self) -> None:
        self.is_open = False
        for writer in self.carried:
            writer.close()
        self.carried.clear()

    async def stop(self) -> None:
        self.shut()
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.carried += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_postgresql_down_at_start_then_up_becomes_ready_and_a_later_outage_shows(
    slack: FakeSlack, tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL refuses at start: the bot retries, not ready; once it answers, the bot is ready and renders.
    When it goes away again /readyz says so (its own connection), and SIGTERM still ends the process cleanly."""
    port = int(pg_url.rsplit(":", 1)[1].split("/")[0])
    gate = Gate(port)
    await gate.start()
    try:
        bot = BotProcess(
            tmp_path,
            slack,
            IMAGEBOT_DB=pg_url.replace(f":{port}/", f":{gate.port}/"),
            IMAGEBOT_LEASE_SECONDS="3",  # the lease loop (which reopens a lost connection) runs every second
        )
        await bot.start(ready=False)
        status, body = await bot.until(lambda status, _: status != 0)
        # Slack's check says "starting" (its adapter needs the core, which needs the database).
        assert status == 503 and body["not_ready"][0] == "database", body
        async with aiohttp.ClientSession() as session:  # Slack is told to try again later, not "no such page"
            async with session.post(f"{bot.url}/slack/events", data=b"{}") as response:
                assert response.status == 503
        await bot.until(lambda *_: "database not reachable; retrying" in bot.log.read_text(), "/livez")
        gate.is_open = True
        await bot.until(lambda status, _: status == 200, timeout=30)
        await slack.send_slash_command(f"{bot.url}/slack/events", text="a fox --quality low")
        await slack.wait_for("files.completeUploadExternal", timeout=20)
        gate.shut()
        status, body = await bot.until(lambda status, _: status == 503)
        assert body["not_ready"] == ["database"], body
        assert (await bot.get("/livez"))[0] == 200
        # A command during the outage fails (and says so); the ledger's connection is now known to be broken.
        await slack.send_slash_command(f"{bot.url}/slack/events", text="in the outage --quality low")
        await bot.until(lambda *_: "lease renewal or recovery failed" in bot.log.read_text(), "/livez")
        # Known broken: Slack's events get a 503 (a load balancer sends them to another replica), not an ack.
        status, _, _ = await slack.send_slash_command(
            f"{bot.url}/slack/events", text="elsewhere --quality low"
        )
        assert status == 503
        gate.is_open = True
        await bot.until(lambda status, _: status == 200, timeout=30)  # the probe and the ledger reconnected
        status, _, _ = await slack.send_slash_command(
            f"{bot.url}/slack/events", text="after it --quality low"
        )
        assert status == 200
        await slack.wait_for("files.completeUploadExternal", 2, timeout=20)
        gate.shut()  # and stopping while the database is away is still clean
        await bot.until(lambda status, _: status == 503)
        assert await bot.stop() == 0, bot.log.read_text()[-1500:]
        # Start-up, the lease loop and shutdown say an outage in one line each. (A job caught by the outage
        # logs its own traceback: that is the job's story, not this test's.)
        raw = [line for line in bot.log_lines() if not line.startswith("{")]
        assert raw == [], raw  # every line is JSON: no raw traceback
        lines = [json.loads(line) for line in bot.log_lines()]
        ops = [line for line in lines if line["logger"] in ("imagebot.app", "imagebot.service")]
        assert [line for line in ops if "exc" in line] == []
        assert any(line["msg"] == "database connection lost; opened again" for line in ops)
    finally:
        await gate.stop()


async def test_a_postgresql_database_that_does_not_exist_exits_2_with_one_line(
    slack: FakeSlack, tmp_path: Path, pg_url: str
) -> None:
    bot = BotProcess(tmp_path, slack, IMAGEBOT_DB=pg_url.rsplit("/", 1)[0] + "/no_such_database")
    await bot.start(ready=False)
    code = await bot.exited(30)
    lines = bot.log_lines()
    assert code == 2, lines[-5:]
    assert "Traceback" not in bot.log.read_text()
    assert "IMAGEBOT_DB" in lines[-1] and "no_such_database" in lines[-1], lines[-1]


@pytest.mark.parametrize("where", ["port taken", "no such host"])
async def test_an_address_that_cannot_be_listened_on_exits_2_with_one_line(
    where: str, slack: FakeSlack, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bot = BotProcess(tmp_path, slack)
        if where == "port taken":
            bot.env["IMAGEBOT_HTTP_PORT"] = str(taken.getsockname()[1])
        else:
            bot.env["IMAGEBOT_HTTP_HOST"] = "imagebot-test-no-such-host.invalid"
        await bot.start(ready=False)
        code = await bot.exited(30)
    lines = bot.log_lines()
    assert code == 2, lines[-5:]
    assert "Traceback" not in bot.log.read_text()
    assert "IMAGEBOT_HTTP_HOST:IMAGEBOT_HTTP_PORT" in lines[-1], lines[-1]
