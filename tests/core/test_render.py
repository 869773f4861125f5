"""Our API client (bot.jobs.render.Renderer) against the offline server on loopback, fault by fault."""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from bot import metrics
from bot.errors import ApiRejected, ModerationRefused, ProviderError
from bot.jobs import texts
from bot.jobs.outcomes import JobFailure, JobResult, Progress
from bot.jobs.render import Renderer
from bot.model.images import load_image
from bot.model.pricing import format_usd, load_prices
from bot.model.request import Requester, parse_request
from bot.offline import OfflineImageServer
from tests import dbs


@pytest.fixture
async def renderer(server: OfflineImageServer) -> AsyncIterator[Renderer]:
    r = Renderer(base_url=server.base_url, api_key="test", timeout=0.8, max_retries=2)
    yield r
    await r.close()


def request(text: str = "a fox --size 1536x1024 --quality low", **kwargs):  # type: ignore[no-untyped-def]
    return parse_request(text, prices=load_prices(), **kwargs)


async def fails_after(
    renderer: Renderer, server: OfflineImageServer, faults: str, **render: Any
) -> ProviderError:
    """`faults` queued on the server, then one render (with `render`'s keywords): the ProviderError it raises."""
    server.push_faults(faults)
    with pytest.raises(ProviderError) as caught:
        await renderer.render(request(), **render)
    return caught.value


async def test_success_returns_the_image_its_size_usage_and_request_id(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    result = await renderer.render(request(), client_request_id="job-1")
    assert Image.open(io.BytesIO(result.data)).size == (1536, 1024) == (result.width, result.height)
    assert result.usage.output_tokens > 0 and result.attempts == 1 and result.lost_attempts == 0
    assert result.request_ids == (server.calls[0].request_id,)


async def test_a_500_is_retried_and_both_request_ids_are_kept(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    server.push_faults("500")
    result = await renderer.render(request())
    assert result.attempts == 2 and result.request_ids == tuple(c.request_id for c in server.calls)


async def test_5xx_always_gives_up_after_two_retries_with_every_request_id(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    failure = await fails_after(renderer, server, "502*")
    assert failure.attempts == 3 and len(failure.request_ids) == 3 and not failure.possibly_billed
    assert "HTTP 502" in str(failure) and failure.request_ids[0] in str(failure)


async def test_429_waits_for_retry_after(renderer: Renderer, server: OfflineImageServer) -> None:
    server.push_faults("429:1")
    started = time.monotonic()
    result = await renderer.render(request())
    assert result.attempts == 2
    assert time.monotonic() - started >= 0.9  # the SDK slept the Retry-After second before retrying


async def test_a_4xx_is_never_retried(renderer: Renderer, server: OfflineImageServer) -> None:
    server.push_faults("moderation")
    with pytest.raises(ModerationRefused) as caught:
        await renderer.render(request())
    assert len(server.calls) == 1 and caught.value.request_ids == (server.calls[0].request_id,)
    assert "safety system" in str(caught.value)


async def test_a_hang_times_out_and_may_have_been_billed(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    failure = await fails_after(renderer, server, "hang*", client_request_id="imagebot-job-0")
    assert failure.possibly_billed and failure.attempts == 3
    assert failure.request_ids == ("imagebot-job-0",)  # no answer: our client request id identifies it


async def test_a_hang_then_success_counts_the_lost_attempt(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    server.push_faults("hang")
    result = await renderer.render(request())
    assert result.attempts == 2 and result.lost_attempts == 1


async def test_previews_arrive_while_streaming(renderer: Renderer) -> None:
    previews: list[tuple[int, tuple[int, int]]] = []

    async def on_preview(data: bytes, index: int) -> None:
        previews.append((index, Image.open(io.BytesIO(data)).size))

    result = await renderer.render(request(), partials=2, on_preview=on_preview)
    assert [i for i, _ in previews] == [0, 1] and result.width == 1536


async def test_a_dropped_stream_is_retried_by_us(renderer: Renderer, server: OfflineImageServer) -> None:
    server.push_faults("drop")
    result = await renderer.render(request(), partials=1)
    assert result.attempts == 2 and result.lost_attempts == 1


async def test_a_stream_that_always_drops_is_possibly_billed(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    failure = await fails_after(renderer, server, "drop*", partials=1)
    assert failure.possibly_billed and "stream broke" in str(failure)


async def test_a_garbage_answer_is_possibly_billed(renderer: Renderer, server: OfflineImageServer) -> None:
    failure = await fails_after(renderer, server, "garbage")
    assert failure.possibly_billed and len(server.calls) == 1


async def test_an_edit_sends_references_and_mask(renderer: Renderer, server: OfflineImageServer) -> None:
    def png(mode: str) -> bytes:
        out = io.BytesIO()
        Image.new(mode, (1024, 1024), "white").save(out, "PNG")
        return out.getvalue()

    base, ref = load_image("base.png", png("RGB")), load_image("ref.png", png("RGB"))
    mask = load_image("mask.png", png("RGBA"))
    result = await renderer.render(request("make it blue --quality low", references=[base, ref], mask=mask))
    call = server.calls[-1]
    assert call.endpoint == "edits" and call.images == 2 and call.mask and result.usage.image_tokens > 0


async def test_an_invalid_request_the_api_rejects_is_a_user_error(renderer: Renderer) -> None:
    bad = request()
    object.__setattr__(bad, "model", "dall-e-9")
    with pytest.raises(ApiRejected) as caught:
        await renderer.render(bad)
    assert "rejected the request" in str(caught.value)


async def render_failure(base_url: str, *, partials: int = 0, **options: Any) -> ProviderError:
    """What rendering one image against `base_url` raises, with the Renderer's `options` (timeout, retries,
    deadlines); the renderer is closed either way."""
    renderer = Renderer(base_url=base_url, api_key="test", **options)
    try:
        with pytest.raises(ProviderError) as caught:
            await renderer.render(request(), partials=partials)
    finally:
        await renderer.close()
    return caught.value


async def failure_against(port: int) -> ProviderError:
    """What rendering against 127.0.0.1:`port` raises (one retry)."""
    return await render_failure(f"http://127.0.0.1:{port}/v1", timeout=2, max_retries=1)


async def test_a_server_that_hangs_up_after_the_request_may_have_billed_it() -> None:
    """Read the whole request, then close without answering: the call went out, so it may have cost money."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        failure = await failure_against(listener.sockets[0].getsockname()[1])
    finally:
        listener.close()
    assert failure.possibly_billed and failure.attempts == 2


async def test_a_refused_connection_never_reached_the_api() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()  # nothing listens there now
    failure = await failure_against(port)
    assert not failure.possibly_billed and failure.attempts == 2


# --- one retry budget per image (issue [1/6] item 3) ------------------------------------------


async def test_a_stream_that_breaks_between_5xx_never_exceeds_one_plus_retries_attempts(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    """The SDK's own retries and our stream re-try share one budget: 3 HTTP attempts in all, not 9."""
    failure = await fails_after(renderer, server, "500,500,drop,500,500,drop,500,500,ok", partials=1)
    assert len(server.calls) == 3 == failure.attempts
    assert failure.possibly_billed and failure.billed_attempts == 1  # the broken stream


@pytest.mark.parametrize("fault", ["409", "400"])
async def test_a_client_error_is_not_retried_even_when_it_says_x_should_retry(
    renderer: Renderer, server: OfflineImageServer, fault: str
) -> None:
    server.push_faults(fault)
    with pytest.raises(ApiRejected if fault == "400" else ProviderError) as caught:
        await renderer.render(request())
    assert len(server.calls) == 1 and caught.value.attempts == 1
    if fault == "400":  # the user can change the request: the provider's words, without the status
        assert "the image API rejected the request" in str(caught.value), caught.value
    else:
        assert f"HTTP {fault}" in str(caught.value), caught.value


async def test_a_408_is_retried(renderer: Renderer, server: OfflineImageServer) -> None:
    server.push_faults("408")
    result = await renderer.render(request())
    assert result.attempts == 2 == len(server.calls) and result.lost_attempts == 0


@pytest.mark.parametrize("fault", ["500*", "hang*", "drop*", "429:0*", "408*"])
async def test_no_retries_means_one_attempt(server: OfflineImageServer, fault: str) -> None:
    server.push_faults(fault)
    partials = 1 if fault.startswith("drop") else 0
    await render_failure(server.base_url, timeout=0.5, max_retries=0, partials=partials)
    assert len(server.calls) == 1


async def test_each_attempt_that_may_have_been_billed_asks_before_the_retry(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    """Before a retry that follows a possibly-billed attempt, the caller is asked (it extends the reservation);
    a retry after a plain 5xx needs no question, since that attempt cost nothing."""
    asked: list[int] = []

    async def before_retry() -> None:
        asked.append(len(server.calls))

    server.push_faults("hang,500,ok")
    result = await renderer.render(request(), before_retry=before_retry)
    assert asked == [1] and result.attempts == 3 and result.lost_attempts == 1


async def test_a_refused_retry_stops_at_once_and_keeps_what_may_have_been_billed(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    from bot.errors import QuotaExceeded

    async def before_retry() -> None:
        raise QuotaExceeded("Quota: your daily spend limit is $0.0100 and $0.0010 is left.")

    failure = await fails_after(renderer, server, "hang*", before_retry=before_retry)
    assert len(server.calls) == 1 and failure.billed_attempts == 1
    assert "not retried" in str(failure) and "daily spend limit" in str(failure)


# --- an answer with HTTP 200 was billed (issue item 4) ----------------------------------------


@pytest.mark.parametrize("partials", [0, 1])
async def test_a_200_whose_image_is_cut_off_was_billed(
    renderer: Renderer, server: OfflineImageServer, partials: int
) -> None:
    """The provider answered 200 and charged for it; that the image does not decode changes nothing."""
    failure = await fails_after(renderer, server, "truncated", partials=partials)
    assert len(server.calls) == 1 and failure.attempts == 1
    assert failure.billed_attempts == 1 and failure.possibly_billed
    assert "HTTP 200: billed" in str(failure) and "cannot be decoded" in str(failure)
    assert server.calls[0].request_id in str(failure)


# --- a retry that cannot be reserved (issue item 6) -----------------------------------------


async def test_a_database_error_reserving_a_retry_ends_the_image_keeping_what_may_have_been_billed(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    """Not a raw exception (the caller closed the row `failed` at 0): a ProviderError, not retried, that
    carries the possibly-billed attempt."""

    async def before_retry() -> None:
        raise sqlite3.OperationalError("database is locked")

    failure = await fails_after(renderer, server, "hang*", before_retry=before_retry)
    assert len(server.calls) == 1 and failure.attempts == 1 and failure.billed_attempts == 1
    assert "not retried" in str(failure) and "could not be reserved" in str(failure)
    assert "database is locked" not in str(failure)  # the user is told what, not the driver's text


# --- retries that cannot succeed or come too soon (issue item 7) ------------------------------


def out_of_credit_count() -> float:
    return metrics.REGISTRY.get_sample_value("imagebot_api_out_of_credit_total") or 0.0


@pytest.mark.parametrize("code", ["insufficient_quota", "billing_hard_limit_reached"])
async def test_an_account_out_of_credit_is_never_retried_and_operators_see_it(
    renderer: Renderer, server: OfflineImageServer, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.push_faults(f"{code}*")
    before = out_of_credit_count()
    with caplog.at_level(logging.INFO, logger="imagebot.render"), pytest.raises(ProviderError) as caught:
        await renderer.render(request())
    assert len(server.calls) == 1 and caught.value.attempts == 1 and not caught.value.possibly_billed
    assert "out of credit" in str(caught.value) and "an admin should add credit" in str(caught.value)
    assert out_of_credit_count() == before + 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "out of credit" in errors[0].getMessage() and getattr(errors[0], "code", None) == code


async def test_a_rate_limit_429_is_still_retried(renderer: Renderer, server: OfflineImageServer) -> None:
    server.push_faults("429")
    result = await renderer.render(request())
    assert result.attempts == 2


async def test_a_retry_after_longer_than_the_maximum_is_not_waited_out(
    renderer: Renderer, server: OfflineImageServer
) -> None:
    """A 429 asking for 120 s (above IMAGEBOT_RETRY_AFTER_MAX, 60 s): the image fails at once and says when."""
    server.push_faults("429:120")
    started, wall = time.monotonic(), time.time()
    with pytest.raises(ProviderError) as caught:
        await renderer.render(request())
    assert len(server.calls) == 1 and time.monotonic() - started < 5
    found = re.search(r"try again at (\d\d:\d\d:\d\d) UTC \(in 120 s\)", str(caught.value))
    assert found, str(caught.value)
    expected = datetime.datetime.fromtimestamp(wall + 120, datetime.UTC)
    told = datetime.datetime.combine(expected.date(), datetime.time.fromisoformat(found[1]), datetime.UTC)
    assert abs((told - expected).total_seconds()) <= 5


async def test_a_retry_after_ms_longer_than_the_maximum_is_not_waited_out() -> None:
    """`retry-after-ms` counts too (a gateway's 90,000 ms); a lower maximum applies as configured."""
    calls: list[str] = []

    async def busy(request: web.Request) -> web.Response:
        calls.append(request.headers.get("x-client-request-id", ""))
        body = {"error": {"message": "Slow down", "type": "requests", "code": "rate_limit_exceeded"}}
        return web.json_response(body, status=429, headers={"retry-after-ms": "90000"})

    app = web.Application()
    app.router.add_post("/v1/images/generations", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        failure = await render_failure(f"http://127.0.0.1:{port}/v1", timeout=5, max_retries=2)
        assert len(calls) == 1 and "(in 90 s)" in str(failure)
    finally:
        await runner.cleanup()


async def test_a_retry_after_within_a_configured_maximum_is_waited(server: OfflineImageServer) -> None:
    server.push_faults("429:2")
    failure = await render_failure(server.base_url, timeout=5, max_retries=2, retry_after_max=1.5)
    assert len(server.calls) == 1 and "(in 2 s)" in str(failure)


async def test_one_deadline_bounds_every_attempt_of_an_image(server: OfflineImageServer) -> None:
    """Each attempt may take the client timeout (5 s here), but the image's deadline (1 s) bounds them all."""
    server.push_faults("hang*")
    started = time.monotonic()
    failure = await render_failure(server.base_url, timeout=5, max_retries=2, image_deadline=1)
    assert time.monotonic() - started < 3 and len(server.calls) == 1
    assert "deadline of 1 s" in str(failure) and failure.possibly_billed


async def test_no_retry_starts_after_the_deadline(server: OfflineImageServer) -> None:
    """500, 500: the second retry would wait ~1 s, past the 1.2 s deadline, so it is not made."""
    server.push_faults("500*")
    failure = await render_failure(server.base_url, timeout=5, max_retries=2, image_deadline=1.2)
    assert len(server.calls) == 2 == failure.attempts  # the third would start past the deadline
    assert "deadline of 1.2 s" in str(failure) and "HTTP 500" in str(failure)


async def test_the_settings_reach_the_renderer(make_core: Any) -> None:
    core = await make_core(IMAGEBOT_RETRY_AFTER_MAX="5", IMAGEBOT_IMAGE_DEADLINE="30")
    assert (core.renderer.retry_after_max, core.renderer.image_deadline) == (5, 30)


# --- a refused connection is not a timeout (issue [2/6] item 17) ------------------------------


async def test_a_refused_connection_says_so_and_names_the_address() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    failure = await failure_against(port)
    text = str(failure)
    assert "did not answer within" not in text
    assert f"127.0.0.1:{port}" in text and "refused" in text.lower(), text


# --- what the requester sees and the ledger keeps ---------------------------------------------


class FailureView:
    """The adapter side of a job: keeps the failures."""

    def __init__(self) -> None:
        self.failures: list[JobFailure] = []

    async def progress(self, progress: Progress) -> None:
        pass

    async def deliver(self, result: JobResult) -> None:
        raise AssertionError(f"delivered {result}")

    async def failed(self, failure: JobFailure) -> None:
        self.failures.append(failure)


async def run_failing_job(core: Any, text: str) -> tuple[JobFailure, dict[str, Any], int]:
    """Run one job that fails; its failure, its ledger row and its estimate."""
    request = core.parse(text)
    job = await core.runner.prepare(request, Requester("slack", "W1", "C1", "U1"))
    view = FailureView()
    outcome = await core.runner.execute(job, view)
    assert isinstance(outcome, JobFailure) and view.failures == [outcome]
    [row] = dbs.read(core.settings.db_path, "SELECT * FROM ledger")
    return outcome, row, core.runner.estimate(request)


async def test_a_cut_off_image_is_charged_at_its_estimate(make_core: Any) -> None:
    core = await make_core(IMAGEBOT_OFFLINE_FAULTS="truncated")
    outcome, row, estimate = await run_failing_job(core, "a red fox --quality low --size 1024x1024")
    assert (row["status"], row["actual_micros"]) == ("possibly_billed", estimate)
    assert "cannot be decoded" in row["error"] and outcome.charged_micros == estimate
    assert f"Charged {format_usd(estimate)}" in texts.summary(outcome)


async def test_an_account_out_of_credit_is_told_to_the_requester_and_costs_nothing(make_core: Any) -> None:
    core = await make_core(IMAGEBOT_OFFLINE_FAULTS="insufficient_quota*")
    outcome, row, _ = await run_failing_job(core, "a red fox --quality low --size 1024x1024")
    assert (row["status"], row["actual_micros"]) == ("failed", 0) and outcome.charged_micros == 0
    assert len(core.offline_server.calls) == 1
    assert "out of credit" in texts.summary(outcome) and "add credit" in texts.summary(outcome)
