"""Relax mode (docs/rules.md §11) through the real core, the OpenAI SDK and the offline server's Batch API: jobs
gathered into one batch, settled at the batch price from each line's usage, delivered once (also after a
restart), line errors and expired batches released, cancels, quotas at the batch price."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot import commands
from bot.app import Core
from bot.config import Settings
from bot.jobs import texts
from bot.jobs.relax import EDITS, GENERATIONS, batch_body, batch_line
from bot.model.pricing import Usage, batch_price, cost_micros, format_usd, load_prices
from bot.model.request import Requester
from bot.offline import OfflineImageServer
from tests import dbs
from tests.support.core import ADMIN, ALICE, BOB, Store, admin_chat, assert_counters_match_ledger, rows
from tests.support.core import AccessView as View
from tests.support.waits import until

FAST_ENV = {
    "IMAGEBOT_OFFLINE": "1",
    "IMAGEBOT_OFFLINE_LATENCY": "0.05",
    "IMAGEBOT_PROGRESS_INTERVAL": "0.05",
    "IMAGEBOT_API_TIMEOUT": "5",
    "IMAGEBOT_BATCH_WINDOW": "0.2",
    "IMAGEBOT_BATCH_POLL": "0.1",
}
StartCore = Callable[..., Awaitable[Core]]
CAROL = Requester("slack", "W1", "C1", "U3")  # the marker: a later job whose delivery shows time has passed


@pytest.fixture
def server_options() -> dict[str, Any]:
    return {"latency": 0.05, "batch_latency": 0.4}


@pytest.fixture
async def start(db_target: str, server: OfflineImageServer) -> AsyncIterator[StartCore]:
    cores: list[Core] = []

    async def make(**env: str) -> Core:
        environ = {"IMAGEBOT_DB": db_target, **FAST_ENV, **env}
        core = await Core.start(Settings.load(environ=environ, env_file=None), offline_server=server)
        cores.append(core)
        return core

    yield make
    for core in cores:
        await core.close()


async def a_later_batch_delivered(core: Core, server: OfflineImageServer) -> None:
    """A positive signal for a negative check: a later relax job (CAROL's) is batched, polled and delivered,
    so the poller has gone round several times since every earlier batch ended. Its row is CAROL's."""
    server.batch_latency = 0.1
    marker = View()
    await core.submit(core.parse("a marker --relax --size 1024x1024 --quality low"), CAROL, marker)
    await until(lambda: bool(marker.delivered), timeout=15)


async def relax(core: Core, text: str = "a fox", who: Requester = ALICE) -> View:
    """`text` as a small relax job (1024x1024, low) from `who`; the view it is answered in."""
    view = View()
    await core.submit(core.parse(f"{text} --relax --size 1024x1024 --quality low"), who, view)
    return view


async def settled(view: View, core: Core) -> None:
    """Until the job is delivered or has failed, and its rows say so: the view hears of the images before the
    rows record their delivery (a moment later)."""
    await until(lambda: bool(view.delivered or view.failures), timeout=15)
    await until(lambda: not rows(core, "status IN ('reserved', 'running', 'rendered')"))


async def relax_after_fault(
    start: StartCore, server: OfflineImageServer, fault: str, text: str
) -> tuple[Core, View]:
    """A fresh core's relax job, with `fault` queued on the offline server first, once it has settled."""
    core = await start()
    server.push_faults(fault)
    view = await relax(core, text)
    await settled(view, core)
    return core, view


async def batch_in_flight(
    start: StartCore, server: OfflineImageServer, latency: float, text: str = "a fox"
) -> tuple[Core, View]:
    """A relax job whose batch takes `latency` seconds, once the batch is recorded with its id."""
    server.batch_latency = latency
    core = await start()
    view = await relax(core, text)
    await until(lambda: any(b["id"] for b in batch_rows(core)))
    return core, view


def batches_created(server: OfflineImageServer) -> int:
    return sum(1 for method, path in server.batch_calls if method == "POST" and path == "/v1/batches")


async def test_two_users_relax_jobs_share_one_batch_and_are_settled_at_the_batch_price(
    start: StartCore, server: OfflineImageServer
) -> None:
    core = await start()
    alice, bob, fast = View(), View(), View()
    await asyncio.gather(
        core.submit(core.parse("a fox --relax --size 1024x1024 --quality low"), ALICE, alice),
        core.submit(core.parse("a crow --relax --size 1024x1024 --quality low"), BOB, bob),
    )
    assert not alice.delivered and alice.opened  # the message is open; the image comes later
    await until(lambda: bool(alice.delivered and bob.delivered))
    assert batches_created(server) == 1 and server.calls == []  # no synchronous image call at all
    await core.submit(core.parse("a fox --size 1024x1024 --quality low"), ALICE, fast)
    relax_rows = [r for r in rows(core) if r["mode"] == "relax"]
    fast_row = next(r for r in rows(core) if r["mode"] == "fast")
    assert len(relax_rows) == 2 and all(r["status"] == "delivered" for r in relax_rows)
    prices = load_prices().model("gpt-image-2")
    for row in relax_rows:  # settled from each line's usage at the batch price, within the reservation
        usage = Usage(row["text_tokens"], row["image_tokens"], row["output_tokens"])
        assert (
            row["actual_micros"] == batch_price(cost_micros(prices, usage), prices) <= row["reserved_micros"]
        )
    alices = next(r for r in relax_rows if r["user"] == "U1")  # the same request as the fast one
    assert alices["reserved_micros"] == batch_price(fast_row["reserved_micros"], prices)
    image = alice.delivered[0].images[0]
    assert (image.width, image.height) == (1024, 1024)
    assert "relax, half price" in alice.delivered[0].request.notes
    assert_counters_match_ledger(core)
    # The usage report shows relax and fast spend apart.
    report = (await commands.usage(core, ALICE, "")).text
    assert "relax" in report


async def test_a_restart_while_the_batch_runs_delivers_once_from_the_new_process(
    start: StartCore, server: OfflineImageServer
) -> None:
    server.batch_latency = 1.0
    first = await start()
    view = View()
    await first.submit(
        core_request(first, "a lighthouse --relax --size 1024x1024 --quality low"), ALICE, view
    )
    await until(lambda: any(r["status"] == "batched" for r in rows(first)))
    await first.close()  # the bot goes away mid-batch
    second = await start()
    rebuilt: list[tuple[Requester, dict[str, Any], View]] = []

    def view_for(who: Requester, context: dict[str, Any]) -> View:
        rebuilt.append((who, context, View()))
        return rebuilt[-1][2]

    second.places.serve({"slack": SimpleNamespace(view_for=view_for)})
    await until(lambda: bool(rebuilt and rebuilt[0][2].delivered))
    await a_later_batch_delivered(second, server)  # more polls: nothing is delivered twice
    assert len(rebuilt) == 1 and rebuilt[0][0] == ALICE and not view.delivered
    assert len(rebuilt[0][2].delivered) == 1
    (row,) = rows(second, '"user"=?', ("U1",))
    assert row["status"] == "delivered" and row["actual_micros"] > 0
    assert_counters_match_ledger(second)


def core_request(core: Core, text: str) -> Any:
    return core.parse(text)


async def test_a_line_error_is_released_and_the_rest_delivered(
    start: StartCore, server: OfflineImageServer
) -> None:
    core, view = await relax_after_fault(start, server, "line_error", "two foxes --count 2")
    assert len(view.delivered[0].images) == 1
    statuses = sorted(r["status"] for r in rows(core))
    assert statuses == ["delivered", "failed"]
    assert next(r for r in rows(core) if r["status"] == "failed")["actual_micros"] == 0
    assert_counters_match_ledger(core)


async def test_an_expired_batch_releases_what_was_never_rendered(
    start: StartCore, server: OfflineImageServer
) -> None:
    core, view = await relax_after_fault(start, server, "batch_expired", "foxes --count 2")
    failed = [r for r in rows(core) if r["status"] == "failed"]
    assert failed and all(r["actual_micros"] == 0 and "batch_expired" in r["error"] for r in failed)
    assert_counters_match_ledger(core)


async def test_cancel_before_the_batch_is_sent_releases_everything(
    start: StartCore, server: OfflineImageServer
) -> None:
    core = await start(IMAGEBOT_BATCH_WINDOW="5")
    view = await relax(core)
    job_id = rows(core)[0]["job_id"]
    assert not core.cancel(job_id, BOB)  # not Bob's
    assert core.cancel(job_id, ALICE)
    await until(lambda: bool(view.failures))
    assert "nothing was charged" in view.refusals[-1]
    assert rows(core)[0]["status"] == "cancelled" and rows(core)[0]["actual_micros"] == 0
    assert batches_created(server) == 0


async def test_cancel_of_a_job_alone_in_its_batch_cancels_the_batch(
    start: StartCore, server: OfflineImageServer
) -> None:
    server.batch_latency = 2.0
    core = await start()
    view = await relax(core)
    await until(lambda: rows(core)[0]["status"] == "batched")
    assert core.cancel(rows(core)[0]["job_id"], ALICE)
    await until(lambda: any("Cancelling the batch" in r for r in view.refusals))
    await until(lambda: rows(core)[0]["status"] != "batched", timeout=15)
    assert ("POST", f"/v1/batches/{json_batch_id(core)}/cancel") in server.batch_calls
    assert_counters_match_ledger(core)


async def test_cancel_of_a_job_sharing_its_batch_is_charged_and_not_posted(
    start: StartCore, server: OfflineImageServer
) -> None:
    server.batch_latency = 1.0
    core = await start()
    alice, bob = View(), View()
    await asyncio.gather(
        core.submit(core.parse("a fox --relax --size 1024x1024 --quality low"), ALICE, alice),
        core.submit(core.parse("a crow --relax --size 1024x1024 --quality low"), BOB, bob),
    )
    await until(lambda: all(r["status"] == "batched" for r in rows(core)) and len(rows(core)) == 2)
    alice_job = next(r["job_id"] for r in rows(core) if r["user"] == "U1")
    assert core.cancel(alice_job, ALICE)
    await until(lambda: any("cannot be withdrawn" in r for r in alice.refusals))
    await until(lambda: bool(bob.delivered), timeout=15)
    await until(lambda: rows(core, '"user"=?', ("U1",))[0]["status"] == "undelivered")  # her line is settled
    await a_later_batch_delivered(core, server)
    assert not alice.delivered
    alice_row = next(r for r in rows(core) if r["user"] == "U1")
    assert (
        alice_row["status"] == "undelivered" and alice_row["actual_micros"] > 0
    )  # charged: made, kept, not posted
    assert_counters_match_ledger(core)


def json_batch_id(core: Core) -> str:
    [(batch_id,)] = dbs.tuples(core.settings.db_path, "SELECT id FROM batches")
    return str(batch_id)


async def test_a_relax_job_is_refused_by_quota_at_its_batch_price(
    start: StartCore, server: OfflineImageServer
) -> None:
    core = await start()
    request = core.parse("a fox --size 1024x1024 --quality high")
    fast_price = core.runner.reservation(request, False)
    relax_price = core.runner.reservation(core.parse("a fox --relax --size 1024x1024 --quality high"), False)
    assert relax_price == batch_price(fast_price, load_prices().model("gpt-image-2")) < fast_price
    usd = f"{(relax_price + 1) / 1e6:.6f}"
    await admin_chat(core, ADMIN, f"quota <@U1> daily_usd={usd}", platform_admin=True)
    refused = View()
    await core.submit(request, ALICE, refused)  # fast: above the limit
    assert refused.refusals and "daily" in refused.refusals[0].lower()
    taken = View()
    await core.submit(core.parse("a fox --relax --size 1024x1024 --quality high"), ALICE, taken)
    assert not taken.refusals
    again = View()
    await core.submit(core.parse("a fox --relax --size 1024x1024 --quality high"), ALICE, again)
    assert again.refusals  # the second one no longer fits
    await until(lambda: bool(taken.delivered))
    assert_counters_match_ledger(core)


async def test_a_channel_default_makes_jobs_relax_and_fast_overrides_it(
    start: StartCore, server: OfflineImageServer
) -> None:
    core = await start()
    await admin_chat(core, ADMIN, "channel <#C1> relax=on", platform_admin=True)
    relaxed, fast = View(), View()
    await core.submit(core.parse("a fox --size 1024x1024 --quality low"), ALICE, relaxed)
    await core.submit(core.parse("a fox --fast --size 1024x1024 --quality low"), ALICE, fast)
    assert fast.delivered and not relaxed.delivered
    await until(lambda: bool(relaxed.delivered))
    assert sorted(r["mode"] for r in rows(core)) == ["fast", "relax"]
    # A button on a relax image keeps its mode.
    store = Store()
    store.keep(relaxed.delivered[0])
    reroll = next(b for b in relaxed.delivered[0].buttons if b.kind == "reroll")
    clicked = View()
    await core.act(reroll.key, ALICE, clicked, store)
    await until(lambda: bool(clicked.delivered))
    assert rows(core)[-1]["mode"] == "relax"


async def test_an_edit_goes_through_file_ids(start: StartCore, server: OfflineImageServer) -> None:
    core = await start()
    first = View()
    await core.submit(core.parse("a fox --size 1024x1024 --quality low"), ALICE, first)
    store = Store()
    store.keep(first.delivered[0])
    vary = next(b for b in first.delivered[0].buttons if b.kind == "vary")
    relaxed = View()
    await core.act(vary.key, ALICE, relaxed, store)  # a fast image's button stays fast...
    assert relaxed.delivered
    edit = core.parse("make it blue --relax", references=[_image(first)])
    done = View()
    await core.submit(edit, ALICE, done)
    await until(lambda: bool(done.delivered))
    uploads = [path for method, path in server.batch_calls if method == "POST" and path == "/v1/files"]
    assert len(uploads) == 2  # the image (purpose vision), then the JSONL (purpose batch)
    api = server.batch_api
    (batch,) = list(api.batches.values())
    assert batch.endpoint == EDITS


def _tiny() -> Any:
    import io

    from PIL import Image as Pillow

    from bot.model.images import load_image

    data = io.BytesIO()
    Pillow.new("RGB", (64, 64), "red").save(data, "PNG")
    return load_image("ref.png", data.getvalue())


def _image(view: View) -> Any:
    from bot.model.images import load_image

    image = view.delivered[0].images[0]
    return load_image(image.filename, image.data)


def test_batch_lines_match_the_official_request_schema() -> None:
    """Field names and types of the Images API's request bodies and of a batch input line, from the official
    OpenAPI description (openai/openai-openapi: CreateImageRequest, EditImageBodyJsonParam with ImageRefParam,
    BatchRequestInput), checked in below as an excerpt."""
    schema = json.loads((Path(__file__).parent / "openapi_images_excerpt.json").read_text())
    prices = load_prices()
    from bot.model.request import parse_request

    generation = parse_request("a fox --size 1536x1024 --quality high --format webp", prices=prices)
    edit_request = parse_request("make it blue --format png", prices=prices, references=[_tiny()])
    bodies = {
        GENERATIONS: batch_body(generation),
        EDITS: batch_body(edit_request, ["file-abc", "file-def"], "file-mask"),
    }
    for endpoint, body in bodies.items():
        spec = schema["CreateImageRequest" if endpoint == GENERATIONS else "EditImageBodyJsonParam"]
        line = batch_line("job1", 0, endpoint, body)
        assert set(line) == set(schema["BatchRequestInput"]["properties"]) | {"body"}
        assert line["method"] in schema["BatchRequestInput"]["properties"]["method"]["enum"]
        assert set(spec["required"]) <= set(body)
        for name, value in body.items():
            assert name in spec["properties"], (endpoint, name)
            kind = spec["properties"][name]["type"]
            assert isinstance(value, {"string": str, "integer": int, "array": list, "object": dict}[kind]), (
                name
            )
            if "enum" in spec["properties"][name]:
                assert value in spec["properties"][name]["enum"], (name, value)
        if endpoint == EDITS:
            ref = schema["ImageRefParam"]["properties"]
            for image in body["images"] + [body["mask"]]:
                assert set(image) <= set(ref) and isinstance(image["file_id"], str)


async def test_the_same_job_in_relax_mode_costs_half(start: StartCore, server: OfflineImageServer) -> None:
    """The same request, relax then fast: the same usage, and the relax row is charged the batch price."""
    core = await start()
    relaxed, fast = View(), View()
    await core.submit(core.parse("a fox --relax --size 1024x1024 --quality low"), ALICE, relaxed)
    await until(lambda: bool(relaxed.delivered))
    await core.submit(core.parse("a fox --size 1024x1024 --quality low"), ALICE, fast)
    relax_row, fast_row = rows(core)
    columns = ("text_tokens", "image_tokens", "output_tokens")
    assert [relax_row[c] for c in columns] == [fast_row[c] for c in columns]
    prices = load_prices().model("gpt-image-2")
    assert relax_row["actual_micros"] == batch_price(fast_row["actual_micros"], prices)
    assert relax_row["reserved_micros"] == batch_price(fast_row["reserved_micros"], prices)
    for row in (relax_row, fast_row):  # shown in the closing note
        print(
            {
                k: row[k]
                for k in ("mode", "status", "size", "quality", *columns, "reserved_micros", "actual_micros")
            }
        )


async def test_a_terminal_waits_for_its_relax_job(start: StartCore, server: OfflineImageServer) -> None:
    """`imagebot imagine --relax` has no thread to come back to: the command returns with the image."""
    core = await start()
    view = View()
    await core.submit(
        core.parse("a fox --relax --size 1024x1024 --quality low"), Requester("cli", "local", "", "cli"), view
    )
    assert view.delivered and "relax, half price" in view.delivered[0].request.notes
    assert rows(core)[0]["mode"] == "relax"


# --- batches with a key: a lost answer, a vanished batch, a cancel while sending (docs/rules.md §11) -----------------


def batch_rows(core: Core) -> list[dict[str, Any]]:
    return dbs.read(core.settings.db_path, "SELECT * FROM batches")


def gets_of(server: OfflineImageServer, batch_id: str) -> int:
    return sum(1 for call in server.batch_calls if call == ("GET", f"/v1/batches/{batch_id}"))


def lists(server: OfflineImageServer) -> int:
    return sum(1 for call in server.batch_calls if call == ("GET", "/v1/batches"))


async def test_a_lost_answer_to_the_batch_creation_finds_the_batch_by_its_key(
    start: StartCore, server: OfflineImageServer
) -> None:
    """The batch is created but the answer to POST /v1/batches never arrives: the job is not released; its
    batch is found by the key in its metadata, polled, settled and delivered."""
    core, view = await relax_after_fault(start, server, "batch_dropped", "a fox")
    assert not view.failures, view.failures[0].message
    (batch,) = list(server.batch_api.batches.values())
    assert batch.metadata is not None and batches_created(server) == 1 and lists(server) >= 1
    (row,) = batch_rows(core)
    assert row["id"] == batch.id and row["key"] == batch.metadata["imagebot_key"]
    (line,) = rows(core)
    assert line["status"] == "delivered" and 0 < line["actual_micros"] <= line["reserved_micros"]
    assert_counters_match_ledger(core)


async def test_a_500_from_the_batch_creation_releases_the_job_once_its_key_is_not_found(
    start: StartCore, server: OfflineImageServer
) -> None:
    core, view = await relax_after_fault(start, server, "batch_500", "a fox")
    assert view.failures and "Nothing was charged" in texts.summary(view.failures[0])
    assert "never took the job" in view.failures[0].message
    assert lists(server) >= 1  # looked for by its key before giving up
    (line,) = rows(core)
    assert line["status"] == "cancelled" and line["actual_micros"] == 0
    assert not server.batch_api.batches
    assert all(b["finished_at"] for b in batch_rows(core))  # not polled any more
    assert_counters_match_ledger(core)


@pytest.mark.sqlite_only  # the fault is a SQLite trigger
async def test_a_database_error_while_recording_the_batch_is_resolved_by_its_key(
    start: StartCore, server: OfflineImageServer, db_target: str
) -> None:
    core = await start()
    target = core.settings.db_path
    fail = "SELECT RAISE(ABORT, 'disk I/O error (test)')"
    dbs.write(target, f"CREATE TRIGGER t1 BEFORE INSERT ON batches WHEN NEW.id IS NOT NULL BEGIN {fail}; END")
    dbs.write(
        target, f"CREATE TRIGGER t2 BEFORE UPDATE OF id ON batches WHEN NEW.id IS NOT NULL BEGIN {fail}; END"
    )
    view = await relax(core)
    await until(lambda: [b.status for b in server.batch_api.batches.values()] == ["completed"])
    dbs.write(target, "DROP TRIGGER t1")
    dbs.write(target, "DROP TRIGGER t2")
    await settled(view, core)
    assert not view.failures, view.failures[0].message
    (line,) = rows(core)
    assert line["status"] == "delivered"
    assert [b["id"] for b in batch_rows(core)] == list(server.batch_api.batches)


async def test_one_vanished_batch_does_not_stop_the_delivery_of_the_others(
    start: StartCore, server: OfflineImageServer
) -> None:
    core, _ = await batch_in_flight(start, server, 1.0)
    server.batch_api.batches.clear()  # e.g. the offline server restarted: GET answers 404
    bob = await relax(core, "a crow", BOB)
    await until(lambda: bool(bob.delivered), timeout=15)
    # The view hears of the delivery first; its row says so once the delivery returns (a moment later).
    await until(lambda: next(r for r in rows(core) if r["user"] == "U2")["status"] == "delivered")


async def test_a_batch_that_can_no_longer_be_read_is_charged_as_possibly_billed_and_told(
    start: StartCore, server: OfflineImageServer
) -> None:
    core, view = await batch_in_flight(start, server, 2.0, "two foxes --count 2")
    (batch_id,) = list(server.batch_api.batches)
    server.batch_api.batches.clear()
    await settled(view, core)
    (failure,) = view.failures
    reserved = sum(r["reserved_micros"] for r in rows(core))
    assert batch_id in failure.message and "may have been billed" in failure.message
    assert failure.charged_micros == reserved and format_usd(reserved) in texts.summary(failure)
    assert [(r["status"], r["actual_micros"]) for r in rows(core)] == [
        ("possibly_billed", r["reserved_micros"]) for r in rows(core)
    ]
    assert_counters_match_ledger(core)
    seen = gets_of(server, batch_id)
    await a_later_batch_delivered(core, server)  # more polls: that batch is not asked for again
    assert gets_of(server, batch_id) == seen
    assert [bool(b["finished_at"]) for b in batch_rows(core) if b["id"] == batch_id] == [True]


async def test_a_batch_an_hour_past_its_window_is_settled_from_what_is_known(
    start: StartCore, server: OfflineImageServer
) -> None:
    core, view = await batch_in_flight(start, server, 600.0)
    (batch,) = list(server.batch_api.batches.values())
    batch.created_at -= 25 * 3600 + 60  # its 24 h window ended over an hour ago; it still says in_progress
    await settled(view, core)
    (failure,) = view.failures
    assert batch.id in failure.message and "may have been billed" in failure.message
    (line,) = rows(core)
    assert line["status"] == "possibly_billed" and line["actual_micros"] == line["reserved_micros"]
    assert_counters_match_ledger(core)


async def test_a_cancel_while_the_batch_is_being_sent_is_answered_and_cancels_it(
    start: StartCore, server: OfflineImageServer
) -> None:
    server.batch_latency = 2.0
    server.batch_api.create_delay = 0.5  # the cancel lands while POST /v1/batches is in flight
    core = await start()
    view = await relax(core)
    await until(lambda: ("POST", "/v1/batches") in server.batch_calls)
    assert core.cancel(rows(core)[0]["job_id"], ALICE)
    await until(lambda: bool(view.refusals), timeout=10)
    assert "Cancelling the batch" in view.refusals[-1]
    (batch_id,) = list(server.batch_api.batches)
    assert ("POST", f"/v1/batches/{batch_id}/cancel") in server.batch_calls
    await until(lambda: rows(core)[0]["status"] != "batched", timeout=15)
    assert_counters_match_ledger(core)


async def test_a_cancel_while_a_shared_batch_is_being_sent_is_not_posted(
    start: StartCore, server: OfflineImageServer
) -> None:
    server.batch_latency = 1.0
    server.batch_api.create_delay = 0.5
    core = await start()
    alice, bob = View(), View()
    await asyncio.gather(
        core.submit(core.parse("a fox --relax --size 1024x1024 --quality low"), ALICE, alice),
        core.submit(core.parse("a crow --relax --size 1024x1024 --quality low"), BOB, bob),
    )
    await until(lambda: ("POST", "/v1/batches") in server.batch_calls)
    assert core.cancel(next(r["job_id"] for r in rows(core) if r["user"] == "U1"), ALICE)
    await until(lambda: bool(alice.refusals), timeout=10)
    assert "cannot be withdrawn" in alice.refusals[-1]
    await until(lambda: bool(bob.delivered and alice.failures), timeout=15)
    assert not alice.delivered and "not posted" in alice.failures[0].message
    assert not any(path.endswith("/cancel") for _, path in server.batch_calls)
    assert_counters_match_ledger(core)


def test_an_open_batch_of_the_older_schema_keeps_its_lines_under_a_key(
    fresh_store: Callable[[], str],
) -> None:
    """The migration to batches with a key (SQLite `_v9_relax`, PostgreSQL version 2): an open batch keeps its
    id, gets it as its key, and its lines follow; a `submitting` batch has no id yet (several at once)."""
    import sqlite3

    import psycopg
    import sqlite_utils

    from bot.store import pg
    from bot.store import schema as store

    target = fresh_store()
    if pg.is_url(target):
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
            for statement in pg.SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (1, 'then')")
    else:
        old = sqlite_utils.Database(sqlite3.connect(target, isolation_level=None))
        store.migrate(old, 8)
        old.conn.close()
    dbs.write(
        target,
        "INSERT INTO batches (id, endpoint, status, created_at) VALUES ('batch_old', ?, 'in_progress', 'then')",
        [GENERATIONS],
    )
    dbs.write(target, "INSERT INTO batch_lines VALUES ('j:0', 'batch_old', 'j', 1, 'open')")
    store.connect(target).conn.close()
    store.connect(target).conn.close()  # a second process starting: nothing more to do
    assert [(b["key"], b["id"]) for b in dbs.read(target, "SELECT * FROM batches")] == [
        ("batch_old", "batch_old")
    ]
    assert [r["batch_key"] for r in dbs.read(target, "SELECT * FROM batch_lines")] == ["batch_old"]
    for key in ("k1", "k2"):
        dbs.write(
            target,
            "INSERT INTO batches (key, endpoint, status, created_at) VALUES (?, ?, 'submitting', 'now')",
            [key, GENERATIONS],
        )
    assert len(dbs.read(target, "SELECT * FROM batches WHERE id IS NULL")) == 2


# --- the repository (bot/store/batches.py), on both backends ------------------------------------------------


async def test_a_batch_is_found_by_its_key_and_takes_its_api_id_once(db_target: str) -> None:
    from datetime import UTC, datetime

    from bot.store.batches import Batches, Line
    from bot.store.ledger import Ledger

    ledger = Ledger(db_target)
    now = datetime.now(UTC)
    lines = [Line("j2:0", "j2", 7), Line("j1:1", "j1", 6), Line("j1:0", "j1", 5)]
    try:
        await ledger.run_db(
            lambda db: Batches(db).add_submitting(
                key="k1", endpoint=GENERATIONS, input_file_id="file-1", lines=lines, owner="me", now=now
            )
        )
        [sending] = await ledger.run_db(lambda db: Batches(db).open_batches())
        assert (sending.key, sending.id, sending.status, sending.owner, sending.name) == (
            "k1",
            None,
            "submitting",
            "me",
            "key k1",
        )
        assert abs((sending.created - now).total_seconds()) < 0.01
        adopted = [
            await ledger.run_db(
                lambda db, i=i: Batches(db).adopt(key="k1", batch_id=i, status="validating", now=now)
            )
            for i in ("batch_a", "batch_b")
        ]
        assert adopted == [True, False]  # a second answer (or a late lookup) never renames it
        [known] = await ledger.run_db(lambda db: Batches(db).open_batches())
        assert (known.id, known.status) == ("batch_a", "validating")
        found = await ledger.run_db(lambda db: Batches(db).lines("k1"))
        assert [(x.custom_id, x.row_id) for x in found] == [("j1:0", 5), ("j1:1", 6), ("j2:0", 7)]
        assert await ledger.run_db(lambda db: Batches(db).others_in_batch(key="k1", job_id="j1")) == 1
        await ledger.run_db(lambda db: Batches(db).finish(key="k1", now=now, status="not_created"))
        assert await ledger.run_db(lambda db: Batches(db).open_batches()) == []
        assert dbs.tuples(db_target, "SELECT status FROM batches WHERE key='k1'") == [("not_created",)]
    finally:
        ledger.close()


async def test_a_relax_job_is_recorded_once_and_claimed_for_delivery_once(db_target: str) -> None:
    from datetime import UTC, datetime, timedelta

    from bot.store.batches import Batches, Line
    from bot.store.ledger import Ledger

    ledger = Ledger(db_target)
    now = datetime.now(UTC)
    try:
        await ledger.run_db(
            lambda db: (
                Batches(db).add_job(job_id="j1", who=ALICE, submitted=now),
                Batches(db).add_job(job_id="j1", who=BOB, submitted=now + timedelta(seconds=1)),
                Batches(db).add_job(job_id="j2", who=BOB, submitted=now),
                Batches(db).add_submitting(
                    key="k1",
                    endpoint=GENERATIONS,
                    input_file_id="f",
                    lines=[Line("j1:0", "j1", 1), Line("j2:0", "j2", 2)],
                    owner="me",
                    now=now,
                ),
                Batches(db).discard("j2"),
            )
        )
        waiting = await ledger.run_db(lambda db: Batches(db).waiting_job("j1"))
        assert waiting is not None and (waiting.who, waiting.discard) == (ALICE, False)
        claims = [
            await ledger.run_db(lambda db, o=o: Batches(db).claim_delivery(job_id="j1", owner=o, now=now))
            for o in ("p1", "p2")
        ]
        assert claims == [True, False]
        assert await ledger.run_db(lambda db: Batches(db).waiting_job("j1")) is None
        assert await ledger.run_db(lambda db: Batches(db).undelivered_jobs("k1")) == 1
        other = await ledger.run_db(lambda db: Batches(db).waiting_job("j2"))
        assert other is not None and other.discard
    finally:
        ledger.close()
