"""Result actions and the price check in the core (bot/jobs/actions.py, Core.act, Core.price_check), through the
real runner, SQLite file and offline image server, with a recording view and an in-memory image store."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.app import Core
from bot.jobs import actions, texts
from bot.jobs.actions import Kind, parse_key, upscale_size
from bot.jobs.outcomes import JobResult
from bot.model.pricing import load_prices
from bot.model.request import Requester
from bot.model.sizes import SizeRule
from bot.offline import OfflineImageServer
from bot.policy.clicks import already_deleted
from tests import dbs
from tests.support import core as support
from tests.support.core import ALICE, BOB, MakeCore, Store, assert_counters_match_ledger, rows
from tests.support.core import ActionsView as View


async def first_job(core: Any, text: str = "a red fox --size 1536x1024 --quality low", **kw: Any) -> tuple:  # type: ignore[type-arg]
    view, store = View(), Store()
    result = await core.submit(core.parse(text), ALICE, view)
    assert isinstance(result, JobResult), (view.refusals, view.failures)
    store.keep(result)
    return result, view, store


def button(result: JobResult, kind: Kind, index: int = 1) -> actions.Button:
    return next(b for b in result.buttons if b.kind == kind and (b.index == index or kind == Kind.REROLL))


async def click(
    core: Core, store: Store, result: JobResult, kind: Kind, who: Requester = ALICE, **kw: Any
) -> View:
    """`who` clicks the `kind` button of `result` (kept in `store`); the view it is answered in."""
    view = View()
    await core.act(button(result, kind).key, who, view, store, **kw)
    return view


def image_server(core: Core) -> OfflineImageServer:
    """The offline image server the core renders against (its calls are what was asked of the API)."""
    assert core.offline_server is not None
    return core.offline_server


# --- pure rules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "bigger"),
    [
        ((1536, 1024), (3504, 2336)),
        ((1024, 1024), (2880, 2880)),
        ((1024, 1536), (2336, 3504)),
        ((3840, 2160), None),
        ((2880, 2880), None),
        ((2048, 1152), (3840, 2160)),
    ],
)
def test_upscale_is_the_largest_valid_size_of_the_same_shape(size: tuple[int, int], bigger: Any) -> None:
    found = upscale_size(*size)
    assert (None if found is None else (found.width, found.height)) == bigger
    if found is not None:
        assert found.width * size[1] == found.height * size[0]  # exactly the same aspect ratio
        assert SizeRule().problem(found.width, found.height) is None


def test_keys_are_short_and_read_back() -> None:
    key = actions.Button(Kind.UPSCALE, "0123456789abcdef", 4, "Upscale 4", 1).key
    assert len(key) <= 32 and parse_key(key) == (Kind.UPSCALE, "0123456789abcdef", 4)
    with pytest.raises(Exception, match="not one of imagebot's"):
        parse_key("nonsense")


# --- buttons and what each click does --------------------------------------------------------------------


async def test_a_finished_job_has_every_action_with_what_a_click_reserves(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_CONFIRM_USD="off")
    result, _, _ = await first_job(core, "two foxes --size 1536x1024 --quality low --count 2")
    labels = [b.label.split(" · ")[0] for b in result.buttons]
    assert labels == [
        "Re-roll",
        "Vary 1",
        "Upscale 1",
        "Vary 2",
        "Upscale 2",
        "Edit 1",
        "Delete 1",
        "Edit 2",
        "Delete 2",
        "Info",
    ]
    reroll = button(result, Kind.REROLL)
    assert reroll.cost_micros == core.runner.reservation(result.request, False)
    assert all(
        b.cost_micros and b.label.endswith(f"${b.cost_micros / 1e6:.4f}")
        for b in result.buttons
        if b.kind in (Kind.REROLL, Kind.VARY, Kind.UPSCALE)
    )


@pytest.mark.parametrize(
    ("kind", "size", "quality"),
    [
        (Kind.REROLL, (1536, 1024), "low"),
        (Kind.VARY, (1536, 1024), "low"),
        (Kind.UPSCALE, (3504, 2336), "high"),
        (Kind.EDIT, (1536, 1024), "low"),
    ],
)
async def test_each_action_is_a_new_job_of_whoever_clicked(
    make_core: MakeCore, kind: Kind, size: tuple[int, int], quality: str
) -> None:
    # An upscale draws a 3504x2336 image: on a busy machine that takes the offline server more than 1 s.
    core = await make_core(IMAGEBOT_CONFIRM_USD="off", IMAGEBOT_API_TIMEOUT="60")
    server = image_server(core)
    result, _, store = await first_job(core)
    bob_view = await click(core, store, result, kind, BOB, instruction="make it blue")

    [again] = bob_view.delivered
    assert (again.images[0].width, again.images[0].height) == size and again.request.quality == quality
    call = server.calls[-1]
    assert call.endpoint == ("generations" if kind == Kind.REROLL else "edits")
    if kind != Kind.REROLL:
        assert call.images == 1  # the clicked image is the base
        assert again.request.references[0].data == result.images[0].data
    if kind == Kind.EDIT:
        assert again.request.prompt == "make it blue"
    [bobs] = rows(core, '"user"=?', ("U2",))
    assert bobs["job_id"] == again.job_id and bobs["status"] == "delivered"  # Bob pays for Bob's click


async def test_delete_is_for_the_requester_or_an_admin(make_core: MakeCore) -> None:
    core = await make_core()
    result, _, store = await first_job(core)
    key = button(result, Kind.REMOVE).key
    bob_view = View()
    await core.act(key, BOB, bob_view, store)
    assert bob_view.refusals == [texts.DELETE_REFUSED] and store.deleted == []
    await core.act(key, BOB, View(), store, platform_admin=True)
    assert store.deleted == [{"job": result.job_id, "n": 0}]
    alice_view = View()
    await core.act(key, ALICE, alice_view, store)  # already gone: said so, nothing deleted twice
    assert alice_view.refusals == [already_deleted(1)] and len(store.deleted) == 1


async def test_an_expired_or_foreign_button_is_refused_privately(make_core: MakeCore) -> None:
    core = await make_core()
    result, _, store = await first_job(core)
    key = button(result, Kind.REROLL).key
    other_tenant = View()
    await core.act(key, Requester("slack", "T-other", "C1", "U1"), other_tenant, store)
    assert other_tenant.refusals == [texts.EXPIRED_BUTTON]
    old = (core.ledger.clock() - timedelta(days=31)).isoformat(timespec="milliseconds")
    dbs.write(core.settings.db_path, "UPDATE results SET created_at = ?", [old])
    late = View()
    await core.act(key, ALICE, late, store)
    assert late.refusals and "expired" in late.refusals[0] and late.delivered == []
    assert len(rows(core)) == 1  # nothing reserved for either


async def test_a_click_past_the_clickers_quota_is_refused_and_calls_nothing(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_USER_DAILY_IMAGES="1")
    server = image_server(core)
    result, _, store = await first_job(core)
    again = await click(core, store, result, Kind.REROLL)
    assert again.refusals and "daily images" in again.refusals[0] and len(server.calls) == 1


# --- the price check --------------------------------------------------------------------------------------


async def test_an_expensive_render_waits_for_render_and_reserves_nothing_until_then(
    make_core: MakeCore,
) -> None:
    core = await make_core(IMAGEBOT_CONFIRM_USD="0.10")
    server = image_server(core)
    view = View()
    request = core.parse("a fox --size 1024x1024 --quality high")
    assert await core.submit(request, ALICE, view) is None
    [(text, token)] = view.questions
    estimate = core.runner.reservation(request, False)
    assert f"${estimate / 1e6:.4f}" in text and rows(core) == [] and server.calls == []
    cheap = View()
    assert isinstance(
        await core.submit(core.parse("a fox --size 1024x1024 --quality low"), ALICE, cheap), JobResult
    )
    assert cheap.questions == []

    stranger = View()
    await core.price_check(token, BOB, stranger, render=True)
    assert stranger.refusals and "only the person" in stranger.refusals[0]
    await core.price_check(token, ALICE, view, render=True)
    [done] = view.delivered
    [row] = rows(core, "job_id=?", (done.job_id,))
    assert row["user"] == "U1" and row["reserved_micros"] == estimate  # exactly what the question said
    twice = View()
    await core.price_check(token, ALICE, twice, render=True)
    assert twice.refusals and "already" in twice.refusals[0]


async def test_cancel_costs_nothing_and_a_late_render_is_refused(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_CONFIRM_USD="0")
    view = View()
    await core.submit(core.parse("a fox --size 1024x1024 --quality low"), ALICE, view)
    await core.submit(core.parse("another fox --size 1024x1024 --quality low"), ALICE, view)
    (_, first), (_, second) = view.questions
    await core.price_check(first, ALICE, view, render=False)
    assert view.refusals == [texts.CONFIRM_CANCELLED]
    old = (core.ledger.clock() - timedelta(minutes=11)).isoformat(timespec="milliseconds")
    dbs.write(core.settings.db_path, "UPDATE confirmations SET created_at = ? WHERE token = ?", [old, second])
    await core.price_check(second, ALICE, view, render=True)
    assert "expired" in view.refusals[-1] and rows(core) == []


async def test_a_channel_sets_its_own_threshold(make_core: MakeCore) -> None:

    core = await make_core(IMAGEBOT_CONFIRM_USD="off", IMAGEBOT_ADMINS="U9")
    admin = Requester("slack", "W1", "C1", "U9")
    reply = await support.admin_chat(core, admin, "channel <#C1> confirm=0.001", platform_admin=False)
    assert "confirm" in reply.text, reply.text
    view = View()
    assert await core.submit(core.parse("a fox --size 1024x1024 --quality low"), ALICE, view) is None
    assert view.questions
    elsewhere = View()
    other = Requester("slack", "W1", "C2", "U1")
    assert isinstance(
        await core.submit(core.parse("a fox --size 1024x1024 --quality low"), other, elsewhere), JobResult
    )


async def test_views_that_cannot_ask_never_do(make_core: MakeCore) -> None:
    """The terminal: whoever typed the command pays directly, and there is nobody to press Render."""
    core = await make_core(IMAGEBOT_CONFIRM_USD="0")
    view = View(confirms=False)
    assert isinstance(
        await core.submit(core.parse("a fox --size 1024x1024 --quality low"), ALICE, view), JobResult
    )


def test_an_image_stored_as_a_blob_comes_back_identical(tmp_path: Any) -> None:
    import sqlite_utils

    from bot.model.images import load_image
    from bot.model.request import parse_request
    from bot.store import schema as store

    db = store.connect(tmp_path / "x.sqlite3")
    out = io.BytesIO()
    Image.new("RGB", (1024, 1024), "red").save(out, "PNG")
    ref = load_image("ref.png", out.getvalue())
    request = parse_request("blue --quality low", prices=load_prices(), references=[ref])
    again = actions.request_from(db, actions.request_json(db, request, "r:x"))
    assert again == request
    assert isinstance(db.utils, sqlite_utils.Database)  # type: ignore[attr-defined]


async def test_the_console_acts_on_the_last_jobs_images(
    make_core: MakeCore, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from adapters.console import handle_line

    core = await make_core(IMAGEBOT_API_TIMEOUT="60")  # its upscale draws a 3504x2336 image
    server = image_server(core)
    who = Requester("console", "local", "console", "console")
    assert await handle_line(core, "a red fox --size 1536x1024 --quality low", who, tmp_path) is None
    shown = capsys.readouterr().out
    assert (
        "/reroll ($" in shown
        and "/vary 1 ($" in shown
        and "/upscale 1 ($" in shown
        and "/edit 1 <instruction>" in shown
    )
    assert await handle_line(core, "/upscale 1", who, tmp_path) is None
    assert server.calls[-1].endpoint == "edits" and server.calls[-1].size == "3504x2336"
    assert await handle_line(core, "/edit 1 make it blue", who, tmp_path) is None
    assert server.calls[-1].prompt == "make it blue"
    written = sorted(p.name for p in tmp_path.iterdir())
    assert any("3504x2336" in name for name in written)
    assert await handle_line(core, "/delete 1", who, tmp_path) is None
    assert "Deleted." in capsys.readouterr().out
    assert "takes the image's number" in (await handle_line(core, "/vary x", who, tmp_path) or "")


async def test_flags_in_an_edit_instruction_work_as_in_a_message(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_CONFIRM_USD="off")
    result, _, store = await first_job(core, "a red fox --size 1536x1024 --quality low --format png")
    view = View()
    await core.act(
        button(result, Kind.EDIT).key, BOB, view, store, instruction="make it blue --quality medium"
    )
    [edit] = view.delivered
    assert (edit.request.prompt, edit.request.quality, edit.request.format) == (
        "make it blue",
        "medium",
        "png",
    )
    assert (edit.images[0].width, edit.images[0].height) == (1536, 1024)


async def test_an_empty_edit_instruction_is_refused_and_calls_nothing(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_CONFIRM_USD="off")
    server = image_server(core)
    result, _, store = await first_job(core)
    view = await click(core, store, result, Kind.EDIT, BOB, instruction="   ")
    assert view.refusals == ["the edit instruction is empty; say what to change, e.g. make the sky stormy"]
    assert len(server.calls) == 1 and len(rows(core)) == 1


CLICKERS = [ALICE, BOB, Requester("slack", "W1", "C2", "U3"), Requester("discord", "G9", "C1", "U1")]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    clicks=st.lists(
        st.tuples(
            st.sampled_from(range(len(CLICKERS))), st.sampled_from([Kind.REROLL, Kind.VARY, Kind.EDIT])
        ),
        min_size=1,
        max_size=5,
    ),
    daily_images=st.integers(1, 4),
)
def test_every_click_is_charged_to_its_clicker_within_their_limits(
    tmp_path_factory: pytest.TempPathFactory, clicks: list[tuple[int, Kind]], daily_images: int
) -> None:
    """Property: a click is the clicker's job (their ledger rows, their limits); another tenant's click is
    refused and costs nothing; the requester of the original image is never charged for anyone's click."""

    async def run() -> None:
        tmp = tmp_path_factory.mktemp("clicks")
        settings = support.offline_settings(
            str(tmp / "bot.sqlite3"),
            IMAGEBOT_OFFLINE_LATENCY="0.01",
            IMAGEBOT_API_TIMEOUT="360",  # the default
            IMAGEBOT_CONFIRM_USD="off",
            IMAGEBOT_USER_DAILY_IMAGES=str(daily_images),
        )
        core = await Core.start(settings)
        try:
            result, _, store = await first_job(core)
            expected = {ALICE.user: 1}
            for index, kind in clicks:
                who = CLICKERS[index]
                view = await click(core, store, result, kind, who, instruction="make it blue")
                if who.workspace != ALICE.workspace:
                    assert view.refusals == [texts.EXPIRED_BUTTON] and not view.delivered
                elif expected.get(who.user, 0) >= daily_images:
                    assert view.refusals and "daily images" in view.refusals[0] and not view.delivered
                else:
                    [done] = view.delivered
                    assert done.requester == who
                    expected[who.user] = expected.get(who.user, 0) + 1
            charged = {r["user"]: 0 for r in rows(core)}
            for r in rows(core):
                assert r["workspace"] == "W1" and r["status"] == "delivered"
                charged[r["user"]] += 1
            assert charged == expected
            assert_counters_match_ledger(core)
        finally:
            await core.close()

    asyncio.run(run())


# --- price checks are admitted before anything is stored; stored requests do not pile up (item 5) ------------


def noise_png(seed: int, side: int = 256) -> bytes:
    """A PNG that does not compress (so its blob is ~side*side*3 bytes), different for every seed."""
    import random

    rng = random.Random(seed)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)).save(out, "PNG")
    return out.getvalue()


def stored(core: Core) -> dict[str, int]:
    path = core.settings.db_path
    count = lambda table: int(dbs.tuples(path, f"SELECT COUNT(*) FROM {table}")[0][0])  # noqa: E731
    return {t: count(t) for t in ("blobs", "confirmations", "results")}


def with_images(core: Core, text: str, seed: int, n: int = 5) -> Any:
    from bot.model.images import load_image

    return core.parse(
        text, [load_image(f"ref{seed}-{i}.png", noise_png(seed * 10 + i, 64)) for i in range(n)]
    )


async def test_a_price_check_past_a_limit_or_in_a_cooldown_is_refused_at_once_and_stores_nothing(
    make_core: MakeCore,
) -> None:
    """Seen: 8 price checks by a user with cooldown 3600 s, max_jobs 1 and $0.01 a day wrote 40 blob rows and
    no ledger row. Each is now refused at once, as the job would be, naming the rule, and nothing is stored."""

    core = await make_core(IMAGEBOT_CONFIRM_USD="0.10", IMAGEBOT_USER_DAILY_USD="0.01", IMAGEBOT_ADMINS="U9")
    admin = Requester("slack", "W1", "C1", "U9")
    reply = await support.admin_chat(core, admin, "settings cooldown=3600 max_jobs=1", platform_admin=False)
    assert "cooldown" in reply.text, reply.text
    view = View()
    for seed in range(8):
        await core.submit(with_images(core, "a fox --size 1024x1024 --quality high", seed), ALICE, view)
    assert view.questions == [] and len(view.refusals) == 8, (len(view.questions), view.refusals[:1])
    assert all("daily spend limit is $0.0100" in r for r in view.refusals), view.refusals[0]
    assert stored(core) == {"blobs": 0, "confirmations": 0, "results": 0} and rows(core) == []

    # In a cooldown (after a cheap job that asked nothing), and at max_jobs (a job open): refused at once too.
    core = await make_core(IMAGEBOT_CONFIRM_USD="0.10", IMAGEBOT_USER_COOLDOWN="3600")
    cheap = View()
    assert isinstance(
        await core.submit(core.parse("a fox --quality low --size 1024x1024"), ALICE, cheap), JobResult
    )
    before = stored(core)
    late = View()
    await core.submit(with_images(core, "a fox --size 1024x1024 --quality high", 1), ALICE, late)
    assert late.questions == [] and "cooldown" in late.refusals[0] and stored(core) == before
    core = await make_core(IMAGEBOT_CONFIRM_USD="0.10", IMAGEBOT_USER_MAX_JOBS="1")
    await core.runner.prepare(core.parse("a fox --quality low --size 1024x1024"), ALICE, pace=None)
    busy = View()
    await core.submit(with_images(core, "a fox --size 1024x1024 --quality high", 2), ALICE, busy)
    assert busy.questions == [] and "max_jobs=1" in busy.refusals[0] and stored(core)["blobs"] == 0


async def test_a_user_has_at_most_three_pending_price_checks(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_CONFIRM_USD="0")
    view = View()
    for seed in range(4):
        await core.submit(with_images(core, "a fox --size 1024x1024 --quality low", seed, 1), ALICE, view)
    assert len(view.questions) == 3 and len(view.refusals) == 1, view.refusals
    assert "3 price checks" in view.refusals[0] and "at most 3" in view.refusals[0], view.refusals[0]
    assert "Nothing was charged" in view.refusals[0] and stored(core)["confirmations"] == 3
    # Someone else is not held up by them; and answering one makes room.
    other = View()
    await core.submit(with_images(core, "a fox --size 1024x1024 --quality low", 9, 1), BOB, other)
    assert len(other.questions) == 1
    await core.price_check(view.questions[0][1], ALICE, view, render=False)
    await core.submit(with_images(core, "a fox --size 1024x1024 --quality low", 5, 1), ALICE, view)
    assert len(view.questions) == 4


async def test_stored_requests_and_images_go_after_their_time(make_core: MakeCore) -> None:
    """Unanswered price checks go after an hour, results (and their input images) after
    IMAGEBOT_ACTIONS_DAYS; what is younger keeps working. The periodic sweep does it."""
    core = await make_core(IMAGEBOT_CONFIRM_USD="0.20", IMAGEBOT_ACTIONS_DAYS="2")
    start = core.ledger.clock()
    now = [start]
    core.ledger.clock = lambda: now[0]
    result, _, store = await first_job(core, "a red fox --size 1024x1024 --quality low")
    edit = View()
    edited = await core.submit(
        with_images(core, "make it blue --size 1024x1024 --quality low", 1, 2), ALICE, edit
    )
    assert isinstance(edited, JobResult), (edit.refusals, edit.questions)
    asking = View()
    await core.submit(with_images(core, "a fox --size 1024x1024 --quality high", 2, 3), ALICE, asking)
    [(_, token)] = asking.questions
    assert stored(core) == {"blobs": 5, "confirmations": 1, "results": 2}

    now[0] = start + timedelta(minutes=61)
    await core.ledger.heartbeat()  # the clock jumped past the lease: a live process renews it (a new one)
    await core.sweep()
    assert stored(core) == {"blobs": 2, "confirmations": 0, "results": 2}  # the edit's two images stay
    late = View()
    await core.price_check(token, ALICE, late, render=True)
    assert late.refusals and "no longer" in late.refusals[0] and "Nothing was charged" in late.refusals[0]
    again = await click(core, store, edited, Kind.REROLL)
    assert len(again.delivered) == 1  # a day old: its Re-roll still works, with its input images

    now[0] = start + timedelta(days=2, minutes=2)
    await core.ledger.heartbeat()
    await core.sweep()
    left = stored(core)
    assert left["blobs"] == 2 and left["results"] == 1  # the Re-roll's own job (a minute old) and its images
    expired = await click(core, store, result, Kind.REROLL)
    # Its result row was swept with the buttons' life (results: 1 left above): the job is no longer known.
    assert len(expired.refusals) == 1 and "not known here" in expired.refusals[0], expired.refusals


@pytest.mark.sqlite_only  # the file size is SQLite's
async def test_the_database_stops_growing_under_a_loop_of_price_checks(
    make_core: MakeCore, db_target: str
) -> None:
    """A user asks for price checks with new images every 20 minutes and never answers: the file grows until
    the first ones are an hour old, then stays the same size (freed pages are reused)."""
    import os
    import sqlite3

    core = await make_core(IMAGEBOT_CONFIRM_USD="0")
    start = core.ledger.clock()
    now = [start]
    core.ledger.clock = lambda: now[0]
    sizes = []
    for i in range(24):
        view = View()
        request = core.parse("a fox --size 1024x1024 --quality low", [load_ref(noise_png(i, 300))])
        await core.submit(request, ALICE, view)
        assert len(view.questions) == 1, view.refusals
        now[0] += timedelta(minutes=20)
        await core.sweep()
        with sqlite3.connect(db_target) as conn:  # as the next automatic checkpoint would
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sizes.append(os.path.getsize(db_target))
    assert stored(core)["blobs"] <= 3, stored(core)
    assert max(sizes[8:]) <= sizes[7], sizes  # nothing new after the first hours
    assert sizes[-1] < 6 * 300 * 300 * 3, sizes


def load_ref(data: bytes) -> Any:
    from bot.model.images import load_image

    return load_image("ref.png", data)


def test_images_stored_before_the_purge_existed_are_kept_while_held(tmp_path: Any) -> None:
    """A database from before blob_refs: the migration finds who holds each stored image, so the first purge
    deletes only what nobody holds."""
    import json as _json
    from datetime import UTC, datetime

    from bot.store import schema as store

    path = tmp_path / "old.sqlite3"
    import sqlite3

    import sqlite_utils

    conn = sqlite3.connect(str(path), isolation_level=None)
    old = sqlite_utils.Database(conn)
    store.migrate(old, 8)
    ref = {"name": "a.png", "sha256": "aa", "width": 1, "height": 1, "format": "png", "has_alpha": False}
    mask = {**ref, "sha256": "mm"}
    request = {"prompt": "p", "references": [ref], "mask": mask}
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    old.execute(
        "INSERT INTO results VALUES ('j1', 'slack', 'W1', 'C1', 'U1', ?, '[]', ?)",
        [_json.dumps(request), now],
    )
    for sha in ("aa", "mm", "orphan"):
        old.execute("INSERT INTO blobs VALUES (?, x'00')", [sha])
    conn.close()
    db = store.connect(path)
    assert sorted(db.execute("SELECT sha256, holder FROM blob_refs").fetchall()) == [
        ("aa", "r:j1"),
        ("mm", "r:j1"),
    ]
    with store.immediate(db):
        purged = actions.purge(db, datetime.now(UTC), 30)
    assert (purged.results, purged.blobs) == (0, 1)
    assert sorted(r[0] for r in db.execute("SELECT sha256 FROM blobs")) == ["aa", "mm"]


# --- the repository (bot/store/results.py), on both backends ------------------------------------------------


async def test_a_price_check_is_answered_once_and_lets_go_of_its_images(db_target: str) -> None:
    """Render or Cancel moves a pending check out of `pending` once; its request and image holds go at once, so
    the next sweep deletes an image nobody else holds, and one a result still holds stays."""
    from datetime import UTC, datetime

    from bot.store.ledger import Ledger
    from bot.store.results import Results

    ledger = Ledger(db_target)
    now = datetime.now(UTC)
    try:
        await ledger.run_db(
            lambda db: (
                Results(db).hold_blob(sha256="shared", data=b"s", holder="c:t1"),
                Results(db).hold_blob(sha256="shared", data=b"s", holder="r:j1"),
                Results(db).hold_blob(sha256="own", data=b"o", holder="c:t1"),
                Results(db).add_check(token="t1", who=ALICE, request='{"prompt": "p"}', created=now),
                Results(db).save(job_id="j1", who=ALICE, request='{"prompt": "q"}', created=now),
            )
        )
        answers = [
            await ledger.run_db(lambda db, r=render: Results(db).answer_check(token="t1", render=r))
            for render in (True, False, True)
        ]
        assert answers == [True, False, False]
        check = await ledger.run_db(lambda db: Results(db).get_check("t1"))
        assert check is not None and (check.state, check.request, check.who) == ("rendered", "{}", ALICE)

        early = now - timedelta(days=1)
        purged = await ledger.run_db(lambda db: Results(db).purge(results_before=early, checks_before=early))
        assert (purged.results, purged.confirmations, purged.blobs) == (0, 0, 1)
        blobs = await ledger.run_db(lambda db: (Results(db).blob("shared"), Results(db).blob("own")))
        assert blobs == (b"s", None)
    finally:
        ledger.close()


async def test_a_job_saved_again_is_replaced_and_only_jobs_with_images_are_acted_on(db_target: str) -> None:
    from datetime import UTC, datetime

    from bot.store.ledger import Ledger
    from bot.store.results import Results

    ledger = Ledger(db_target)
    now = datetime.now(UTC)
    elsewhere = Requester(ALICE.platform, ALICE.workspace, "C-other", ALICE.user)
    try:
        await ledger.run_db(
            lambda db: (
                Results(db).save(job_id="old", who=ALICE, request="{}", created=now - timedelta(minutes=2)),
                Results(db).set_images(job_id="old", images=[{"n": 0}]),
                Results(db).save(job_id="new", who=ALICE, request="{}", created=now - timedelta(minutes=1)),
                Results(db).set_images(job_id="new", images=[{"n": 1}]),
                Results(db).save(job_id="new", who=elsewhere, request='{"a": 1}', created=now),
            )
        )
        found = await ledger.run_db(lambda db: Results(db).get("new"))
        assert found is not None and (found.who, found.request, found.images) == (elsewhere, '{"a": 1}', ())
        latest = await ledger.run_db(lambda db: Results(db).latest_with_images(ALICE))
        assert latest == "old"  # "new" was saved again as it started: no images yet
        assert await ledger.run_db(lambda db: Results(db).latest_with_images(BOB)) is None
    finally:
        ledger.close()
