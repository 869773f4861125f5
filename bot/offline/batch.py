"""The offline server's Files API and Batch API, enough for image batches ("relax mode": half price, within
24 hours) through the OpenAI SDK's own `client.files.*` and `client.batches.*`.

Shapes follow the official OpenAPI description (openai/openai-openapi): `OpenAIFile`, `Batch`,
`ListBatchesResponse`, `ListFilesResponse`, `DeleteFileResponse`, the batch input line
`{"custom_id", "method": "POST", "url", "body"}` and the output/error line
`{"id": "batch_req_...", "custom_id", "response": {"status_code", "request_id", "body"} | null,
"error": {"code", "message"} | null}`. Image edits in a batch are JSON (`EditImageBodyJsonParam`): `images`
is an array of `ImageRefParam` (`{"file_id"}` or `{"image_url"}`, exactly one) and `mask` one more.

Each line is checked by the same model rules as the synchronous endpoints (bot/offline/rules.py), drawn by
the same code in a worker thread (bot/offline/drawing.py), and answered with the same body, `usage`
included (the server's `images_response`). It knows its server only as a `BatchHost`, so the server
builds it and it never imports the server back.

A batch runs in a background task: `validating` for the first tenth of the server's `batch_latency`, then
`in_progress` with its lines spread over the next eight tenths, `finalizing`, and `completed` when
`batch_latency` seconds have passed since creation. Faults from the server's queue, taken by batch creation
only: `batch_failed` (the batch fails validation), `batch_expired` (it expires with half its lines done),
`line_error` (its first line gets a 500 in the error file), `batch_dropped` (the batch is created and runs,
but the connection closes before the answer: the client never learns its id) and `batch_500` (a 500 and no
batch). `create_delay` (seconds, default 0) holds each answer to `POST /v1/batches` (the batch already exists
and runs meanwhile).
`GET /v1/batches` lists newest first with each batch's `metadata`, paged by `after` and `limit` (`has_more`),
as the real API does: how a client finds a batch whose creation it never heard back from.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import BodyPartReader, web

from bot.model.pricing import PriceTable
from bot.offline import drawing, rules
from bot.offline.rules import ApiError, Body, Params, invalid

BATCH_ENDPOINTS = {"/v1/images/generations": "generations", "/v1/images/edits": "edits"}
BATCH_FAULTS = ("batch_failed", "batch_expired", "line_error", "batch_dropped", "batch_500")
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
IMAGE_PURPOSES = ("vision", "user_data")  # files an image edit line may reference by `file_id`
COMPLETION_WINDOW = "24h"
WINDOW_SECONDS = 24 * 3600
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
MAX_BATCH_LINES = 50_000
MAX_IMAGE_REFS = 16
MAX_REPORTED_ERRORS = 100
TERMINAL = ("failed", "completed", "expired", "cancelled")
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
LINE_ERROR_MESSAGE = (
    "The server had an error while processing your request. Sorry about that! "
    "(Please include the request ID {request_id} in your message.)"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BatchHost(Protocol):
    """What the Batch API takes from the server it is mounted on (bot/offline/server.py's
    OfflineImageServer), read live: a test may change `batch_latency` or queue a fault at any time."""

    prices: PriceTable
    batch_latency: float
    batch_calls: list[tuple[str, str]]

    def next_fault(self, *, batch: bool = False) -> str | None: ...

    def cut(self, request: web.Request) -> None: ...

    def images_response(self, params: Params, b64: str) -> dict[str, Any]: ...


def _now() -> int:
    return int(time.time())


def _hex() -> str:
    return uuid.uuid4().hex


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, f"No such {kind} object: {object_id}", param="id")


@dataclass
class StoredFile:
    """An uploaded file, or a batch's output or error file."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    expires_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class BatchLine:
    """One validated request of an input file; `number` counts from 1, as in a batch's `errors`."""

    number: int
    custom_id: str
    body: dict[str, Any]


@dataclass
class BatchJob:
    """A batch and its progress; `to_json()` is the Batch object."""

    id: str
    endpoint: str
    input_file_id: str
    input_data: bytes
    metadata: dict[str, str] | None
    created_at: int
    latency: float
    fault: str | None
    status: str = "validating"
    model: str | None = None
    errors: dict[str, Any] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def expires_at(self) -> int:
        return self.created_at + WINDOW_SECONDS

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": COMPLETION_WINDOW,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
            "metadata": self.metadata,
        }


class InputFileError(Exception):
    """The input file failed validation: the batch fails with these `errors.data` entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"] if errors else "invalid input file")
        self.errors = errors


def _batch_error(
    code: str, message: str, *, param: str | None = None, line: int | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def parse_input(data: bytes, endpoint: str) -> list[BatchLine]:
    """The lines of a batch input file, checked like the Batch API checks a file while `validating`; raises
    InputFileError with every problem found (line numbers from 1)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(
            [_batch_error("invalid_file_format", "The input file is not UTF-8 encoded JSONL.")]
        ) from None
    errors: list[dict[str, Any]] = []
    lines: list[BatchLine] = []
    seen: set[str] = set()
    first_model: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            errors.append(
                _batch_error("invalid_json_line", "This line is not a JSON object (JSONL).", line=number)
            )
            continue
        problem = _line_problem(entry, endpoint, seen)
        if problem is not None:
            errors.append({**problem, "line": number})
            continue
        custom_id, body = entry["custom_id"], entry["body"]
        seen.add(custom_id)
        model = body.get("model") if isinstance(body.get("model"), str) else rules.DEFAULT_MODEL
        if first_model is None:
            first_model = (number, model)
        elif model != first_model[1]:
            errors.append(
                _batch_error(
                    "mismatched_model",
                    f"A batch input file may only use one model: this line uses {model!r}, line "
                    f"{first_model[0]} uses {first_model[1]!r}.",
                    param="body.model",
                    line=number,
                )
            )
            continue
        lines.append(BatchLine(number=number, custom_id=custom_id, body=body))
    if not errors and not lines:
        errors.append(_batch_error("empty_file", "The batch input file is empty."))
    if len(lines) > MAX_BATCH_LINES:
        errors.append(
            _batch_error(
                "too_many_requests", f"A batch input file holds at most {MAX_BATCH_LINES:,} requests."
            )
        )
    if errors:
        raise InputFileError(errors[:MAX_REPORTED_ERRORS])
    return lines


def _line_problem(entry: dict[str, Any], endpoint: str, seen: set[str]) -> dict[str, Any] | None:
    for name in ("custom_id", "method", "url", "body"):
        if name not in entry:
            return _batch_error(
                "missing_required_parameter", f"Missing required parameter: '{name}'.", param=name
            )
    custom_id = entry["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        return _batch_error("invalid_value", "'custom_id' must be a non-empty string.", param="custom_id")
    if custom_id in seen:
        return _batch_error(
            "duplicate_custom_id",
            "The custom_id for this request is a duplicate of another request. The custom_id parameter must "
            "be unique for each request in a batch.",
            param="custom_id",
        )
    if entry["method"] != "POST":
        return _batch_error(
            "invalid_value",
            f"Invalid 'method': {entry['method']!r}; only 'POST' is supported.",
            param="method",
        )
    if entry["url"] != endpoint:
        return _batch_error(
            "invalid_url",
            f"The url {entry['url']!r} does not match the batch's endpoint {endpoint!r}.",
            param="url",
        )
    if not isinstance(entry["body"], dict):
        return _batch_error("invalid_type", "'body' must be a JSON object.", param="body")
    return None


def _output_line(custom_id: str, status: int, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"batch_req_{_hex()}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }


def _jsonl(entries: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(entry) + "\n" for entry in entries).encode("utf-8")


class BatchApi:
    """The `/v1/files` and `/v1/batches` routes of a server (a `BatchHost`), with their files and batches in
    memory (`files`, `batches`, by id in creation order)."""

    def __init__(self, server: BatchHost) -> None:
        self._server = server
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, BatchJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.create_delay = 0.0  # seconds each answer to POST /v1/batches is held (the batch already runs)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/files", self._wrap(self._upload_file))
        router.add_get("/v1/files", self._wrap(self._list_files))
        router.add_get("/v1/files/{file_id}", self._wrap(self._retrieve_file))
        router.add_delete("/v1/files/{file_id}", self._wrap(self._delete_file))
        router.add_get("/v1/files/{file_id}/content", self._wrap(self._file_content))
        router.add_post("/v1/batches", self._wrap(self._create_batch))
        router.add_get("/v1/batches", self._wrap(self._list_batches))
        router.add_get("/v1/batches/{batch_id}", self._wrap(self._retrieve_batch))
        router.add_post("/v1/batches/{batch_id}/cancel", self._wrap(self._cancel_batch))

    async def stop(self) -> None:
        """Cancel the batches' background work (they stay where they were)."""
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _wrap(self, handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            self._server.batch_calls.append((request.method, request.path))
            try:
                return await handler(request)
            except ApiError as exc:
                return web.json_response(exc.body(), status=exc.status, headers=exc.headers)

        return wrapped

    # --- files ---

    def _file(self, request: web.Request) -> StoredFile:
        file_id = request.match_info["file_id"]
        stored = self.files.get(file_id)
        if stored is None:
            raise not_found("File", file_id)
        return stored

    def add_file(self, data: bytes, filename: str, purpose: str, expires_at: int | None = None) -> StoredFile:
        """Store a file as if uploaded; returns it (its `id` is `file-...`)."""
        stored = StoredFile(
            id=f"file-{_hex()[:24]}",
            filename=filename,
            purpose=purpose,
            data=data,
            created_at=_now(),
            expires_at=expires_at,
        )
        self.files[stored.id] = stored
        return stored

    async def _upload_file(self, request: web.Request) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            raise ApiError(
                400, f"Invalid Content-Type header ({request.content_type}), expected multipart/form-data."
            )
        data: bytes | None = None
        filename = "upload"
        fields: dict[str, str] = {}
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.name != "file":
                    fields[part.name] = (await part.text())[:1000]
                    continue
                filename = part.filename or filename
                chunks: list[bytes] = []
                size = 0
                while chunk := await part.read_chunk():
                    size += len(chunk)
                    if size > MAX_FILE_BYTES:
                        raise ApiError(
                            413, f"The file is over the {MAX_FILE_BYTES:,} byte limit.", param="file"
                        )
                    chunks.append(bytes(chunk))
                data = b"".join(chunks)
        except ValueError as exc:
            raise ApiError(400, f"The multipart/form-data body could not be parsed: {exc}") from None
        if data is None:
            raise invalid("file", "Missing required parameter: 'file'.", "missing_required_parameter")
        purpose = fields.get("purpose")
        if purpose is None:
            raise invalid("purpose", "Missing required parameter: 'purpose'.", "missing_required_parameter")
        if purpose not in FILE_PURPOSES:
            raise invalid(
                "purpose",
                f"Invalid value for 'purpose': {purpose!r}; use one of {', '.join(FILE_PURPOSES)}.",
            )
        if purpose == "batch" and not filename.lower().endswith(".jsonl"):
            raise invalid("file", "Invalid file format for Batch API. Must be .jsonl", "invalid_file_format")
        expires_at = self._expires_at(fields)
        stored = self.add_file(data, filename, purpose, expires_at)
        return web.json_response(stored.to_json())

    @staticmethod
    def _expires_at(fields: dict[str, str]) -> int | None:
        anchor = fields.get("expires_after[anchor]")
        seconds = fields.get("expires_after[seconds]")
        if anchor is None and seconds is None:
            return None
        if anchor != "created_at":
            raise invalid("expires_after.anchor", "Invalid 'expires_after.anchor': use 'created_at'.")
        try:
            value = int(seconds or "")
        except ValueError:
            value = -1
        if not 3600 <= value <= 2_592_000:
            raise invalid(
                "expires_after.seconds",
                "Invalid 'expires_after.seconds': use 3600 (1 hour) to 2592000 (30 days).",
            )
        return _now() + value

    async def _list_files(self, request: web.Request) -> web.StreamResponse:
        purpose = request.query.get("purpose")
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise invalid("order", f"Invalid value for 'order': {order!r}; use 'asc' or 'desc'.")
        files = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        if order == "desc":
            files.reverse()
        page, has_more = _page(files, request, default_limit=10_000, most=10_000)
        return web.json_response(
            {
                "object": "list",
                "data": [f.to_json() for f in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": has_more,
            }
        )

    async def _retrieve_file(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._file(request).to_json())

    async def _delete_file(self, request: web.Request) -> web.StreamResponse:
        stored = self._file(request)
        del self.files[stored.id]
        return web.json_response({"id": stored.id, "object": "file", "deleted": True})

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        stored = self._file(request)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # --- batches ---

    def _batch(self, request: web.Request) -> BatchJob:
        batch_id = request.match_info["batch_id"]
        job = self.batches.get(batch_id)
        if job is None:
            raise not_found("Batch", batch_id)
        return job

    async def _create_batch(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = json.loads(await request.read())
        except ValueError:
            raise ApiError(
                400,
                "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.",
            ) from None
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if name not in payload:
                raise invalid(name, f"Missing required parameter: '{name}'.", "missing_required_parameter")
        endpoint = payload["endpoint"]
        if endpoint not in BATCH_ENDPOINTS:
            raise invalid(
                "endpoint",
                f"Invalid value for 'endpoint': {endpoint!r}. The offline server batches only "
                f"{' and '.join(repr(e) for e in BATCH_ENDPOINTS)}.",
            )
        window = payload["completion_window"]
        if window != COMPLETION_WINDOW:
            raise invalid(
                "completion_window",
                f"Invalid value for 'completion_window': {window!r}. Supported values are: '24h'.",
            )
        metadata = self._metadata(payload.get("metadata"))
        file_id = payload["input_file_id"]
        if not isinstance(file_id, str):
            raise invalid(
                "input_file_id", "Invalid type for 'input_file_id': expected a string.", "invalid_type"
            )
        stored = self.files.get(file_id)
        if stored is None:
            error = not_found("File", file_id)
            error.param = "input_file_id"
            raise error
        if stored.purpose != "batch":
            raise invalid(
                "input_file_id",
                f"File {file_id} has purpose {stored.purpose!r}; a batch input file must be uploaded with "
                "purpose 'batch'.",
            )
        if len(stored.data) > MAX_BATCH_FILE_BYTES:
            raise invalid(
                "input_file_id", f"A batch input file may be at most {MAX_BATCH_FILE_BYTES:,} bytes."
            )
        fault = self._server.next_fault(batch=True)
        if fault == "batch_500":
            raise ApiError(
                500, "The server had an error while processing your request.", type_="server_error"
            )
        job = BatchJob(
            id=f"batch_{_hex()}",
            endpoint=endpoint,
            input_file_id=file_id,
            input_data=stored.data,
            metadata=metadata,
            created_at=_now(),
            latency=self._server.batch_latency,
            fault=fault,
        )
        self.batches[job.id] = job
        task = asyncio.create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.create_delay > 0:  # created and running; the answer takes its time
            await asyncio.sleep(self.create_delay)
        if fault == "batch_dropped":  # created and running, but the client never hears of it
            self._server.cut(request)
            return web.Response(status=200)  # written to a closed connection: nobody reads it
        return web.json_response(job.to_json())

    @staticmethod
    def _metadata(value: object) -> dict[str, str] | None:
        if value is None:
            return None
        if (
            not isinstance(value, dict)
            or len(value) > 16
            or not all(isinstance(k, str) and len(k) <= 64 for k in value)
            or not all(isinstance(v, str) and len(v) <= 512 for v in value.values())
        ):
            raise invalid(
                "metadata",
                "Invalid 'metadata': at most 16 pairs of string keys (up to 64 characters) and string values "
                "(up to 512 characters).",
            )
        return dict(value)

    async def _list_batches(self, request: web.Request) -> web.StreamResponse:
        jobs = list(reversed(self.batches.values()))  # newest first
        page, has_more = _page(jobs, request, default_limit=20, most=100)
        return web.json_response(
            {
                "object": "list",
                "data": [job.to_json() for job in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": has_more,
            }
        )

    async def _retrieve_batch(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._batch(request).to_json())

    async def _cancel_batch(self, request: web.Request) -> web.StreamResponse:
        job = self._batch(request)
        if job.status in ("validating", "in_progress"):
            job.status = "cancelling"
            job.cancelling_at = _now()
            job.cancel.set()
        elif job.status != "cancelling":
            raise ApiError(409, f"Cannot cancel a batch with status '{job.status}'.")
        return web.json_response(job.to_json())

    # --- running a batch ---

    async def _wait(self, job: BatchJob, deadline: float) -> bool:
        """Sleep until `deadline` (monotonic); False at once if the batch is being cancelled."""
        delay = deadline - time.monotonic()
        if job.cancel.is_set():
            return False
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.cancel.wait(), delay)
        return not job.cancel.is_set()

    async def _run(self, job: BatchJob) -> None:
        try:
            await self._process(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave the batch `in_progress` forever
            job.status = "failed"
            job.failed_at = _now()
            job.errors = {
                "object": "list",
                "data": [
                    _batch_error("server_error", f"The offline server failed: {type(exc).__name__}: {exc}")
                ],
            }

    async def _process(self, job: BatchJob) -> None:
        started = time.monotonic()
        latency = job.latency
        if not await self._wait(job, started + 0.1 * latency):
            await self._finish_cancelled(job, [], [])
            return
        try:
            lines = await asyncio.to_thread(parse_input, job.input_data, job.endpoint)
            if job.fault == "batch_failed":
                raise InputFileError(
                    [
                        _batch_error(
                            "token_limit_exceeded",
                            "Enqueued token limit reached for this organization (offline fault "
                            "'batch_failed'). Please try again once some in_progress batches have been "
                            "completed.",
                        )
                    ]
                )
        except InputFileError as exc:
            job.status = "failed"
            job.failed_at = _now()
            job.errors = {"object": "list", "data": exc.errors}
            return
        model = lines[0].body.get("model")
        job.model = model if isinstance(model, str) else rules.DEFAULT_MODEL
        job.total = len(lines)
        job.status = "in_progress"
        job.in_progress_at = _now()
        expiring = job.fault == "batch_expired"
        runnable = lines[: len(lines) // 2] if expiring else lines
        outputs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for index, line in enumerate(runnable):
            ok, entry = await self._run_line(job, line, index)
            (outputs if ok else errors).append(entry)
            if ok:
                job.completed += 1
            else:
                job.failed += 1
            if not await self._wait(job, started + latency * (0.1 + 0.8 * (index + 1) / len(lines))):
                break
        if job.cancel.is_set():
            await self._finish_cancelled(job, outputs, errors)
            return
        if expiring:
            if not await self._wait(job, started + latency):
                await self._finish_cancelled(job, outputs, errors)
                return
            for line in lines[len(runnable) :]:
                errors.append(
                    {
                        "id": f"batch_req_{_hex()}",
                        "custom_id": line.custom_id,
                        "response": None,
                        "error": {"code": "batch_expired", "message": EXPIRED_MESSAGE},
                    }
                )
                job.failed += 1
            await self._write_results(job, outputs, errors)
            if job.cancel.is_set():  # cancelled while the files were written: the cancellation wins
                job.status = "cancelled"
                job.cancelled_at = _now()
                return
            job.status = "expired"
            job.expired_at = _now()
            return
        job.status = "finalizing"
        job.finalizing_at = _now()
        await self._write_results(job, outputs, errors)
        await asyncio.sleep(max(0.0, started + latency - time.monotonic()))
        job.status = "completed"
        job.completed_at = _now()

    async def _finish_cancelled(
        self, job: BatchJob, outputs: list[dict[str, Any]], errors: list[dict[str, Any]]
    ) -> None:
        await asyncio.sleep(0.1 * job.latency)  # `cancelling` for a tenth of the latency
        await self._write_results(job, outputs, errors)
        job.status = "cancelled"
        job.cancelled_at = _now()

    async def _write_results(
        self, job: BatchJob, outputs: list[dict[str, Any]], errors: list[dict[str, Any]]
    ) -> None:
        """Store the output and error files (each only if it has lines) and name them on the batch."""
        if outputs:
            data = await asyncio.to_thread(_jsonl, outputs)
            job.output_file_id = self.add_file(data, f"{job.id}_output.jsonl", "batch_output").id
        if errors:
            data = await asyncio.to_thread(_jsonl, errors)
            job.error_file_id = self.add_file(data, f"{job.id}_error.jsonl", "batch_output").id

    async def _run_line(self, job: BatchJob, line: BatchLine, index: int) -> tuple[bool, dict[str, Any]]:
        """Answer one line as its endpoint would: (True, output line) or (False, error file line)."""
        request_id = f"req_{_hex()}"
        if index == 0 and job.fault == "line_error":
            error = ApiError(500, LINE_ERROR_MESSAGE.format(request_id=request_id), type_="server_error")
            return False, _output_line(line.custom_id, 500, request_id, error.body())
        try:
            params = await self.line_params(BATCH_ENDPOINTS[job.endpoint], line.body)
            _, b64 = await asyncio.to_thread(drawing.render_final, params)
        except ApiError as exc:
            return False, _output_line(line.custom_id, exc.status, request_id, exc.body())
        body = self._server.images_response(params, b64)
        usage = body["usage"]
        job.input_tokens += usage["input_tokens"]
        job.output_tokens += usage["output_tokens"]
        return True, _output_line(line.custom_id, 200, request_id, body)

    async def line_params(self, endpoint: str, body: dict[str, Any]) -> Params:
        """Validate a line's JSON body by the synchronous endpoint's rules; for edits, load its `images` and
        `mask` (ImageRefParam objects) and decode them in a worker thread."""
        fields = dict(body)
        if fields.get("stream") not in (None, False):
            raise invalid("stream", "Streaming is not supported in the Batch API.", "unsupported_parameter")
        if endpoint == "generations":
            return rules.validate(Body(fields=fields, form=False), endpoint, self._server.prices)
        if "image" in fields:
            raise invalid(
                "image",
                "JSON image edits take 'images', an array of image references ({'file_id': ...} or "
                "{'image_url': ...}), not 'image'.",
                "unknown_parameter",
            )
        refs = fields.pop("images", None)
        mask_ref = fields.pop("mask", None)
        if refs is None:
            raise invalid("images", "Missing required parameter: 'images'.", "missing_required_parameter")
        if not isinstance(refs, list) or not refs:
            raise invalid("images", "Invalid 'images': expected a non-empty array of image references.")
        if len(refs) > MAX_IMAGE_REFS:
            raise invalid("images", f"Invalid 'images': at most {MAX_IMAGE_REFS} image references.")
        images = [self._image_bytes(ref, f"images[{i}]") for i, ref in enumerate(refs)]
        mask = None if mask_ref is None else self._image_bytes(mask_ref, "mask")
        parsed = Body(fields=fields, form=False, images=images, mask=mask)
        params = rules.validate(parsed, endpoint, self._server.prices)
        opened, mask_image = await asyncio.to_thread(rules.open_images, parsed.images, parsed.mask)
        if mask_image is not None:
            rules.check_mask(mask_image, opened[0])
        return dataclasses.replace(params, images=tuple(opened), mask=mask_image is not None)

    def _image_bytes(self, ref: object, param: str) -> bytes:
        """The bytes an ImageRefParam points at: an uploaded file (purpose vision or user_data) or a base64
        data URL (the offline server fetches no other URL)."""
        if not isinstance(ref, dict):
            raise invalid(
                param,
                f"Invalid type for '{param}': expected an object with 'file_id' or 'image_url'.",
                "invalid_type",
            )
        for key in ref:
            if key not in ("file_id", "image_url"):
                raise invalid(
                    f"{param}.{key}", f"Unrecognized parameter: '{param}.{key}'.", "unknown_parameter"
                )
        if len(ref) != 1:
            raise invalid(param, f"Invalid '{param}': provide exactly one of 'image_url' or 'file_id'.")
        if "file_id" in ref:
            file_id = ref["file_id"]
            stored = self.files.get(file_id) if isinstance(file_id, str) else None
            if stored is None:
                raise invalid(f"{param}.file_id", f"No such File object: {file_id}", "file_not_found")
            if stored.purpose not in IMAGE_PURPOSES:
                raise invalid(
                    f"{param}.file_id",
                    f"File {file_id} has purpose {stored.purpose!r}; image inputs must be uploaded with purpose "
                    "'vision' or 'user_data'.",
                )
            return stored.data
        url = ref["image_url"]
        if not isinstance(url, str) or not url.startswith("data:"):
            raise invalid(
                f"{param}.image_url",
                "The offline server fetches no image URLs: use a base64 data URL or an uploaded file's 'file_id'.",
                "invalid_image_url",
            )
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            raise invalid(f"{param}.image_url", "Invalid data URL: expected 'data:<type>;base64,<data>'.")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"{param}.image_url", "Invalid data URL: its data is not base64.") from None


def _page(items: list[Any], request: web.Request, *, default_limit: int, most: int) -> tuple[list[Any], bool]:
    """The page of `items` after the `after` id, at most `limit` long, and whether more follow."""
    raw = request.query.get("limit")
    try:
        limit = default_limit if raw is None else int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= most:
        raise invalid("limit", f"Invalid value for 'limit': {raw!r}; use 1 to {most}.")
    after = request.query.get("after")
    if after is not None:
        ids = [item.id for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return items[:limit], len(items) > limit
