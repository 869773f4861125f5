"""The web dashboard over real HTTP on loopback (aiohttp's test server around the service's own app), on SQLite
and on a real PostgreSQL: sign-in (a link once, within 15 minutes; the operators' token), CSRF, tenant
isolation, the spend figures against the ledger's own sums, and limits changed with the chat command's rules and
words. Jobs are real ones, rendered by the offline image server and delivered as console files (two console
tenants, A and B, stand in for two workspaces)."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.console import ConsoleView
from adapters.service import Service
from bot import commands, report
from bot.app import Core
from bot.errors import UserError
from bot.model.pricing import format_usd
from bot.model.request import Requester
from bot.policy.quota import Tenant
from tests import dbs
from tests.support.core import admin_chat, offline_settings

TOKEN = "operator-secret-token-1234567890"
ADMIN_A = Requester("console", "A", "C1", "UADMIN")
ALICE = Requester("console", "A", "C1", "UALICE")
BOB = Requester("console", "A", "C2", "UBOB")
CAROL_B = Requester("console", "B", "C9", "UCAROL")
# A Slack workspace's admin (platform_admin, not in IMAGEBOT_ADMINS): their tenant's users and channels only.
# (Whoever runs the console is an operator.)
SLACK_ADMIN = Requester("slack", "T1", "C1", "UADMIN")
SLACK_MEMBER = Requester("slack", "T1", "C1", "UMEMBER")
B_PROMPT = "tenant-b-secret-prompt-zebra"
LINK = re.compile(r"https?://\S+/dashboard/signin/([0-9a-f]+)")


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "bot.sqlite3")


@dataclass
class Site:
    core: Core
    client: TestClient[web.Request, web.Application]
    out: Path
    jobs: dict[str, str]  # name -> job id

    async def link(self, who: Requester = ADMIN_A) -> str:
        reply = await admin_chat(self.core, who, "dashboard", platform_admin=True)
        assert reply.private
        match = LINK.search(reply.text)
        assert match, reply.text
        return match[1]

    async def sign_in(self, who: Requester = ADMIN_A) -> None:
        secret = await self.link(who)
        response = await self.client.post(
            "/dashboard/signin/link", data={"link": secret}, allow_redirects=False
        )
        assert response.status == 303, await response.text()

    async def csrf(self, path: str = "/dashboard/limits") -> str:
        page = await (await self.client.get(path)).text()
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert found, page
        return found[1]

    def ledger(self, where: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return dbs.read(self.core.settings.db_path, f"SELECT * FROM ledger WHERE {where} ORDER BY id", params)


async def _job(core: Core, who: Requester, text: str, out: Path) -> str:
    view = ConsoleView(out, out_is_file=False, actions=True, err=io.StringIO(), stdout=io.StringIO())
    result = await core.submit(core.parse(text), who, view)
    assert result is not None and not view.exit_code, view.err.getvalue()  # type: ignore[attr-defined]
    return str(result.job_id)  # type: ignore[union-attr]


@pytest.fixture
async def site(target: str, tmp_path: Path) -> AsyncIterator[Site]:
    settings = offline_settings(
        target,
        IMAGEBOT_OFFLINE_LATENCY="0.01",
        IMAGEBOT_API_TIMEOUT="5",
        IMAGEBOT_DASHBOARD_TOKEN=TOKEN,
        IMAGEBOT_PUBLIC_URL="http://dash.example",
    )
    core = await Core.start(settings)
    service = Service(settings)
    service.core = core
    out = tmp_path / "out"
    jobs = {
        "alice": await _job(core, ALICE, "a red fox --size 1024x1024 --quality low --count 2", out),
        "bob": await _job(core, BOB, "a blue whale --size 1024x1536 --quality medium", out),
        "carol": await _job(core, CAROL_B, f"{B_PROMPT} --size 1024x1024 --quality low", out),
    }
    server = TestServer(service.app)
    await server.start_server(access_log=None)  # as Service.open runs it: no access log
    client = TestClient(server)
    await client.start_server()
    try:
        yield Site(core, client, out, jobs)
    finally:
        await client.close()
        await service.close()
        await core.close()


def _limits(site: Site) -> list[dict[str, Any]]:
    return dbs.read(site.core.settings.db_path, "SELECT * FROM limits ORDER BY scope, key")


async def test_a_link_signs_in_once(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert (await site.client.get("/dashboard/spend", allow_redirects=False)).status == 303  # not signed in
    secret = await site.link()
    # Opening the link (what a chat's preview would do) shows who it signs in, and uses nothing up.
    for _ in range(2):
        page = await site.client.get(f"/dashboard/signin/{secret}")
        assert page.status == 200 and "console:A" in await page.text()
        assert "Set-Cookie" not in page.headers
    first = await site.client.post("/dashboard/signin/link", data={"link": secret}, allow_redirects=False)
    assert first.status == 303
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert "Max-Age=28800" in cookie and "Secure" not in cookie  # http here: a Secure cookie would be dropped
    spend = await site.client.get("/dashboard/spend")
    assert spend.status == 200 and "console:A" in await spend.text()
    # Used once: a second use (another browser, a replay) is refused, with a plain page and a log line.
    again = await site.client.post("/dashboard/signin/link", data={"link": secret}, allow_redirects=False)
    assert again.status == 403 and "already used" in await again.text()
    assert "Set-Cookie" not in again.headers
    assert (await site.client.get(f"/dashboard/signin/{secret}")).status == 403
    refusals = [r for r in caplog.records if r.getMessage() == "dashboard request refused"]
    assert [r.reason for r in refusals] == ["link used before", "link used before"]  # type: ignore[attr-defined]
    assert secret not in caplog.text and secret[:12] not in caplog.text
    # The store keeps digests only: the secret is nowhere in it.
    stored = dbs.read(site.core.settings.db_path, "SELECT * FROM dashboard_tokens")
    assert stored and secret not in repr(stored)


async def test_an_expired_or_unknown_link_signs_nobody_in(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    secret = await site.link()
    real = site.core.ledger.clock
    site.core.ledger.clock = lambda: real() + timedelta(minutes=15, seconds=1)
    expired = await site.client.post("/dashboard/signin/link", data={"link": secret}, allow_redirects=False)
    assert expired.status == 403 and "expired" in await expired.text()
    assert "Set-Cookie" not in expired.headers
    site.core.ledger.clock = real
    unknown = await site.client.post("/dashboard/signin/link", data={"link": secret + "x"})
    assert unknown.status == 403 and "not valid" in await unknown.text()
    assert not dbs.read(site.core.settings.db_path, "SELECT * FROM dashboard_tokens WHERE kind='session'")
    assert (await site.client.get("/dashboard/spend", allow_redirects=False)).status == 303
    assert secret not in caplog.text


async def test_the_link_is_for_admins_only_and_private(site: Site) -> None:
    refused = await admin_chat(site.core, SLACK_MEMBER, "dashboard", platform_admin=False)
    assert refused.private and "Only admins" in refused.text and "/dashboard/" not in refused.text
    reply = await admin_chat(site.core, ADMIN_A, "dashboard", platform_admin=True)
    assert reply.private and reply.text.count("http://dash.example/dashboard/signin/") == 1


async def test_cookie_is_secure_behind_https(site: Site) -> None:
    secret = await site.link()
    response = await site.client.post(
        "/dashboard/signin/link",
        data={"link": secret},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert response.status == 303 and "Secure" in response.headers["Set-Cookie"]


async def test_a_session_ends_after_eight_hours(site: Site) -> None:
    await site.sign_in()
    real = site.core.ledger.clock
    site.core.ledger.clock = lambda: real() + timedelta(hours=8, seconds=1)
    assert (await site.client.get("/dashboard/spend", allow_redirects=False)).status == 303


async def test_operators_sign_in_with_the_token(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    wrong = await site.client.get("/dashboard/spend", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    every = await site.client.get("/dashboard/spend", headers=bearer)
    text = await every.text()
    assert every.status == 200 and "console:A" in text and "console:B" in text  # the tenant picker
    b = await site.client.get("/dashboard/gallery?tenant=console:B", headers=bearer)
    assert B_PROMPT in await b.text()
    form = await site.client.post("/dashboard/signin", data={"token": "nope"}, allow_redirects=False)
    assert form.status == 401 and "Set-Cookie" not in form.headers
    ok = await site.client.post("/dashboard/signin", data={"token": TOKEN}, allow_redirects=False)
    assert ok.status == 303 and "HttpOnly" in ok.headers["Set-Cookie"]
    assert (await site.client.get("/dashboard/limits?tenant=console:B")).status == 200
    assert TOKEN not in caplog.text and "nope" not in caplog.text
    reasons = [
        getattr(r, "reason", None) for r in caplog.records if r.getMessage() == "dashboard request refused"
    ]
    assert reasons == ["wrong bearer token", "wrong operator token"]


async def test_every_change_carries_the_csrf_token(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    await site.sign_in()
    before = _limits(site)
    change = {"verb": "quota", "scope": "user", "target": "UALICE", "daily_usd": "1"}
    for forged in ({}, {"csrf": "0" * 64}):
        response = await site.client.post("/dashboard/limits", data={**change, **forged})
        assert response.status == 403 and "nothing was changed" in await response.text()
    assert _limits(site) == before
    assert [
        getattr(r, "reason", None) for r in caplog.records if r.getMessage() == "dashboard request refused"
    ] == ["csrf token missing or wrong"] * 2
    # Another session's token is no good either.
    token = await site.csrf()
    signed_out = await site.client.post("/dashboard/signout", data={"csrf": token}, allow_redirects=False)
    assert signed_out.status == 303
    await site.sign_in()
    stale = await site.client.post("/dashboard/limits", data={**change, "csrf": token})
    assert stale.status == 403 and _limits(site) == before
    done = await site.client.post("/dashboard/limits", data={**change, "csrf": await site.csrf()})
    assert done.status == 200 and "Limits for user UALICE set: daily_usd=$1.00" in await done.text()
    assert [(r["scope"], r["key"], r["daily_micros"]) for r in _limits(site)] == [
        ("user", "console:A:UALICE", 1_000_000)
    ]


async def test_a_tenant_never_sees_another(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    await site.sign_in()
    carol = site.jobs["carol"]
    missing = await site.client.get("/dashboard/job/0123456789abcdef")
    assert missing.status == 404
    nothing = await missing.text()
    for path in (
        "/dashboard/spend?tenant=console:B",
        "/dashboard/ledger.csv?tenant=console:B",
        "/dashboard/limits?tenant=console:B",
        "/dashboard/gallery?tenant=console:B",
        f"/dashboard/job/{carol}",
        f"/dashboard/image/{carol}/1",
    ):
        response = await site.client.get(path)
        assert response.status == 404, path
        assert await response.text() == nothing, path  # the same page as an id that does not exist
    files = sorted(site.out.iterdir())
    token = await site.csrf()
    for posted in ({"job": carol, "image": "1"}, {"job": carol, "image": "1", "tenant": "console:B"}):
        deleted = await site.client.post("/dashboard/delete", data={**posted, "csrf": token})
        assert deleted.status == 404 and await deleted.text() == nothing
    assert sorted(site.out.iterdir()) == files  # nothing deleted
    # A's own pages and CSV carry nothing of B's.
    for path in ("/dashboard/spend", "/dashboard/gallery", "/dashboard/ledger.csv", "/dashboard/limits"):
        body = await (await site.client.get(path)).text()
        assert (
            B_PROMPT not in body and "UCAROL" not in body and carol not in body and "console:B" not in body
        ), path
    assert len([r for r in caplog.records if r.getMessage() == "dashboard request refused"]) == 9


async def test_spend_figures_equal_the_ledger(site: Site) -> None:
    await site.sign_in()
    rows = site.ledger("platform='console' AND workspace='A'")
    spent = sum(r["actual_micros"] for r in rows)
    images = sum(1 for r in rows if r["status"] in ("rendered", "delivered", "undelivered"))
    assert spent > 0 and images == 3
    page = await (await site.client.get("/dashboard/spend?days=7")).text()
    assert f'<b id="total-spend">{format_usd(spent)}</b>' in page
    assert f'<b id="total-images">{images}</b>' in page
    built = await report.build(site.core.ledger, tenant=Tenant("console", "A"), days=7)
    assert (built.spend_micros, built.images) == (spent, images)  # what `imagebot report` prints
    day = rows[0]["created_at"][:10]
    assert f'data-day="{day}" data-micros="{spent}" data-images="{images}"' in page
    for who in ("UALICE", "UBOB"):
        mine = sum(r["actual_micros"] for r in rows if r["user"] == who)
        shown = re.escape(format_usd(mine))
        assert re.search(rf'<td>{who}</td><td class="num">\d+</td><td class="num">{shown}<', page)
    # A date range of today only: the same figures; one that ended yesterday: none.
    today = await (await site.client.get(f"/dashboard/spend?from={day}&to={day}")).text()
    assert f'<b id="total-spend">{format_usd(spent)}</b>' in today
    before = await (await site.client.get("/dashboard/spend?from=2020-01-01&to=2020-01-31")).text()
    assert '<b id="total-spend">$0.0000</b>' in before
    # The CSV is the tenant's ledger rows, as `imagebot report --csv` writes them.
    exported = await site.client.get("/dashboard/ledger.csv?days=7")
    assert exported.headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(await exported.text())))
    assert [int(r["id"]) for r in table] == [r["id"] for r in rows]
    assert sum(int(r["actual_micros"]) for r in table) == spent
    # A period out of range: /imagine-usage's own words.
    with pytest.raises(UserError) as refusal:
        commands.parse_days("--days 999")
    bad = await site.client.get("/dashboard/spend?days=999")
    assert bad.status == 400 and str(refusal.value) in _unescape(await bad.text())


async def test_limits_use_the_chat_commands_rules_and_words(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    await site.sign_in(SLACK_ADMIN)  # a workspace admin, not an operator
    token = await site.csrf()
    for fields in (
        {"scope": "user", "target": "UALICE", "daily_usd": "-1"},
        {"scope": "user", "target": "UALICE", "daily_images": "2.5"},
        {"scope": "user", "target": "UALICE", "monthly_images": "2000000"},
        {"scope": "channel", "target": "C1", "daily_usd": "3"},
        {"scope": "user", "target": "@alice", "daily_usd": "3"},
    ):
        target = {"UALICE": "<@UALICE>", "C1": "<#C1>"}.get(fields["target"], fields["target"])
        words = ["quota", target] + [f"{k}={v}" for k, v in fields.items() if k not in ("scope", "target")]
        with pytest.raises(UserError) as refusal:
            await admin_chat(site.core, SLACK_ADMIN, " ".join(words), platform_admin=True)
        response = await site.client.post(
            "/dashboard/limits", data={"csrf": token, "verb": "quota", **fields}
        )
        assert response.status == 400
        assert str(refusal.value) in _unescape(await response.text()), str(refusal.value)
    # A workspace admin does not set the workspace's own limit (the form does not offer it): the chat's refusal.
    chat_reply = await admin_chat(
        site.core, SLACK_ADMIN, "quota workspace monthly_usd=5", platform_admin=True
    )
    assert "Only operators" in chat_reply.text
    own = await site.client.post(
        "/dashboard/limits", data={"csrf": token, "verb": "quota", "scope": "workspace", "monthly_usd": "5"}
    )
    assert chat_reply.text in _unescape(await own.text())
    assert _limits(site) == []
    await site.sign_in()  # console:A's admin from here on
    token = await site.csrf()
    # A change is logged as the chat command logs it.
    caplog.clear()
    caplog.set_level(logging.INFO)
    await site.client.post(
        "/dashboard/limits",
        data={"csrf": token, "verb": "quota", "scope": "user", "target": "UBOB", "daily_images": "3"},
    )
    await admin_chat(site.core, ADMIN_A, "quota <@UALICE> daily_images=3", platform_admin=True)
    changes = [r for r in caplog.records if r.getMessage() == "admin command"]
    assert [(r.tenant, r.user, r.verb) for r in changes] == [("console:A", "UADMIN", "quota")] * 2  # type: ignore[attr-defined]
    quota_text = (await commands.my_quota(site.core, BOB)).text
    assert "your daily images: 1 image used of 3 images" in quota_text


async def test_admins_delete_an_image(site: Site) -> None:
    await site.sign_in()
    alice = site.jobs["alice"]
    card = await (await site.client.get(f"/dashboard/job/{alice}")).text()
    assert "a red fox" in card and "1024x1024" in card and "UALICE" in card
    image = await site.client.get(f"/dashboard/image/{alice}/1")
    assert image.status == 200 and image.headers["Content-Type"] == "image/jpeg"
    files = sorted(site.out.iterdir())
    deleted = await site.client.post(
        "/dashboard/delete", data={"csrf": await site.csrf(), "job": alice, "image": "1"}
    )
    assert deleted.status == 200 and "Deleted." in await deleted.text()
    assert len(sorted(site.out.iterdir())) == len(files) - 1
    assert (await site.client.get(f"/dashboard/image/{alice}/1")).status == 404


def _unescape(html: str) -> str:
    import html as html_module

    return html_module.unescape(html)
