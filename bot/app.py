"""The core, assembled from settings in one place (`Core.start`), each part given what it needs when it is built:
ledger, price table, renderer (online or offline), what a job reserves, the settle-and-deliver service, relax
mode, the job runner. The adapters are built on the core; once they are up, `Core.places.serve` lets the core
reach them (to deliver a job that outlived its process, to tell the user of an interrupted one)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot import i18n, metrics
from bot.concurrency import Slots
from bot.config import Settings
from bot.database import database_problem, open_ledger
from bot.errors import ConfigError, UserError
from bot.i18n import msg
from bot.jobs import actions, card, texts
from bot.jobs.actions import ImageStore
from bot.jobs.delivery import DELIVERY_DEADLINE_SECONDS, Delivery, Places
from bot.jobs.outcomes import JobFailure, JobResult
from bot.jobs.relax import Relax
from bot.jobs.render import Renderer
from bot.jobs.runner import JobRunner, JobView
from bot.model.images import MAX_FILE_BYTES, ImageInput, load_image, too_large
from bot.model.pricing import PriceTable, load_prices
from bot.model.request import Defaults, ImageRequest, Requester, check_image_count, parse_request, split_flags
from bot.offline import OfflineImageServer
from bot.policy import access, clicks, preferences
from bot.policy.access import Access, Standing
from bot.policy.preferences import Preferences
from bot.policy.price_check import JobPrices
from bot.policy.quota import Tenant
from bot.store import people
from bot.store.ledger import Ledger

log = logging.getLogger("imagebot.app")
RECOMMENDED_TIMEOUT = 360.0  # seconds: 2K/4K high renders take 3-5 minutes (docs/rules.md §4)
MAX_SWEEP_SECONDS = (
    20.0  # renew our lease and look for expired ones at least this often (docs/rules.md §5: 30 s)
)
PURGE_EVERY = timedelta(minutes=5)  # how often the sweep deletes what is stored past its time


@dataclass
class Core:
    """Everything the adapters share. Build with `Core.start(settings)`; close with `close()`."""

    settings: Settings
    prices: PriceTable
    ledger: Ledger
    renderer: Renderer
    places: Places  # the platforms this process serves (none until the service's adapters are up)
    delivery: Delivery
    relax: Relax
    runner: JobRunner
    offline_server: OfflineImageServer | None = None
    owns_offline_server: bool = False  # started here (not handed in): stopped on close
    heartbeat: asyncio.Task[None] = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _purged_at: datetime | None = field(default=None, init=False)
    _downloads: Slots = field(init=False)

    def __post_init__(self) -> None:
        self._downloads = Slots(self.settings.max_downloads)
        self.relax.start()
        self.heartbeat = asyncio.create_task(self._keep_lease())

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        offline_server: OfflineImageServer | None = None,
        delivery_deadline: float = DELIVERY_DEADLINE_SECONDS,
        delivery_backoff: float = 1.0,
        renders: bool = True,
    ) -> Core:
        """Open the database, start the offline server if there is no API key (unless one is handed in: its
        owner stops it), build the rest in order. `delivery_deadline`/`delivery_backoff`: how long a platform that
        does not take a job's images is retried, and the first wait (bot/jobs/delivery.py). `renders=False`: a
        command that makes no image (`imagebot settings`, `redeliver`, `discord-sync`) starts no offline server
        and no SDK client; the renderer makes its client if it is ever asked to."""
        given = offline_server
        try:
            prices = load_prices(settings.prices_path)
        except ConfigError as exc:
            raise ConfigError(f"IMAGEBOT_PRICES: {exc}" if settings.prices_path else str(exc)) from None
        if settings.model not in prices.models:
            raise ConfigError(
                f"IMAGEBOT_MODEL={settings.model!r} is not in the price table "
                f"({', '.join(sorted(prices.models))})"
            )
        if settings.api_timeout < RECOMMENDED_TIMEOUT:
            log.warning(
                "IMAGEBOT_API_TIMEOUT is below 360 s: 2K/4K high renders take 3-5 minutes and will time "
                "out (charged as possibly billed)",
                extra={"api_timeout_s": settings.api_timeout},
            )
        base_url = settings.openai_base_url
        api_key = settings.openai_api_key.reveal() if settings.openai_api_key else "offline"
        if settings.offline and renders:
            if offline_server is None:
                # The same price table (and model rules) as the bot's, IMAGEBOT_PRICES included.
                offline_server = OfflineImageServer(
                    latency=settings.offline_latency,
                    faults=settings.offline_faults,
                    prices=prices,
                    batch_latency=settings.offline_batch_latency,
                )
                await offline_server.start()
            base_url = offline_server.base_url
            log.info("offline image server", extra={"base_url": base_url})
        renderer = Renderer(
            base_url=base_url,
            api_key=api_key,
            timeout=settings.api_timeout,
            max_retries=settings.api_retries,
            retry_after_max=settings.retry_after_max,
            image_deadline=settings.image_deadline,
        )
        # The SDK's client now (its import runs in a thread: most of a second of CPU, seconds on a busy machine),
        # and the database last: its lease runs from there, and neither must eat into it before the first
        # renewal (a 2 s lease lapsed during the first render's import and the process fenced its own job).
        if renders:
            await renderer.sdk()
        try:
            ledger = await open_ledger(settings, lease=timedelta(seconds=settings.lease_seconds))
        except BaseException:
            await renderer.close()
            if offline_server is not None and offline_server is not given:
                await offline_server.stop()
            raise
        rules = Access(
            prices,
            admins=settings.admins,
            channels=settings.channels,
            cooldown=settings.user_cooldown,
            max_jobs=settings.user_max_jobs,
        )
        job_prices = JobPrices(
            prices, partial_images=settings.partial_images, preview_max_share=settings.preview_max_share
        )
        delivery = Delivery(
            ledger=ledger,
            prices=prices,
            job_prices=job_prices,
            offline=settings.offline,
            deadline=delivery_deadline,
            backoff=delivery_backoff,
        )
        places = Places()
        relax = Relax(delivery, renderer.sdk, places, window=settings.batch_window, poll=settings.batch_poll)
        runner = JobRunner(
            ledger=ledger,
            renderer=renderer,
            job_prices=job_prices,
            delivery=delivery,
            relax=relax,
            access=rules,
            max_in_flight=settings.max_in_flight,
            progress_interval=settings.progress_interval,
            confirm_micros=settings.confirm_micros,
            offline_latency=settings.offline_latency if settings.offline else None,
        )
        return cls(
            settings=settings,
            prices=prices,
            ledger=ledger,
            renderer=renderer,
            places=places,
            delivery=delivery,
            relax=relax,
            runner=runner,
            offline_server=offline_server,
            owns_offline_server=settings.offline
            and offline_server is not None
            and offline_server is not given,
        )

    async def sweep(self) -> None:
        """Recover the jobs of processes whose lease expired, then tell the users this process can reach; every
        PURGE_EVERY, delete what is stored past its time (bot/jobs/actions.py `purge`)."""
        await self.purge()
        for job in await self.ledger.recover():
            log.warning(
                "interrupted job settled",
                extra={"job_id": job.job_id, "platform": job.platform, "charged_micros": job.charged_micros},
            )
        await self._redeliver_orphans()
        if not self.places.platforms:
            return
        for job in await self.ledger.claim_notices(self.places.platforms):
            try:
                await self.places.tell_interrupted(job)
            except Exception:
                log.exception(
                    "could not tell the user about an interrupted job", extra={"job_id": job.job_id}
                )

    async def _redeliver_orphans(self) -> None:
        """Paid images a dead process left in the outbox (or `imagebot redeliver` queued): claimed and delivered
        here if this process serves their platform (bot/store/jobstate.py)."""
        if not self.places.platforms:
            return
        for job_id in await self.ledger.claim_orphans(self.places.platforms):
            who, context = await self.ledger.place(job_id)
            view = self.places.view_for(who, context)
            if view is None:
                log.warning("a waiting image has nowhere to go", extra={"job_id": job_id})
                continue
            log.info("delivering a job's waiting images", extra={"job_id": job_id})
            task = asyncio.create_task(self._deliver_waiting(job_id, view))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver_waiting(self, job_id: str, view: JobView) -> None:
        try:
            await self.redeliver(job_id, view)
        except Exception:
            log.exception("redelivery failed; the images stay in the outbox", extra={"job_id": job_id})

    async def redeliver(self, job_id: str, view: JobView) -> bool:
        """Deliver a job's images that wait in the outbox through `view` (bot/jobs/delivery.py). False if none wait."""
        return await self.delivery.redeliver(job_id, view)

    async def purge(self, *, force: bool = False) -> actions.Purged | None:
        """Stored requests, input images and results after IMAGEBOT_ACTIONS_DAYS, price checks after an hour
        (at most once per PURGE_EVERY, by the database's clock, unless `force`). A failure is logged."""
        now = self.ledger.clock()
        if not force and self._purged_at is not None and now - self._purged_at < PURGE_EVERY:
            return None
        self._purged_at = now
        days = self.settings.actions_days
        try:
            purged = await self.ledger.run_db(lambda db: actions.purge(db, now, days))
        except Exception:
            log.warning("purging stored requests failed", exc_info=True)
            return None
        if purged.results or purged.confirmations or purged.blobs:
            log.info(
                "stored requests purged",
                extra={
                    "results": purged.results,
                    "confirmations": purged.confirmations,
                    "blobs": purged.blobs,
                },
            )
        return purged

    async def _keep_lease(self) -> None:
        """Renew this process's lease and recover expired ones, in every command (not just `run`: a 4K
        render in `imagebot imagine` outlasts a lease). On PostgreSQL, a ledger connection that broke (the
        server restarted, the network dropped it) is opened again first, so the replica recovers by itself."""
        interval = min(MAX_SWEEP_SECONDS, self.ledger.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                if self.ledger.connection_lost:
                    await self.ledger.reconnect()
                    log.warning("database connection lost; opened again")
                if not await self.ledger.heartbeat():
                    self.runner.fence()  # our lease lapsed: its rows are recovered by whoever gets there
                await self.sweep()
            except Exception as exc:
                problem = database_problem(exc, self.settings)
                if problem is None:
                    log.warning("lease renewal or recovery failed", exc_info=True)
                else:  # an outage: one line each time, no traceback
                    log.warning("lease renewal or recovery failed", extra={"error": str(problem)})

    async def close(self) -> None:
        self.heartbeat.cancel()
        await self.relax.close()
        await self.renderer.close()
        if self.offline_server is not None and self.owns_offline_server:
            await self.offline_server.stop()
        try:
            await asyncio.to_thread(self.ledger.close)
        except Exception as exc:  # the database went away: our lease simply expires
            problem = database_problem(exc, self.settings)
            if problem is None:
                raise
            log.warning(
                "could not leave the database cleanly; this process's lease expires",
                extra={"error": str(problem)},
            )

    @property
    def defaults(self) -> Defaults:
        s = self.settings
        return Defaults(size=s.default_size, quality=s.default_quality, model=s.model)

    # -- what adapters call: one job is one `submit` ------------------------------------------

    async def submit(
        self, request: ImageRequest, who: Requester, view: JobView
    ) -> JobResult | JobFailure | None:
        """Run one job for `who`, shown by `view` (bot/jobs/runner.py JobRunner.submit)."""
        return await self.runner.submit(request, who, view)

    async def act(
        self,
        key: str,
        who: Requester,
        view: JobView,
        store: ImageStore,
        *,
        instruction: str = "",
        platform_admin: bool = False,
    ) -> None:
        """A result button (`Button.key`) pressed by `who`, by the rules of a click (bot/policy/clicks.py): a new
        job of theirs (their quota, the price check), or Delete (the requester or an admin). Refusals (expired, another's image, the access rules) go to
        `view.refused`."""
        try:
            kind, job_id, index = actions.parse_key(key)
            if kind == actions.Kind.INFO:  # the job's card: renders nothing; a blocked person still sees none
                await self.may_render(who, None, person=False)
                found = await card.card(self.ledger, who, job_id, admin=self.is_admin(who, platform_admin))
                # `refused` is the view's private word to the clicker: the card goes there.
                await view.refused(texts.job_card(found))
                return
            deleting, admin = kind == actions.Kind.REMOVE, self.is_admin(who, platform_admin)
            if clicks.access_applies(deleting=deleting, admin=admin):
                await self.may_render(who, view)
            oldest = self.ledger.clock() - timedelta(days=self.settings.actions_days)
            record = await self.ledger.run_db(lambda db: actions.load_job(db, job_id, oldest))
            if not clicks.same_tenant(record.who, who):
                raise UserError(texts.EXPIRED_BUTTON)
            metrics.ACTIONS.labels(who.platform, str(kind)).inc()
            image = clicks.clicked_image(
                record.images, index, record.request.count, rerolling=kind == actions.Kind.REROLL
            )
            if deleting:
                assert image is not None
                if not clicks.may_delete(record.who, who, admin=admin):
                    raise UserError(texts.DELETE_REFUSED)
                await store.delete(image["where"])
                await self.ledger.run_db(lambda db: actions.mark_deleted(db, job_id, index))
                return
            base = None
            if image is not None:
                data = await store.fetch(image["where"])
                base = await asyncio.to_thread(load_image, f"image-{index}.{image['format']}", data)
            request = actions.derive(kind, record, base, instruction, self.prices)
        except UserError as exc:
            await view.refused(exc.text)
            return
        await self.submit(request, who, view)

    async def price_check(self, token: str, who: Requester, view: JobView, *, render: bool) -> None:
        """Render or Cancel on a price check: Render submits the stored request (once, within 10 minutes)."""
        now = self.ledger.clock()
        try:
            request = await self.ledger.run_db(
                lambda db: actions.claim_confirmation(db, token, who, now, render)
            )
        except UserError as exc:
            await view.refused(exc.text)
            return
        if request is None:
            await view.refused(texts.CONFIRM_CANCELLED)
            return
        await self.runner.submit(request, who, view, confirmed=True)

    def cancel(self, job_id: str, who: Requester) -> bool:
        """`who` pressed Cancel on a job: stops its unfinished images if it is theirs (same tenant, same user).
        A relax job's cancel tells its requester, privately, what it does (bot/jobs/relax.py `Relax.cancel`)."""
        waiting = self.relax.live.get(job_id)
        if waiting is None:
            return self.runner.cancel(job_id, who)
        mine = waiting.job.requester
        if (mine.platform, mine.workspace, mine.user) != (who.platform, who.workspace, who.user):
            return False

        async def cancel_and_say() -> None:
            said = await self.relax.cancel(job_id)
            if said:
                await self.delivery.safe(waiting.view.refused(said))

        self._tasks.add(task := asyncio.create_task(cancel_and_say()))
        task.add_done_callback(self._tasks.discard)
        return True

    def acking(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Around an adapter's ack: jobs start once a burst of commands has been acknowledged."""
        return self.runner.acks.acking()

    async def calm(self) -> None:
        """Wait until a burst of commands has been acknowledged: work after an ack starts here."""
        await self.runner.acks.calm()

    async def first_time(self, key: str) -> bool:
        """True the first time a platform event (or message) key is seen, across processes and restarts."""
        return not await self.ledger.seen(key)

    async def preferences(self, who: Requester) -> Preferences:
        """`who`'s own defaults in their tenant (/imagine-settings); the language among them is what the words
        they are told should be in."""
        tenant = Tenant.of(who).key
        stored = await self.ledger.read_db(lambda db: people.load_settings(db, tenant, who.user))
        return Preferences.from_stored(stored)

    async def set_preferences(self, who: Requester, text: str) -> Preferences:
        """Change `who`'s defaults by the words of `/imagine-settings` (bot/policy/preferences.py): all of them
        or, on any bad word, none (UserError naming the valid settings and values). Returns them as saved."""
        changes = preferences.parse_changes(text, self.prices, self.settings.model)
        tenant = Tenant.of(who).key

        def write(db: Any) -> Preferences:
            current = Preferences.from_stored(people.load_settings(db, tenant, who.user))
            chosen = preferences.changed(current, changes, self.defaults, self.prices)
            people.save_settings(db, tenant, who.user, list(chosen.stored().items()))
            return chosen

        return await self.ledger.run_db(write)

    async def defaults_for(self, who: Requester) -> Defaults:
        """The defaults of `who`'s requests: the operators', with `who`'s own on top."""
        return (await self.preferences(who)).over(self.defaults)

    async def parse_for(
        self,
        who: Requester,
        text: str,
        references: Sequence[ImageInput] = (),
        mask: ImageInput | None = None,
        **options: str | int | None,
    ) -> ImageRequest:
        """`parse`, with `who`'s own defaults filling in what the request leaves unsaid (flags and typed options
        always win; the channel's rules then apply to the result as to a typed value)."""
        return parse_request(
            text,
            prices=self.prices,
            defaults=await self.defaults_for(who),
            references=references,
            mask=mask,
            options=options,
        )

    def parse(
        self,
        text: str,
        references: Sequence[ImageInput] = (),
        mask: ImageInput | None = None,
        **options: str | int | None,
    ) -> ImageRequest:
        """`/imagine` text (plus decoded images, plus any typed options a platform has, by flag name) -> a
        validated request. Raises UserError."""
        return parse_request(
            text,
            prices=self.prices,
            defaults=self.defaults,
            references=references,
            mask=mask,
            options=options,
        )

    async def language(self, who: Requester, platform_locale: str | None = None) -> str:
        """The language to speak to `who` in (bot/i18n.py: `en` or `zh-CN`): their own `language` setting,
        else their platform's locale as the adapter read it (Discord's `interaction.locale`, Slack's
        `users.info` locale), else English. Every adapter asks here, so the setting is read in one place."""
        setting = (await self.preferences(who)).language  # /imagine-settings language=
        return i18n.language_for(setting, platform_locale)

    @property
    def access(self) -> Access:
        return self.runner.access

    async def may_render(self, who: Requester, standing: Standing | None, *, person: bool = True) -> None:
        """The place and person rules of bot/policy/access.py for `who` (UserError if refused), without a request:
        before a click fetches an image, before an edit form opens. `person=False`: only the place and a
        block (for commands that render nothing, such as /imagine-usage)."""
        rules = access.Rules.of(await self.ledger.settings.place(**access.where(who)))
        self.access.check_place(who, rules)
        if person:
            await self.access.check_person(who, rules, standing)
        elif rules.blocked(who.user) and not self.is_operator(who):
            raise UserError(msg("app.blocked"))

    def downloading(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Around one file's download (every adapter's `download`; `decode_attachments` holds it over the decode
        too): at most IMAGEBOT_MAX_DOWNLOADS files at once in this process, the rest wait their turn (FIFO)."""
        return self._downloads.hold()

    def check_attachments(
        self, text: str, files: Sequence[Attachment], *, base: bool = False, model: str | None = None
    ) -> None:
        """Before any download: how many images (with `base`, the image replied to), at most one mask, and
        each file's declared size. UserError naming the rule, as the request's own checks would say it later."""
        masks = [f.name for f in files if is_mask_name(f.name)]
        if len(masks) > 1:
            raise UserError(msg("app.two_masks", first=masks[0], second=masks[1]))
        chosen = model or split_flags(text)[1].get("model") or self.settings.model
        if chosen in self.prices.models:
            capabilities = self.prices.model(chosen).capabilities
            check_image_count(chosen, capabilities, len(files) - len(masks) + int(base), bool(masks))
        for f in files:
            if f.size is not None and f.size > MAX_FILE_BYTES:
                raise too_large(f.name)

    async def from_message(
        self,
        who: Requester,
        view: JobView,
        text: str,
        files: Sequence[Attachment],
        *,
        base: Callable[[], Awaitable[ImageInput | None]] | None = None,
        base_known: bool = False,
    ) -> JobResult | JobFailure | None:
        """A message that asks for an image, as plain data (docs/rules.md §2): a mention with its attachments (a
        new image, or a fusion of them), or a reply to one of the bot's images (an edit of `base`, put first).
        The one order on every platform, so that nothing is downloaded that could only be refused: the place
        and person rules; then the attachments that are images, counted (with `base` when `base_known`: it is
        sure to exist; an image the platform may not find is not counted) and each declared size checked; only
        then `base()` and the attachments are fetched and decoded; then the request is parsed and submitted.
        A refusal before the job is a UserError (the adapter tells the requester privately); `files`' fetches
        raise UserError in the platform's own words."""
        await self.may_render(who, view)  # before any download: a refusal costs nothing at all
        images = [f for f in files if is_image_attachment(f.name, f.mime)]
        self.check_attachments(text, images, base=base_known)  # counted, sizes checked: before any download
        first = await base() if base is not None else None
        references, mask = await decode_attachments(images, base=first, slot=self.downloading)
        request = await self.parse_for(who, text, references, mask)
        return await self.submit(request, who, view)

    def is_operator(self, who: Requester) -> bool:
        """An operator (IMAGEBOT_ADMINS; whoever runs the console or the CLI): bot/policy/access.py's rule."""
        return self.access.is_operator(who)

    def is_admin(self, who: Requester | str, platform_admin: bool = False) -> bool:
        """May use /imagine-admin at all: an operator, or a tenant admin (the adapter's `platform_admin`: Slack
        workspace admin/owner, Discord Manage Server). What each may do is bot/commands.py's rule. Given a bare
        user id (no platform), only bare IMAGEBOT_ADMINS entries can match."""
        if isinstance(who, str):
            return platform_admin or who in self.settings.admins
        return platform_admin or self.is_operator(who)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def is_image_attachment(name: str | None, content_type: str | None) -> bool:
    """An attached file the bot treats as an image on every platform: an image/* type, or an image file name.
    (Which formats it can use is decided when it is decoded, with an error that names them.)"""
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind.startswith("image/") or (name or "").lower().endswith(IMAGE_EXTENSIONS)


def is_mask_name(name: str) -> bool:
    """An attached PNG whose file name contains `mask` is the mask (docs/rules.md §2)."""
    return "mask" in name.lower() and name.lower().endswith(".png")


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to a message, before any download: its name, the size its platform declares (None if it
    declares none), how to fetch its bytes (the adapter's download, which takes a `Core.downloading` slot) and
    its declared type (None if none: `is_image_attachment` then goes by the name)."""

    name: str
    size: int | None
    fetch: Callable[[], Awaitable[bytes]]
    mime: str | None = None


async def decode_attachments(
    files: Sequence[Attachment],
    base: ImageInput | None = None,
    *,
    slot: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> tuple[list[ImageInput], ImageInput | None]:
    """Download the attachments (all asked at once) and decode each off the loop inside the same download slot
    (`Core.downloading`), so a slot bounds a file's bytes and its pixels together; split out the mask; put `base`
    first. The first failure stops the other downloads. Call `Core.check_attachments` first: nothing should be
    downloaded that the count or a size would refuse."""

    async def one(file: Attachment) -> ImageInput:
        async with slot() if slot is not None else contextlib.nullcontext():
            data = await file.fetch()
            return await asyncio.to_thread(load_image, file.name, data)

    tasks = [asyncio.ensure_future(one(f)) for f in files]
    try:
        if tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        images = [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
    references: list[ImageInput] = [base] if base is not None else []
    mask: ImageInput | None = None
    for file, image in zip(files, images, strict=True):
        if is_mask_name(file.name):
            mask = image
        else:
            references.append(image)
    return references, mask
