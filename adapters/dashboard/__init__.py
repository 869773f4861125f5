"""The web dashboard at /dashboard on `imagebot run`'s HTTP port: spend, limits and images in a browser
(docs/rules.md §14).

An adapter like the chat ones: it turns HTTP requests into the core's calls and the answers into HTML, and
decides nothing the chat commands decide differently.
- Spend: `bot.report.build` (the figures of `imagebot report` and `/imagine-admin report`), for the last N
  days or a date range, a channel, a user; the ledger CSV is `bot.report.ledger_rows`, as `imagebot report
  --csv` writes it.
- Limits and rules: `bot.policy.quota.standings` (who is near which limit) and `/imagine-admin settings`'
  text; every change is `/imagine-admin`'s own words, read as the tenant's platform reads them
  (adapters/mentions.py) and run by `bot.commands.admin`, so the checks, the refusals' words and the log line
  are the chat command's.
- Gallery: the tenant's recent jobs with their cards (`cards.card`); an image is fetched from where its
  platform keeps it (the adapter's own image store); Delete is `Core.act` with the Delete button's key.

Sign-in (bot/policy/signin.py): a one-time link from `/imagine-admin dashboard` (its page asks for one click, so a
chat's link preview cannot use it up), or IMAGEBOT_DASHBOARD_TOKEN through the form or as
`Authorization: Bearer <token>` on any dashboard URL. The session cookie is HttpOnly, SameSite=Strict, limited
to /dashboard, Secure when the dashboard is reached over https (IMAGEBOT_PUBLIC_URL, or a proxy's
X-Forwarded-Proto), and lasts 8 hours. Every change (a POST) carries the session's CSRF token, except a
script's Bearer request, which no browser sends by itself.

Tenancy: a link's session sees its own tenant only; any other tenant named in a URL, and any job or image id
not of its tenant, is answered 404 with the same page as an id that does not exist. Operators pick a tenant
(`?tenant=slack:T123`; none: every tenant, where a view allows it).

Refusals (an expired or used link, a wrong token, a foreign or unknown id, a form without its CSRF token) get a
plain page, change nothing, and are logged without the token or the link.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from adapters.dashboard.cards import Card, card, daily_chart
from adapters.mentions import read_admin
from bot import commands, report
from bot.app import Core
from bot.errors import UserError
from bot.jobs import texts
from bot.jobs.actions import Button, ImageStore, Kind
from bot.model.pricing import format_usd
from bot.model.request import Requester
from bot.policy import quota, signin
from bot.policy.quota import Tenant
from bot.policy.signin import Session, SignInRefused

log = logging.getLogger("imagebot.dashboard")

COOKIE = "imagebot_dashboard"
MAX_RANGE_DAYS = commands.MAX_DAYS
GALLERY_JOBS = 24
TENANTS_TTL = 30.0  # seconds the operators' tenant list is kept
FORM_MAX_BYTES = 16 * 1024
HEADERS = {
    # No script at all, nothing from elsewhere, never inside another site's frame.
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_MARKUP = re.compile(r"<(@!?|#|@&|!subteam\^)([A-Za-z0-9]+)(?:\|[^>]*)?>")
_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}

Stores = Callable[[str], ImageStore | None]
Handler = Callable[["Visit", web.Request], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """A request the dashboard answers with a plain error page (and a log line naming `reason`)."""

    def __init__(self, status: int, title: str, text: str, reason: str) -> None:
        super().__init__(text)
        self.status, self.title, self.text, self.reason = status, title, text, reason


def not_found(reason: str) -> Refused:
    # One page for "no such id" and "not yours": nothing tells a tenant that another's id exists.
    return Refused(404, "Not found", "There is nothing here, or it is not in your workspace.", reason)


@dataclass
class Visit:
    """One signed-in request: who (the session), which tenant it looks at, and the tenants to pick from."""

    core: Core
    session: Session
    tenant: Tenant | None
    bearer: bool = False
    tenants: list[Tenant] = field(default_factory=list)

    @property
    def csrf(self) -> str:
        return "" if self.bearer else self.session.csrf

    @property
    def operator(self) -> bool:
        return self.session.operator

    def url(self, path: str, **params: str) -> str:
        """`path` with `params`, and, for an operator, the tenant being looked at."""
        if self.session.tenant is None and self.tenant is not None:
            params = {"tenant": self.tenant.key, **params}
        query = "&".join(f"{k}={_quote(v)}" for k, v in params.items() if v)
        return f"{path}?{query}" if query else path

    def who(self, tenant: Tenant, channel: str = "") -> Requester:
        """The signed-in person as a requester in `tenant` (what the core's admin calls take)."""
        return Requester(tenant.platform, tenant.workspace, channel, self.session.user)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def shown(text: str) -> str:
    """A chat reply without chat markup: `<#C1>` -> `#C1`, `<@U1>` -> `@U1`."""
    return _MARKUP.sub(lambda m: ("#" if m[1] == "#" else "@") + m[2], text)


class Dashboard:
    """The routes of /dashboard. `core` gives the core once it is up (None while the database is not: 503);
    `stores` gives the image store of a platform this process serves (None: its images cannot be shown)."""

    def __init__(self, settings: Any, core: Callable[[], Core | None], stores: Stores) -> None:
        self.settings = settings
        self.core = core
        self.stores = stores
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("adapters.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.globals["usd"] = format_usd
        self._tenants_read: tuple[float, list[Tenant]] | None = None

    # -- the routes ---------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        page = self._signed_in
        return [
            web.get("/dashboard", self.home),
            web.get("/dashboard/", self.home),
            web.get("/dashboard/signin", self.signin_form),
            web.post("/dashboard/signin", self.signin_token),
            web.get("/dashboard/signin/{link}", self.link_page),
            web.post("/dashboard/signin/link", self.link_redeem),
            web.post("/dashboard/signout", page(self.signout, change=True)),
            web.get("/dashboard/spend", page(self.spend)),
            web.get("/dashboard/ledger.csv", page(self.ledger_csv)),
            web.get("/dashboard/limits", page(self.limits)),
            web.post("/dashboard/limits", page(self.change, change=True)),
            web.get("/dashboard/gallery", page(self.gallery)),
            web.get("/dashboard/job/{job}", page(self.job)),
            web.get("/dashboard/image/{job}/{n}", page(self.image)),
            web.post("/dashboard/delete", page(self.delete, change=True)),
        ]

    # -- plumbing -----------------------------------------------------------------------------------

    def _html(self, template: str, status: int = 200, **context: Any) -> web.Response:
        context.setdefault("visit", None)
        context.setdefault("page", "")
        visit = context["visit"]

        def tenant_field() -> Markup:
            if visit is None or visit.session.tenant is not None or visit.tenant is None:
                return Markup("")
            return Markup('<input type="hidden" name="tenant" value="{}">').format(visit.tenant.key)

        body = self.templates.get_template(template).render(tenant_field=tenant_field, **context)
        return web.Response(text=body, status=status, content_type="text/html", headers=HEADERS)

    def _error(self, status: int, title: str, text: str) -> web.Response:
        return self._html("error.html", status, title=title, text=text)

    def _refused(self, request: web.Request, exc: Refused) -> web.Response:
        # The route's pattern, not the path: a link's path is its secret.
        route = request.match_info.route.resource
        log.warning(
            "dashboard request refused",
            extra={
                "reason": exc.reason,
                "status": exc.status,
                "method": request.method,
                "route": route.canonical if route is not None else "?",
                "remote": request.remote or "",
            },
        )
        return self._error(exc.status, exc.title, exc.text)

    def _secure(self, request: web.Request) -> bool:
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return request.secure or forwarded == "https" or self.settings.public_url.startswith("https://")

    def _signed_in(
        self, handler: Handler, *, change: bool = False
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """`handler` for a signed-in visitor (a session cookie, or an operator's Bearer token); `change`: a POST
        that must carry the session's CSRF token. Anyone else is sent to sign in (a GET) or refused (a POST)."""

        async def run(request: web.Request) -> web.StreamResponse:
            core = self.core()
            if core is None:
                return self._error(503, "Starting", "The dashboard is starting; try again in a moment.")
            try:
                visit = await self._visit(request, core, change)
                if visit is None:
                    raise web.HTTPSeeOther("/dashboard/signin")
                return await handler(visit, request)
            except Refused as exc:
                return self._refused(request, exc)

        return run

    async def _visit(self, request: web.Request, core: Core, change: bool) -> Visit | None:
        now = core.ledger.clock()
        bearer = False
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme:
            token = self.settings.dashboard_token
            if (
                scheme.lower() != "bearer"
                or token is None
                or not signin.token_matches(given.strip(), token.reveal())
            ):
                raise Refused(
                    401,
                    "Not signed in",
                    "That token is not IMAGEBOT_DASHBOARD_TOKEN (or operator sign-in is off).",
                    "wrong bearer token",
                )
            session = Session("", None, signin.OPERATOR, True, now)
            bearer = True
        else:
            secret = request.cookies.get(COOKIE, "")
            found = await core.ledger.run_db(lambda db: signin.session(db, secret, now)) if secret else None
            if found is None:
                if change:
                    raise Refused(
                        403,
                        "Not signed in",
                        "You are not signed in (or your session ended); nothing was changed.",
                        "change without a session",
                    )
                return None
            session = found
        form: dict[str, str] = {}
        if change:
            form = await _form(request)
            if not bearer and not signin.token_matches(form.get("csrf", ""), session.csrf):
                raise Refused(
                    403,
                    "Form refused",
                    "This form did not come from your dashboard (its CSRF token is missing or wrong); "
                    "nothing was changed.",
                    "csrf token missing or wrong",
                )
        named = form.get("tenant") or request.query.get("tenant", "")
        visit = Visit(core, session, session.tenant, bearer)
        if named:
            try:
                tenant = Tenant.parse(named)
            except UserError:
                raise not_found("not a tenant") from None
            if not session.sees(tenant):
                raise not_found("another tenant")
            visit.tenant = tenant
        if session.tenant is None:
            visit.tenants = await self._tenants(core)
        return visit

    async def _tenants(self, core: Core) -> list[Tenant]:
        """The operators' tenant picker: every tenant in the ledger, read at most every TENANTS_TTL seconds (a
        DISTINCT over the whole ledger is not for every page view)."""
        now = time.monotonic()
        if self._tenants_read is None or now - self._tenants_read[0] > TENANTS_TTL:
            self._tenants_read = (now, await report.tenants(core.ledger))
        return self._tenants_read[1]

    def _need_tenant(self, visit: Visit, path: str, what: str) -> web.Response | None:
        """An operator's view of something that belongs to one tenant: the page to pick it, until one is."""
        if visit.tenant is not None:
            return None
        return self._html("pick.html", visit=visit, path=path, what=what)

    # -- signing in ---------------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/dashboard/spend")

    async def signin_form(self, request: web.Request, note: str = "", status: int = 200) -> web.Response:
        return self._html(
            "signin.html", status, note=note, token_set=self.settings.dashboard_token is not None
        )

    async def signin_token(self, request: web.Request) -> web.StreamResponse:
        core = self.core()
        if core is None:
            return self._error(503, "Starting", "The dashboard is starting; try again in a moment.")
        form = await _form(request)
        token = self.settings.dashboard_token
        if token is None or not signin.token_matches(form.get("token", ""), token.reveal()):
            self._refused(request, Refused(401, "", "", "wrong operator token"))
            return await self.signin_form(
                request, "That is not IMAGEBOT_DASHBOARD_TOKEN (or operator sign-in is off).", 401
            )
        now = core.ledger.clock()
        session = await core.ledger.run_db(
            lambda db: signin.open_session(db, None, signin.OPERATOR, operator=True, now=now)
        )
        log.info("dashboard sign-in", extra={"by": "operator token", "remote": request.remote or ""})
        return self._start(request, session)

    async def link_page(self, request: web.Request) -> web.StreamResponse:
        core = self.core()
        if core is None:
            return self._error(503, "Starting", "The dashboard is starting; try again in a moment.")
        secret, now = request.match_info["link"], core.ledger.clock()
        try:
            tenant, user = await core.ledger.run_db(lambda db: signin.peek_link(db, secret, now))
        except SignInRefused as exc:
            return self._refused(request, Refused(403, "Sign-in link refused", str(exc), _reason(exc)))
        return self._html("link.html", tenant=tenant, user=user, link=secret)

    async def link_redeem(self, request: web.Request) -> web.StreamResponse:
        core = self.core()
        if core is None:
            return self._error(503, "Starting", "The dashboard is starting; try again in a moment.")
        secret, now = (await _form(request)).get("link", ""), core.ledger.clock()
        try:
            session = await core.ledger.run_db(lambda db: signin.redeem_link(db, secret, now))
        except SignInRefused as exc:
            return self._refused(request, Refused(403, "Sign-in link refused", str(exc), _reason(exc)))
        log.info(
            "dashboard sign-in",
            extra={
                "by": "link",
                "tenant": str(session.tenant),
                "user": session.user,
                "remote": request.remote or "",
            },
        )
        return self._start(request, session)

    def _start(self, request: web.Request, session: Session) -> web.StreamResponse:
        response = _redirect("/dashboard/spend")
        response.set_cookie(
            COOKIE,
            session.secret,
            max_age=int(signin.SESSION_TTL.total_seconds()),
            path="/dashboard",
            httponly=True,
            samesite="Strict",
            secure=self._secure(request),
        )
        return response

    async def signout(self, visit: Visit, request: web.Request) -> web.StreamResponse:
        if not visit.bearer:
            await visit.core.ledger.run_db(lambda db: signin.sign_out(db, visit.session.secret))
        response = _redirect("/dashboard/signin")
        response.del_cookie(COOKIE, path="/dashboard")
        return response

    # -- spend --------------------------------------------------------------------------------------

    async def spend(self, visit: Visit, request: web.Request) -> web.StreamResponse:
        try:
            period = _period(request.query, visit.core.ledger.clock())
        except UserError as exc:
            raise Refused(400, "Not a period", str(exc), "bad period") from None
        channel, user = request.query.get("channel", "").strip(), request.query.get("user", "").strip()
        built = await report.build(
            visit.core.ledger,
            tenant=visit.tenant,
            channel=channel or None,
            user=user or None,
            days=period.days,
            now=period.now,
            until=period.until,
            top=None,
        )
        tables = [
            ("By channel", "channel", built.by_channel),
            ("By user", "user", [(u, n, m) for u, n, m in built.top_users]),
            ("By model", "model", built.by_model),
            ("Fast and relax", "mode", [(m, n, s) for m, n, s in built.by_mode]),
            ("By size and quality", "size", [(f"{s} {q}", n, m) for s, q, n, m in built.by_size_quality]),
        ]
        return self._html(
            "spend.html",
            visit=visit,
            page="spend",
            report=built,
            query={k: request.query.get(k, "") for k in ("days", "from", "to", "channel", "user")},
            period=period.text,
            chart=daily_chart(built.daily, period.first, period.last),
            tables=[(title, key, _shares(rows)) for title, key, rows in tables],
        )

    async def ledger_csv(self, visit: Visit, request: web.Request) -> web.StreamResponse:
        try:
            period = _period(request.query, visit.core.ledger.clock())
        except UserError as exc:
            raise Refused(400, "Not a period", str(exc), "bad period") from None
        channel, user = request.query.get("channel", "").strip(), request.query.get("user", "").strip()
        columns, rows = await report.ledger_rows(
            visit.core.ledger,
            tenant=visit.tenant,
            channel=channel or None,
            user=user or None,
            days=period.days,
            now=period.now,
            until=period.until,
        )
        body = await asyncio.to_thread(_csv, columns, rows)
        name = f"imagebot-ledger-{visit.tenant.key.replace(':', '-') if visit.tenant else 'all'}.csv"
        return web.Response(
            body=body,
            content_type="text/csv",
            charset="utf-8",
            headers={**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
        )

    # -- limits and rules ---------------------------------------------------------------------------

    async def limits(
        self, visit: Visit, request: web.Request, said: str = "", refused: bool = False, status: int = 200
    ) -> web.StreamResponse:
        picking = self._need_tenant(visit, "/dashboard/limits", "Limits and rules")
        if picking is not None:
            return picking
        tenant = visit.tenant
        assert tenant is not None
        core = visit.core
        now = core.ledger.clock()
        standings = await core.ledger.run_db(
            lambda db: quota.standings(db, core.ledger.defaults, tenant, now, core.ledger.timezone)
        )
        rules = await commands.settings_text(core, tenant)
        return self._html(
            "limits.html",
            status,
            visit=visit,
            page="limits",
            standings=standings,
            rules=shown(rules),
            said=said,
            refused=refused,
        )

    async def change(self, visit: Visit, request: web.Request) -> web.StreamResponse:
        """A form of the limits page, as the words of `/imagine-admin` (bot/commands.py), said by the
        signed-in admin in the tenant looked at."""
        if visit.tenant is None:
            raise not_found("change without a tenant")
        form = await _form(request)
        try:
            words = _admin_words(form)
            reply = await commands.admin(
                visit.core,
                visit.who(visit.tenant),
                read_admin(" ".join(words), visit.tenant.platform),
                platform_admin=True,
                operator=visit.operator,
            )
        except UserError as exc:
            return await self.limits(visit, request, shown(str(exc)), refused=True, status=400)
        return await self.limits(visit, request, shown(reply.text))

    # -- gallery ------------------------------------------------------------------------------------

    async def gallery(self, visit: Visit, request: web.Request) -> web.StreamResponse:
        jobs = await report.recent_jobs(visit.core.ledger, tenant=visit.tenant, limit=GALLERY_JOBS)
        cards = [card(rows, images) for rows, images in jobs]
        return self._html("gallery.html", visit=visit, page="gallery", jobs=cards, said="", refused=False)

    async def _card(self, visit: Visit, job_id: str) -> tuple[Card, list[dict[str, Any]], Tenant]:
        found = await report.job(visit.core.ledger, tenant=visit.tenant, job_id=job_id)
        if found is None:
            raise not_found("unknown or another tenant's job")
        rows, images = found
        tenant = Tenant(rows[0]["platform"], rows[0]["workspace"])
        if not visit.session.sees(tenant):  # report.job already kept to the tenant: a second lock
            raise not_found("another tenant's job")
        return card(rows, images), images, tenant

    async def job(self, visit: Visit, request: web.Request) -> web.StreamResponse:
        return await self._job_page(visit, request.match_info["job"])

    async def _job_page(
        self, visit: Visit, job_id: str, said: str = "", refused: bool = False, status: int = 200
    ) -> web.Response:
        shown_card, _, _ = await self._card(visit, job_id)
        return self._html(
            "job.html", status, visit=visit, page="gallery", job=shown_card, said=said, refused=refused
        )

    async def image(self, visit: Visit, request: web.Request) -> web.StreamResponse:
        _, images, tenant = await self._card(visit, request.match_info["job"])
        number = request.match_info["n"]
        index = int(number) if number.isdigit() else 0
        if not 1 <= index <= len(images) or not images[index - 1].get("where"):
            raise not_found("no such image")
        if images[index - 1].get("deleted"):
            raise Refused(404, "Image deleted", "That image was deleted.", "image deleted")
        store = self.stores(tenant.platform)
        if store is None:
            raise Refused(
                404,
                "Not here",
                f"This process does not serve {tenant.platform}: its images are not shown.",
                "no store",
            )
        try:
            data = await store.fetch(images[index - 1]["where"])
        except UserError as exc:
            raise Refused(404, "Image gone", str(exc), "image not fetched") from None
        kind = _CONTENT_TYPES.get(
            str(images[index - 1].get("format", "")).lower(), "application/octet-stream"
        )
        return web.Response(
            body=data,
            content_type=kind,
            headers={**HEADERS, "Cache-Control": "private, max-age=300"},
        )

    async def delete(self, visit: Visit, request: web.Request) -> web.StreamResponse:
        """Delete for admins: the Delete button's own core call (`Core.act`), so the same rules hold."""
        form = await _form(request)
        job_id = form.get("job", "")
        _, _, tenant = await self._card(visit, job_id)
        number = form.get("image", "")
        store = self.stores(tenant.platform)
        if store is None or not number.isdigit():
            raise not_found("no such image, or no store for it")
        said = _Said()
        key = Button(Kind.REMOVE, job_id, int(number), "", None).key
        await visit.core.act(key, visit.who(tenant), cast(Any, said), store, platform_admin=True)
        if said.text is None:
            log.info(
                "dashboard: image deleted",
                extra={
                    "job_id": job_id,
                    "image": int(number),
                    "tenant": str(tenant),
                    "user": visit.session.user,
                },
            )
        refused = said.text is not None
        return await self._job_page(
            visit, job_id, said.text or texts.DELETED, refused=refused, status=400 if refused else 200
        )


def _redirect(location: str) -> web.Response:
    """303 See Other: after a POST, the browser GETs `location`."""
    return web.Response(status=303, headers={**HEADERS, "Location": location})


class _Said:
    """The JobView a Delete needs: only its refusal (if any) is ever said."""

    previews = False
    confirms = False

    def __init__(self) -> None:
        self.text: str | None = None

    async def refused(self, text: str) -> None:
        self.text = text


def _reason(exc: SignInRefused) -> str:
    text = str(exc)
    return (
        "link used before"
        if "already used" in text
        else "link expired"
        if "expired" in text
        else "unknown link"
    )


async def _form(request: web.Request) -> dict[str, str]:
    """The posted form's fields (the first of each), at most FORM_MAX_BYTES."""
    if request.content_length is not None and request.content_length > FORM_MAX_BYTES:
        raise Refused(413, "Too large", "That form is too large.", "form too large")
    posted = await request.post()
    return {k: v for k, v in posted.items() if isinstance(v, str)}


def _admin_words(form: dict[str, str]) -> list[str]:
    """A limits-page form as `/imagine-admin` words. Ids are wrapped as the mention chat would send, so the
    target is read exactly as in chat (a bare Discord number is otherwise a user)."""
    verb = form.get("verb", "")
    target = form.get("target", "").strip()
    for name, value in form.items():
        if name not in ("words", "csrf") and len(value.split()) > 1:
            raise UserError(f"{name}={value.strip()!r}: one value, without spaces")

    def mention(kind: str) -> str:
        return f"<{kind}{target}>" if _ID.match(target) else target

    if verb == "quota":
        scope = form.get("scope", "user")
        word = "workspace" if scope == "workspace" else mention("#" if scope == "channel" else "@")
        given = [f"{name}={form[name].strip()}" for name in quota.LIMIT_FIELDS if form.get(name, "").strip()]
        return ["quota", word, *given]
    if verb == "channel":
        return ["channel", mention("#"), *form.get("words", "").split()]
    if verb in ("block", "unblock"):
        return [verb, mention("@")]
    if verb in ("allow", "deny"):
        return [verb, target]
    if verb == "settings":
        given = [
            f"{name}={form[name].strip()}" for name in ("cooldown", "max_jobs") if form.get(name, "").strip()
        ]
        return ["settings", *given]
    raise UserError(f"unknown change {verb!r}")


@dataclass(frozen=True, slots=True)
class Period:
    """What `report.build` takes: `days` whole UTC days, the last of them the day `now` falls on; `until`, for
    a date range, where it ends (nothing from then on counts; None: up to now)."""

    days: int
    now: datetime
    until: datetime | None
    text: str

    @property
    def first(self) -> date:
        return self.now.astimezone(UTC).date() - timedelta(days=self.days - 1)

    @property
    def last(self) -> date:
        return self.now.astimezone(UTC).date()


def _period(query: Any, now: datetime) -> Period:
    """`?days=N` (as /imagine-usage --days N) or `?from=YYYY-MM-DD&to=YYYY-MM-DD` (whole UTC days, both
    included); neither: the last 30 days."""
    start, end = query.get("from", "").strip(), query.get("to", "").strip()
    if start or end:
        try:
            last = date.fromisoformat(end) if end else now.astimezone(UTC).date()
        except ValueError:
            raise UserError(f"to={end!r} is not a date; use YYYY-MM-DD") from None
        try:
            first = date.fromisoformat(start) if start else last - timedelta(days=29)
        except ValueError:
            raise UserError(f"from={start!r} is not a date; use YYYY-MM-DD") from None
        days = (last - first).days + 1
        if not 1 <= days <= MAX_RANGE_DAYS:
            raise UserError(f"from {first} to {last} is not a range of 1-{MAX_RANGE_DAYS} days")
        until = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
        return Period(days, until - timedelta(milliseconds=1), until, f"{first} to {last}")
    raw = query.get("days", "").strip()
    days = commands.parse_days(f"--days {raw}" if raw else "")
    return Period(days, now, None, f"last {days} days")


def _shares(rows: Collection[tuple[Any, int, int]]) -> list[tuple[Any, int, int, float]]:
    top = max([m for _, _, m in rows] + [1])
    return [(name, n, m, round(100 * m / top, 1)) for name, n, m in rows]


def _csv(columns: list[str], rows: list[tuple[Any, ...]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue().encode()


__all__ = ["Dashboard", "shown", "escape"]
