"""The offline server's Files and Batch APIs (bot/offline/batch.py), driven through the real OpenAI SDK."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
from typing import Any

import openai
import pytest
from openai.types import Batch, ImagesResponse
from PIL import Image

from bot.errors import ConfigError
from bot.model.pricing import load_prices
from bot.offline import OfflineImageServer, parse_faults

MODEL = "gpt-image-2"
GENERATIONS: Any = "/v1/images/generations"
EDITS: Any = "/v1/images/edits"
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
TERMINAL = ("failed", "completed", "expired", "cancelled")
ORDER = ("validating", "in_progress", "finalizing", "completed")


@pytest.fixture
def server_options() -> dict[str, Any]:
    return {"latency": 0.01, "batch_latency": 0.2}


def line(custom_id: str, body: dict[str, Any], url: str = GENERATIONS) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(entry) + "\n" for entry in lines).encode()


async def upload(client: openai.AsyncOpenAI, lines: list[dict[str, Any]]) -> str:
    stored = await client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return stored.id


async def submit(
    client: openai.AsyncOpenAI, lines: list[dict[str, Any]], endpoint: Any = GENERATIONS
) -> Batch:
    file_id = await upload(client, lines)
    return await client.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,
        completion_window="24h",
    )


async def wait(
    client: openai.AsyncOpenAI, batch_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 20.0
) -> tuple[Batch, list[str]]:
    """Poll until the batch reaches one of `statuses`; also returns the statuses seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in statuses:
            return batch, seen
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
        await asyncio.sleep(0.01)


async def read_jsonl(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    content = await client.files.content(file_id)
    return [json.loads(raw) for raw in content.content.decode().splitlines()]


def decode(b64: str | None) -> Image.Image:
    assert b64 is not None
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def png_bytes(size: tuple[int, int], mode: str = "RGB", colour: Any = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, "PNG")
    return buffer.getvalue()


# --- files ---------------------------------------------------------------------------------


async def test_file_upload_retrieve_content_list_delete(
    client: openai.AsyncOpenAI, server: OfflineImageServer
) -> None:
    data = jsonl([line("a", {"prompt": "x"})])
    before = int(time.time())
    stored = await client.files.create(file=("in.jsonl", data), purpose="batch")
    assert re.match(r"^file-[0-9a-f]{24}$", stored.id)
    assert (stored.object, stored.bytes, stored.filename, stored.purpose, stored.status) == (
        "file",
        len(data),
        "in.jsonl",
        "batch",
        "processed",
    )
    assert stored.expires_at is None and before <= stored.created_at <= int(time.time())
    assert await client.files.retrieve(stored.id) == stored
    assert (await client.files.content(stored.id)).content == data
    image = await client.files.create(file=("ref.png", png_bytes((64, 64))), purpose="vision")
    listed = [f.id async for f in client.files.list()]
    assert listed == [image.id, stored.id]  # newest first
    assert [f.id async for f in client.files.list(purpose="vision")] == [image.id]
    deleted = await client.files.delete(stored.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (stored.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(stored.id)
    assert server.batch_calls[:2] == [("POST", "/v1/files"), ("GET", f"/v1/files/{stored.id}")]
    assert server.calls == []  # the image-call record is for image calls only


async def test_file_expires_after(client: openai.AsyncOpenAI) -> None:
    stored = await client.files.create(
        file=("in.jsonl", b"{}\n"), purpose="batch", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert stored.expires_at == stored.created_at + 3600


async def test_unknown_ids_are_404_in_the_api_error_shape(client: openai.AsyncOpenAI) -> None:
    for call in (
        client.files.retrieve("file-nope"),
        client.files.content("file-nope"),
        client.files.delete("file-nope"),
        client.batches.retrieve("batch_nope"),
        client.batches.cancel("batch_nope"),
        client.batches.create(input_file_id="file-nope", endpoint=GENERATIONS, completion_window="24h"),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            await call
        assert caught.value.status_code == 404
        body = caught.value.response.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
        assert "nope" in body["error"]["message"]


async def test_upload_checks_purpose_and_batch_file_name(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="purpose"):
        await client.files.create(file=("in.jsonl", b"{}"), purpose="teapot")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="jsonl"):
        await client.files.create(file=("in.txt", b"{}"), purpose="batch")


# --- creating batches ---------------------------------------------------------------------


async def test_bad_completion_window_endpoint_or_purpose_is_400(client: openai.AsyncOpenAI) -> None:
    file_id = await upload(client, [line("a", {"prompt": "x"})])
    with pytest.raises(openai.BadRequestError) as caught:
        await client.batches.create(
            input_file_id=file_id,
            endpoint=GENERATIONS,
            completion_window="48h",  # type: ignore[arg-type]
        )
    assert caught.value.status_code == 400
    assert caught.value.response.json()["error"]["param"] == "completion_window"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    message = caught.value.response.json()["error"]["message"]
    assert GENERATIONS in message and EDITS in message
    vision = await client.files.create(file=("ref.png", png_bytes((64, 64))), purpose="vision")
    with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
        await client.batches.create(input_file_id=vision.id, endpoint=GENERATIONS, completion_window="24h")
    assert (await client.batches.list()).data == []


async def test_generations_batch_completes_with_images_and_sync_usage(
    client: openai.AsyncOpenAI, server: OfflineImageServer
) -> None:
    bodies: dict[str, dict[str, Any]] = {
        "square": {
            "model": MODEL,
            "prompt": "a lighthouse",
            "size": "1024x1024",
            "quality": "low",
            "output_format": "jpeg",
        },
        "wide": {"model": MODEL, "prompt": "a red fox " * 20, "size": "1536x1024", "quality": "high"},
    }
    file_id = await upload(client, [line(cid, body) for cid, body in bodies.items()])
    created = await client.batches.create(
        input_file_id=file_id, endpoint=GENERATIONS, completion_window="24h", metadata={"job": "relax-1"}
    )
    assert re.match(r"^batch_[0-9a-f]{32}$", created.id)
    assert (created.object, created.status, created.endpoint, created.input_file_id) == (
        "batch",
        "validating",
        GENERATIONS,
        file_id,
    )
    assert created.completion_window == "24h" and created.metadata == {"job": "relax-1"}
    assert created.expires_at == created.created_at + 24 * 3600
    assert created.output_file_id is None and created.error_file_id is None and created.errors is None
    assert created.request_counts is not None and created.request_counts.total == 0

    batch, seen = await wait(client, created.id)
    assert batch.status == "completed"
    assert [s for s in ORDER if s in seen] == seen  # never out of order
    assert (
        batch.in_progress_at is not None
        and batch.finalizing_at is not None
        and batch.completed_at is not None
    )
    assert created.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    assert batch.failed_at is None and batch.expired_at is None and batch.cancelled_at is None
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        2,
        2,
        0,
    )
    assert batch.error_file_id is None and batch.model == MODEL

    output = await client.files.retrieve(batch.output_file_id or "")
    assert (output.purpose, output.status) == ("batch_output", "processed")
    lines = await read_jsonl(client, batch.output_file_id)
    assert output.bytes == len((await client.files.content(output.id)).content)
    assert [entry["custom_id"] for entry in lines] == ["square", "wide"]
    for entry in lines:
        assert set(entry) == {"id", "custom_id", "response", "error"}
        assert entry["id"].startswith("batch_req_") and entry["error"] is None
        assert entry["response"]["status_code"] == 200
        assert REQUEST_ID.match(entry["response"]["request_id"])
        body = bodies[entry["custom_id"]]
        result = ImagesResponse.model_validate(entry["response"]["body"])
        assert result.data is not None
        image = decode(result.data[0].b64_json)
        assert f"{image.width}x{image.height}" == body["size"] == result.size
        assert image.format == ("JPEG" if body.get("output_format") == "jpeg" else "PNG")
        # The same usage as the synchronous endpoint gives for the same request.
        sync = await client.images.generate(**body)
        assert result.usage is not None and sync.usage is not None
        assert result.usage.model_dump() == sync.usage.model_dump()
        assert (result.quality, result.output_format, result.background) == (
            sync.quality,
            sync.output_format,
            sync.background,
        )
    assert batch.usage is not None
    assert batch.usage.output_tokens == sum(e["response"]["body"]["usage"]["output_tokens"] for e in lines)
    methods = [(m, p.rsplit("/", 1)[0] if p.count("/") > 2 else p) for m, p in server.batch_calls]
    assert methods.count(("POST", "/v1/batches")) == 1 and methods.count(("POST", "/v1/files")) == 1


async def test_zero_latency_batch(client: openai.AsyncOpenAI, server: OfflineImageServer) -> None:
    server.batch_latency = 0
    created = await submit(client, [line("a", {"prompt": "quick", "quality": "low"})])
    batch, _ = await wait(client, created.id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert batch.request_counts.completed == 1


async def test_invalid_line_goes_to_the_error_file(client: openai.AsyncOpenAI) -> None:
    created = await submit(
        client,
        [
            line("bad-size", {"model": MODEL, "prompt": "x", "size": "1000x1000"}),
            line("good", {"model": MODEL, "prompt": "x", "quality": "low"}),
            line("stream", {"model": MODEL, "prompt": "x", "stream": True}),
        ],
    )
    batch, _ = await wait(client, created.id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 2)
    assert [e["custom_id"] for e in await read_jsonl(client, batch.output_file_id)] == ["good"]
    errors = {e["custom_id"]: e for e in await read_jsonl(client, batch.error_file_id)}
    assert set(errors) == {"bad-size", "stream"}
    bad = errors["bad-size"]
    assert bad["error"] is None and bad["response"]["status_code"] == 400
    assert REQUEST_ID.match(bad["response"]["request_id"])
    assert bad["response"]["body"]["error"]["param"] == "size"
    assert bad["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert errors["stream"]["response"]["body"]["error"]["param"] == "stream"


# --- edits ----------------------------------------------------------------------------------


async def test_edit_batch_references_uploaded_vision_files(client: openai.AsyncOpenAI) -> None:
    source = png_bytes((1024, 1024), colour="blue")
    mask = png_bytes((1024, 1024), mode="RGBA", colour=(0, 0, 0, 0))
    image_file = await client.files.create(file=("source.png", source), purpose="vision")
    mask_file = await client.files.create(file=("mask.png", mask), purpose="user_data")
    batch_file = await upload(client, [line("x", {"prompt": "x"})])
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes((512, 512))).decode()
    body: dict[str, Any] = {"model": MODEL, "prompt": "add a hat", "size": "1536x1024", "quality": "low"}
    created = await submit(
        client,
        [
            line(
                "file",
                {**body, "images": [{"file_id": image_file.id}], "mask": {"file_id": mask_file.id}},
                EDITS,
            ),
            line("data-url", {**body, "images": [{"image_url": data_url}]}, EDITS),
            line("unknown", {**body, "images": [{"file_id": "file-missing"}]}, EDITS),
            line("wrong-purpose", {**body, "images": [{"file_id": batch_file}]}, EDITS),
            line("both", {**body, "images": [{"file_id": image_file.id, "image_url": data_url}]}, EDITS),
            line("remote", {**body, "images": [{"image_url": "https://example.com/a.png"}]}, EDITS),
            line("no-images", body, EDITS),
        ],
        EDITS,
    )
    batch, _ = await wait(client, created.id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        7,
        2,
        5,
    )
    outputs = {e["custom_id"]: e for e in await read_jsonl(client, batch.output_file_id)}
    assert set(outputs) == {"file", "data-url"}
    for entry in outputs.values():
        result = ImagesResponse.model_validate(entry["response"]["body"])
        assert result.data is not None and decode(result.data[0].b64_json).size == (1536, 1024)
    # Usage as the synchronous (multipart) edit reports it for the same image.
    sync = await client.images.edit(image=("source.png", source), mask=("mask.png", mask), **body)
    file_usage = ImagesResponse.model_validate(outputs["file"]["response"]["body"]).usage
    assert file_usage is not None and sync.usage is not None
    assert file_usage.model_dump() == sync.usage.model_dump()
    assert file_usage.input_tokens_details.image_tokens > 0
    errors = {
        e["custom_id"]: e["response"]["body"]["error"] for e in await read_jsonl(client, batch.error_file_id)
    }
    assert (
        errors["unknown"]["param"] == "images[0].file_id" and "file-missing" in errors["unknown"]["message"]
    )
    assert (
        errors["wrong-purpose"]["param"] == "images[0].file_id"
        and "vision" in errors["wrong-purpose"]["message"]
    )
    assert errors["both"]["param"] == "images[0]"
    assert errors["remote"]["param"] == "images[0].image_url"
    assert errors["no-images"]["param"] == "images"


# --- validation failures ------------------------------------------------------------------


async def test_malformed_input_file_fails_the_batch_with_line_errors(client: openai.AsyncOpenAI) -> None:
    raw = b"\n".join(
        [
            json.dumps(line("a", {"prompt": "x"})).encode(),
            b"{not json",
            json.dumps({"method": "POST", "url": GENERATIONS, "body": {"prompt": "x"}}).encode(),
            json.dumps(line("a", {"prompt": "x"})).encode(),
            json.dumps(line("b", {"prompt": "x"}, url=EDITS)).encode(),
            json.dumps(line("c", {"prompt": "x", "model": "gpt-image-1.5"})).encode(),
        ]
    )
    stored = await client.files.create(file=("in.jsonl", raw), purpose="batch")
    created = await client.batches.create(
        input_file_id=stored.id, endpoint=GENERATIONS, completion_window="24h"
    )
    batch, _ = await wait(client, created.id)
    assert batch.status == "failed" and batch.failed_at is not None and batch.in_progress_at is None
    assert batch.errors is not None and batch.errors.object == "list" and batch.errors.data is not None
    found = [(e.line, e.code, e.param) for e in batch.errors.data]
    assert found == [
        (2, "invalid_json_line", None),
        (3, "missing_required_parameter", "custom_id"),
        (4, "duplicate_custom_id", "custom_id"),
        (5, "invalid_url", "url"),
        (6, "mismatched_model", "body.model"),
    ]
    assert batch.output_file_id is None and batch.error_file_id is None


# --- faults ---------------------------------------------------------------------------------


async def test_batch_failed_fault(client: openai.AsyncOpenAI, server: OfflineImageServer) -> None:
    server.push_faults("batch_failed")
    created = await submit(client, [line("a", {"prompt": "x"})])
    assert server.pending_faults == ()
    batch, seen = await wait(client, created.id)
    assert seen[-1] == "failed" and "in_progress" not in seen
    assert batch.errors is not None and batch.errors.data
    error = batch.errors.data[0]
    assert error.code and error.message and error.param is None and error.line is None
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert batch.output_file_id is None and batch.error_file_id is None
    again, _ = await wait(client, (await submit(client, [line("a", {"prompt": "x"})])).id)
    assert again.status == "completed"  # consumed: the next batch is fine


async def test_batch_expired_fault(client: openai.AsyncOpenAI, server: OfflineImageServer) -> None:
    server.push_faults("batch_expired")
    created = await submit(client, [line(f"r{i}", {"prompt": f"n{i}", "quality": "low"}) for i in range(4)])
    batch, _ = await wait(client, created.id)
    assert batch.status == "expired" and batch.expired_at is not None and batch.completed_at is None
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        4,
        2,
        2,
    )
    assert [e["custom_id"] for e in await read_jsonl(client, batch.output_file_id)] == ["r0", "r1"]
    errors = await read_jsonl(client, batch.error_file_id)
    assert [e["custom_id"] for e in errors] == ["r2", "r3"]
    for entry in errors:
        assert entry["response"] is None
        assert entry["error"] == {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        }


async def test_line_error_fault(client: openai.AsyncOpenAI, server: OfflineImageServer) -> None:
    server.push_faults("line_error")
    created = await submit(client, [line(f"r{i}", {"prompt": f"n{i}", "quality": "low"}) for i in range(3)])
    batch, _ = await wait(client, created.id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    assert [e["custom_id"] for e in await read_jsonl(client, batch.output_file_id)] == ["r1", "r2"]
    (error,) = await read_jsonl(client, batch.error_file_id)
    assert error["custom_id"] == "r0" and error["error"] is None
    assert error["response"]["status_code"] == 500
    assert error["response"]["body"]["error"]["type"] == "server_error"


async def test_image_calls_and_batches_take_only_their_own_faults(
    client: openai.AsyncOpenAI, server: OfflineImageServer
) -> None:
    server.push_faults("line_error,500,batch_failed*")
    with pytest.raises(openai.InternalServerError):
        await client.images.generate(model=MODEL, prompt="x", quality="low")
    assert server.pending_faults == ("line_error", "batch_failed*")
    ok = await client.images.generate(model=MODEL, prompt="x", quality="low")
    assert ok.data and server.calls[-1].fault is None
    first = await submit(client, [line("a", {"prompt": "x", "quality": "low"}), line("b", {"prompt": "y"})])
    assert server.pending_faults == ("batch_failed*",)
    second = await submit(client, [line("a", {"prompt": "x"})])
    third = await submit(client, [line("a", {"prompt": "x"})])
    assert server.pending_faults == ("batch_failed*",)  # sticky
    first_done, _ = await wait(client, first.id)
    assert first_done.status == "completed" and first_done.error_file_id is not None
    assert [(await wait(client, b.id))[0].status for b in (second, third)] == ["failed", "failed"]


# --- cancelling ------------------------------------------------------------------------------


async def test_cancel_keeps_finished_lines_only(
    client: openai.AsyncOpenAI, server: OfflineImageServer
) -> None:
    server.batch_latency = 3.0
    created = await submit(client, [line(f"r{i}", {"prompt": f"n{i}", "quality": "low"}) for i in range(3)])
    deadline = time.monotonic() + 10
    while True:
        batch = await client.batches.retrieve(created.id)
        if batch.request_counts is not None and batch.request_counts.completed >= 1:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    cancelling = await client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    try:
        again = await client.batches.cancel(created.id)  # cancelling again is a no-op until it is cancelled
        assert again.status == "cancelling" and again.cancelling_at == cancelling.cancelling_at
    except openai.ConflictError:
        pass
    batch, _ = await wait(client, created.id, timeout=5)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.cancelling_at is not None and batch.cancelling_at <= batch.cancelled_at
    assert batch.completed_at is None and batch.finalizing_at is None
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        3,
        1,
        0,
    )
    assert [e["custom_id"] for e in await read_jsonl(client, batch.output_file_id)] == ["r0"]
    assert batch.error_file_id is None
    with pytest.raises(openai.ConflictError):
        await client.batches.cancel(created.id)


async def test_cancel_while_validating(client: openai.AsyncOpenAI, server: OfflineImageServer) -> None:
    server.batch_latency = 5.0
    created = await submit(client, [line("a", {"prompt": "x"})])
    cancelling = await client.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    batch, _ = await wait(client, created.id, timeout=2)
    assert batch.status == "cancelled" and batch.in_progress_at is None
    assert batch.output_file_id is None and batch.error_file_id is None


async def test_cancel_completed_batch_is_409(client: openai.AsyncOpenAI) -> None:
    created = await submit(client, [line("a", {"prompt": "x", "quality": "low"})])
    await wait(client, created.id)
    with pytest.raises(openai.ConflictError, match="completed"):
        await client.batches.cancel(created.id)


# --- listing ---------------------------------------------------------------------------------


async def test_list_batches_paginates_newest_first(
    client: openai.AsyncOpenAI, server: OfflineImageServer
) -> None:
    server.batch_latency = 60.0  # they stay `validating`; listing does not care
    ids = [(await submit(client, [line("a", {"prompt": f"p{i}"})])).id for i in range(5)]
    newest_first = ids[::-1]
    raw = await client.batches.with_raw_response.list(limit=2)
    page_json = raw.http_response.json()
    assert page_json["object"] == "list" and page_json["has_more"] is True
    assert (page_json["first_id"], page_json["last_id"]) == tuple(newest_first[:2])
    page = raw.parse()
    assert [b.id for b in page.data] == newest_first[:2]
    following = await client.batches.list(limit=2, after=newest_first[1])
    assert [b.id for b in following.data] == newest_first[2:4] and following.has_more is True
    last = await client.batches.list(limit=2, after=newest_first[3])
    assert [b.id for b in last.data] == newest_first[4:] and last.has_more is False
    assert [b.id async for b in client.batches.list(limit=2)] == newest_first
    assert [b.id for b in (await client.batches.list()).data] == newest_first
    with pytest.raises(openai.BadRequestError):
        await client.batches.list(limit=0)
    for batch_id in ids:
        await client.batches.cancel(batch_id)


async def test_a_dropped_answer_still_creates_the_batch_found_by_its_metadata(
    client: openai.AsyncOpenAI, server: OfflineImageServer
) -> None:
    """`batch_dropped`: the batch is created and runs, but the connection closes before the answer; a client
    finds it by paging `GET /v1/batches` (newest first, `after`, `has_more`) for the metadata it sent.
    `batch_500`: a 500 and no batch at all."""
    server.batch_latency = 600.0  # each stays `validating` for its first tenth (60 s), past this test
    for i in range(3):  # other batches, newer than the lost one, push it to a later page
        if i == 1:
            server.push_faults("batch_dropped")
            file_id = await upload(client, [line("a", {"prompt": "lost"})])
            with pytest.raises(openai.APIConnectionError):
                await client.batches.create(
                    input_file_id=file_id,
                    endpoint=GENERATIONS,
                    completion_window="24h",
                    metadata={"made_by": "test", "key": "k-1"},
                )
        else:
            await submit(client, [line("a", {"prompt": f"p{i}"})])
    await submit(client, [line("a", {"prompt": "p3"})])
    first = await client.batches.list(limit=2)
    assert first.has_more and all(b.metadata is None for b in first.data)
    found = [b async for b in client.batches.list(limit=2) if (b.metadata or {}).get("key") == "k-1"]
    assert len(found) == 1 and found[0].status == "validating"
    later = await client.batches.list(limit=2, after=first.data[-1].id)
    assert found[0].id in [b.id for b in later.data]
    server.push_faults("batch_500")
    file_id = await upload(client, [line("a", {"prompt": "none"})])
    with pytest.raises(openai.InternalServerError):
        await client.batches.create(input_file_id=file_id, endpoint=GENERATIONS, completion_window="24h")
    assert len([b async for b in client.batches.list()]) == 4
    for batch in [b async for b in client.batches.list()]:
        await client.batches.cancel(batch.id)


# --- settings ----------------------------------------------------------------------------------


def test_batch_fault_tokens_and_env() -> None:
    tokens = "batch_failed, batch_expired,line_error*,500"  # spaces around commas are allowed
    assert parse_faults(tokens) == ["batch_failed", "batch_expired", "line_error*", "500"]
    assert parse_faults("batch_dropped,batch_500") == ["batch_dropped", "batch_500"]
    with pytest.raises(ConfigError, match="batch_dropped"):
        parse_faults("batch_teapot")
    assert OfflineImageServer().batch_latency == 20.0
    assert OfflineImageServer.from_env({}).batch_latency == 20.0
    assert OfflineImageServer.from_env({"IMAGEBOT_OFFLINE_BATCH_LATENCY": "0.2"}).batch_latency == 0.2
    assert OfflineImageServer.from_env({"IMAGEBOT_OFFLINE_BATCH_LATENCY": "0"}).batch_latency == 0.0
    for bad in ("soon", "-1", "nan"):
        with pytest.raises(ConfigError, match="IMAGEBOT_OFFLINE_BATCH_LATENCY"):
            OfflineImageServer.from_env({"IMAGEBOT_OFFLINE_BATCH_LATENCY": bad})
    srv = OfflineImageServer.from_env({"IMAGEBOT_OFFLINE_FAULTS": "batch_expired,500"})
    assert srv.pending_faults == ("batch_expired", "500")
    assert load_prices().model(MODEL)  # the price table the batches are checked against
