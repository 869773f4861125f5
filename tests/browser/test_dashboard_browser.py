"""The dashboard in a real browser: Playwright driving Debian's Chromium (`apt-get install chromium`; Playwright's
own browser download is not used). Not in the README's test command (it needs that browser): run it with
`.venv/bin/python -m pytest -m browser -n 0` (.ci/run does, after installing Chromium).

A real `imagebot run` HTTP service on loopback, a ledger with a few weeks of real jobs (rendered by the offline
image server; some moved back in time, as the days would have): an admin signs in through the link that
`/imagine-admin dashboard` gave them, reads the spend chart, sets a user's daily limit in the form, and
`/imagine-quota` (its core call) shows the new limit. Full-page screenshots go to artifacts/."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.console import ConsoleView
from adapters.service import Service
from bot import commands
from bot.app import Core
from bot.model.pricing import format_usd
from bot.model.request import Requester
from tests import dbs
from tests.pg import free_port
from tests.support.core import admin_chat, offline_settings

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
ADMIN = Requester("slack", "T0ACME", "C0DESIGN", "U0ADMIN")
PEOPLE = [
    Requester("slack", "T0ACME", "C0DESIGN", "U0ALICE"),
    Requester("slack", "T0ACME", "C0DESIGN", "U0BOB"),
    Requester("slack", "T0ACME", "C0MARKETING", "U0CAROL"),
]
PROMPTS = [
    "a poster for our launch --size 1024x1536 --quality medium",
    "a lighthouse at dawn, watercolor --size 1024x1024 --quality low --count 2",
    "isometric office floor plan --size 1536x1024 --quality high",
    "a fox mascot, flat vector --size 1024x1024 --quality medium",
]


async def test_dashboard_in_chromium(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    port = free_port()
    settings = offline_settings(
        str(tmp_path / "bot.sqlite3"),
        IMAGEBOT_OFFLINE_LATENCY="0.1",
        IMAGEBOT_API_TIMEOUT="5",
        IMAGEBOT_HTTP_HOST="127.0.0.1",
        IMAGEBOT_HTTP_PORT=str(port),
        IMAGEBOT_USER_MONTHLY_USD="2",
    )
    core = await Core.start(settings)
    service = Service(settings)
    await service.open()
    service.core = core
    try:
        # Three weeks of jobs, each made on its day: the ledger's clock (which stamps rows and picks the quota
        # periods) is set back to it. Its heartbeat is stopped meanwhile (it would renew the lease in the past).
        assert core.heartbeat is not None
        core.heartbeat.cancel()
        real, now = core.ledger.clock, datetime.now(UTC)
        for day in range(20, -1, -1):
            core.ledger.clock = lambda day=day: real() - timedelta(days=day)  # type: ignore[misc]
            for n, who in enumerate(PEOPLE):
                if (day + n) % 3 == 0:
                    for prompt in PROMPTS[: 1 + (day * day + n) % len(PROMPTS)]:
                        view = ConsoleView(
                            tmp_path / "out", out_is_file=False, err=io.StringIO(), stdout=io.StringIO()
                        )
                        await core.submit(core.parse(prompt), who, view)
        core.ledger.clock = real
        rows = dbs.read(settings.db_path, "SELECT * FROM ledger")
        spent = sum(r["actual_micros"] for r in rows)
        assert spent > 0

        reply = await admin_chat(core, ADMIN, "dashboard", platform_admin=True)
        link = re.search(r"http://\S+", reply.text)
        assert reply.private and link, reply.text
        assert link[0].startswith(f"http://localhost:{port}/dashboard/signin/")
        url = link[0].replace("localhost", "127.0.0.1")

        ARTIFACTS.mkdir(exist_ok=True)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                await page.goto(url)
                await page.click("#sign-in")
                await page.wait_for_url("**/dashboard/spend")
                # The chart: one bar per day of the last 30 (today the last), whose figures add up to the ledger's.
                bars = page.locator("#spend-chart g.day")
                assert await bars.count() == 30
                micros = [int(await bars.nth(i).get_attribute("data-micros") or 0) for i in range(30)]
                assert sum(micros) == spent
                assert await page.text_content("#total-spend") == format_usd(spent)
                today = page.locator(f'#spend-chart g.day[data-day="{now.date().isoformat()}"] title')
                assert format_usd(micros[-1]) in (await today.text_content() or "")
                await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

                # A user's daily limit, changed in the form; /imagine-quota shows it.
                await page.click("text=Limits and rules")
                await page.wait_for_url("**/dashboard/limits")
                form = page.locator("#user-limits")
                await form.locator("select[name=scope]").select_option("user")
                await form.locator("input[name=target]").fill("U0BOB")
                await form.locator("input[name=daily_usd]").fill("0.50")
                await form.locator("button").click()
                said = await page.locator("#said").text_content()
                assert said and "Limits for user U0BOB set: daily_usd=$0.5000" in said
                assert (
                    await page.locator('#standings tr[data-id="U0BOB"][data-limit="daily spend"]').count()
                    == 1
                )
                await page.screenshot(path=str(ARTIFACTS / "dashboard-limits.png"), full_page=True)
            finally:
                await browser.close()
        bob = (await commands.my_quota(core, PEOPLE[1])).text
        assert "your daily spend:" in bob and "used of $0.5000" in bob
    finally:
        await service.close()
        await core.close()
