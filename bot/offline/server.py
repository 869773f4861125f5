"""The offline image server itself: an aiohttp app answering `POST /v1/images/generations` (JSON) and
`POST /v1/images/edits` (multipart) the way the real API does, as far as the OpenAI SDK can tell, with a
queue of faults (5xx, 429 with Retry-After, hangs, dropped streams, moderation refusals, garbage) and a
record of every call, so tests and benchmarks can drive every path.

What a request may ask is bot/offline/rules.py (each model's rules, from the price table); what it gets
back is drawn by bot/offline/drawing.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from bot.errors import ConfigError
from bot.model.pricing import PriceTable, load_prices
from bot.offline import drawing, rules
from bot.offline.batch import BATCH_FAULTS, BatchApi
from bot.offline.rules import ApiError, Body, Params

MODERATION_MESSAGE = (
    "Your request was rejected by the safety system. If you believe this is an error, "
    "contact us at help.openai.com and include the request ID {request_id}."
)
GARBAGE_BODY = b"<html><body>502 Bad Gateway</body></html>{not json"
_FAULT_RE = re.compile(
    r"^(ok|400|408|409|500|502|503|429(?::[0-9.]+)?|(?:429:)?(?:insufficient_quota|billing_hard_limit_reached)"
    r"|hang|drop|truncated|moderation|garbage|batch_failed|batch_expired|line_error|batch_dropped|batch_500)\*?$"
)
# 429 error codes of an account out of credit (OpenAI's, and some gateways'): no retry can succeed.
_OUT_OF_CREDIT = ("insufficient_quota", "billing_hard_limit_reached")
_REQUEST_ID_KEY = web.RequestKey("imagebot_request_id", str)


@dataclass
class CallRecord:
    """One HTTP request the server received, appended when it arrives and updated when answered."""

    endpoint: str
    request_id: str
    model: str | None = None
    prompt: str | None = None
    size: str | None = None
    quality: str | None = None
    output_format: str | None = None
    stream: bool = False
    partial_images: int = 0
    images: int = 0
    mask: bool = False
    fault: str | None = None
    # 0 until a status line is sent; stays 0 for `hang` and for clients that gave up first.
    status: int = 0
    client_request_id: str | None = None  # the caller's X-Client-Request-Id: which image this attempt was for
    fields: tuple[str, ...] = ()  # the names of the parameters it carried (files aside), sorted


def parse_faults(spec: str | Iterable[str]) -> list[str]:
    """Split and check a fault queue such as `"500,500,429:2,hang,drop,moderation"`.

    Tokens are `ok` (a normal answer: a spacer in the queue), `500`, `502`, `503`, `429:N` (Retry-After N seconds; bare `429` sends no
    Retry-After), `insufficient_quota` and `billing_hard_limit_reached` (a 429 for an account out of credit,
    with that error code; `429:` in front is allowed), `408` (request timeout), `400` and `409` (client errors
    that, like a careless gateway, also say `x-should-retry: true`), `hang`, `drop`, `truncated` (HTTP 200 whose
    image is cut off half way: valid JSON and base64, an image that does not decode), `moderation` and
    `garbage`; a trailing `*` makes a token permanent (never consumed). Raises ConfigError naming the bad token.

    `batch_failed`, `batch_expired`, `line_error`, `batch_dropped` (the batch is created but the answer to
    `POST /v1/batches` is lost: the connection closes) and `batch_500` (a 500, no batch created) are for the
    Batch API (bot/offline/batch.py): only a batch creation takes them, and the image endpoints pass over them (they stay queued), as batches pass
    over the others.
    """
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    tokens: list[str] = []
    for part in parts:
        token = part.strip().lower()
        if not token:
            continue
        if not _FAULT_RE.match(token):
            raise ConfigError(
                f"IMAGEBOT_OFFLINE_FAULTS: unknown fault {part.strip()!r}; use ok, 400, 408, 409, 500, 502, 503, "
                "429:N, insufficient_quota, billing_hard_limit_reached, hang, drop, truncated, moderation, "
                "garbage, or for batches batch_failed, batch_expired, line_error, batch_dropped or batch_500, "
                "optionally ending in * (always)"
            )
        tokens.append(token.removeprefix("429:") if token.rstrip("*").endswith(_OUT_OF_CREDIT) else token)
    return tokens


def _new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


# --- the server ---------------------------------------------------------------------------


class OfflineImageServer:
    """An aiohttp server that behaves like the OpenAI Images API for every model of its price table, each
    by its own rules (gpt-image-2 by default).

    `latency` (seconds per render) and the fault queue may be changed at any time; `calls`
    records every image request in arrival order. The Files and Batch APIs are `batch_api`
    (bot/offline/batch.py): a batch takes `batch_latency` seconds from creation to its end, and
    `batch_calls` records every (method, path) of those endpoints.
    """

    def __init__(
        self,
        *,
        latency: float = 3.0,
        faults: str | Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        prices: PriceTable | None = None,
        batch_latency: float = 20.0,
    ) -> None:
        self.latency = latency
        self.batch_latency = batch_latency
        self.batch_calls: list[tuple[str, str]] = []
        self.calls: list[CallRecord] = []
        self.host = host
        self.port = port
        self.prices = prices if prices is not None else load_prices()
        self._faults: deque[str] = deque(parse_faults(faults))
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.batch_api = BatchApi(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OfflineImageServer:
        """Build from `IMAGEBOT_OFFLINE_LATENCY` (default 3), `IMAGEBOT_OFFLINE_BATCH_LATENCY` (default 20),
        `IMAGEBOT_OFFLINE_FAULTS` and `IMAGEBOT_PRICES`."""
        prices_path = environ.get("IMAGEBOT_PRICES") or None
        return cls(
            latency=_env_seconds(environ, "IMAGEBOT_OFFLINE_LATENCY", 3.0),
            faults=environ.get("IMAGEBOT_OFFLINE_FAULTS", ""),
            prices=load_prices(prices_path) if prices_path else None,
            batch_latency=_env_seconds(environ, "IMAGEBOT_OFFLINE_BATCH_LATENCY", 20.0),
        )

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT/v1`, for `AsyncOpenAI(base_url=...)`; only after start()."""
        if self._base_url is None:
            raise RuntimeError("the offline image server is not started")
        return self._base_url

    @property
    def pending_faults(self) -> tuple[str, ...]:
        """The fault tokens still queued, next first."""
        return tuple(self._faults)

    def push_faults(self, spec: str | Iterable[str]) -> None:
        """Append fault tokens (see `parse_faults`) to the queue; one is consumed per call."""
        self._faults.extend(parse_faults(spec))

    async def start(self) -> str:
        """Listen on host:port (port 0 picks a free one) and return the base URL."""
        if self._runner is not None:
            return self.base_url
        app = web.Application(
            client_max_size=rules.client_max_size(self.prices), middlewares=[self._error_middleware]
        )
        app.router.add_post("/v1/images/generations", self._generations)
        app.router.add_post("/v1/images/edits", self._edits)
        self.batch_api.add_routes(app.router)
        app.on_response_prepare.append(self._add_request_id)
        # handler_cancellation: a client that gives up (timeout) ends its `hang` or render.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._base_url = f"http://{host}:{port}/v1"
        return self._base_url

    async def stop(self) -> None:
        """Stop listening and end every request in flight (hangs included)."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.batch_api.stop()
        await runner.cleanup()
        self._base_url = None

    # --- plumbing ---

    @web.middleware
    async def _error_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = ApiError(exc.status, f"{exc.reason}: {request.method} {request.path}")
            return web.json_response(error.body(), status=exc.status)

    async def _add_request_id(self, request: web.Request, response: web.StreamResponse) -> None:
        request_id = request.get(_REQUEST_ID_KEY) or _new_request_id()
        response.headers.setdefault("x-request-id", request_id)

    def next_fault(self, *, batch: bool = False) -> str | None:
        """Take the next fault for an image call, or (`batch`) for a batch creation: each passes over the
        other's tokens, which stay queued."""
        for index, token in enumerate(self._faults):
            if (token.rstrip("*") in BATCH_FAULTS) != batch:
                continue
            if token.endswith("*"):
                return token[:-1]
            del self._faults[index]
            return token
        return None

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "generations")

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "edits")

    async def _handle(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        request_id = _new_request_id()
        request[_REQUEST_ID_KEY] = request_id
        record = CallRecord(
            endpoint=endpoint,
            request_id=request_id,
            client_request_id=request.headers.get("X-Client-Request-Id"),
        )
        self.calls.append(record)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await self._serve(request, endpoint, record)
        except ApiError as exc:
            record.status = exc.status
            return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        except Exception:
            record.status = 500
            raise
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _read_body(self, request: web.Request, endpoint: str) -> Body:
        if endpoint == "generations":
            raw = await request.read()
            try:
                fields = json.loads(raw)
            except ValueError:
                raise ApiError(
                    400,
                    "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.",
                ) from None
            if not isinstance(fields, dict):
                raise ApiError(400, "The request body must be a JSON object.")
            return Body(fields=fields, form=False)
        if not request.content_type.startswith("multipart/"):
            raise ApiError(
                400,
                f"Invalid Content-Type header ({request.content_type}), expected multipart/form-data.",
            )
        body = Body(fields={}, form=True)
        total, limit = 0, rules.client_max_size(self.prices)
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                data = bytes(await part.read(decode=True))
                total += len(data)
                if total > limit:
                    raise ApiError(413, f"The request body is over the {limit:,} byte limit.")
                self._add_part(body, part.name, data)
        except ValueError as exc:
            raise ApiError(400, f"The multipart/form-data body could not be parsed: {exc}") from None
        return body

    @staticmethod
    def _add_part(body: Body, name: str, data: bytes) -> None:
        if name in ("image", "image[]"):
            body.images.append(data)
        elif name == "mask":
            body.mask = data
        elif name != "markup":
            body.fields[name] = data.decode("utf-8", errors="replace")

    def _fill_record(self, record: CallRecord, body: Body) -> None:
        def text(name: str) -> str | None:
            value = body.fields.get(name)
            return value if isinstance(value, str) else None

        record.model = text("model")
        record.prompt = text("prompt")
        record.size = text("size")
        record.quality = text("quality")
        record.output_format = text("output_format")
        stream = body.fields.get("stream")
        record.stream = stream is True or (
            isinstance(stream, str) and stream.strip().lower() in ("true", "1")
        )
        partials = body.fields.get("partial_images")
        with contextlib.suppress(TypeError, ValueError):
            record.partial_images = int(partials) if partials is not None else 0
        record.fields = tuple(sorted(body.fields))
        record.images = len(body.images)
        record.mask = body.mask is not None

    async def _serve(self, request: web.Request, endpoint: str, record: CallRecord) -> web.StreamResponse:
        body = await self._read_body(request, endpoint)
        self._fill_record(record, body)
        fault = self.next_fault()
        if fault == "ok":
            fault = None
        record.fault = fault
        if fault is not None and fault not in ("drop", "truncated"):
            return await self._fault_response(request, record, fault)
        params = rules.validate(body, endpoint, self.prices)
        if endpoint == "edits":
            images, mask = await asyncio.to_thread(rules.open_images, body.images, body.mask)
            if mask is not None:
                rules.check_mask(mask, images[0])
            params = dataclasses.replace(params, images=tuple(images), mask=mask is not None)
        if params.stream:
            return await self._stream(
                request, params, record, drop=fault == "drop", truncated=fault == "truncated"
            )
        return await self._respond(
            request, params, record, drop=fault == "drop", truncated=fault == "truncated"
        )

    async def _fault_response(
        self, request: web.Request, record: CallRecord, fault: str
    ) -> web.StreamResponse:
        request_id = record.request_id
        if fault in ("500", "502", "503"):
            raise ApiError(
                int(fault),
                f"The server had an error while processing your request. Sorry about that! "
                f"You can retry your request, or contact us through our help center if the error persists. "
                f"(Please include the request ID {request_id} in your message.)",
                type_="server_error",
            )
        if fault == "408":
            raise ApiError(408, "Request timed out.", type_="timeout")
        if fault in ("400", "409"):
            # A client error is never retried, whatever a gateway's headers say (docs/rules.md §4).
            raise ApiError(
                int(fault),
                "The request could not be processed in its current state.",
                type_="invalid_request_error",
                headers={"x-should-retry": "true"},
            )
        if fault.startswith("429"):
            _, _, seconds = fault.partition(":")
            raise ApiError(
                429,
                "Rate limit reached for images per minute. Please try again later.",
                type_="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": seconds} if seconds else None,
            )
        if fault in _OUT_OF_CREDIT:
            raise ApiError(
                429,
                "You exceeded your current quota, please check your plan and billing details. For more "
                "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                type_=fault,
                code=fault,
            )
        if fault == "moderation":
            raise ApiError(
                400,
                MODERATION_MESSAGE.format(request_id=request_id),
                type_="image_generation_user_error",
                code="moderation_blocked",
            )
        if fault == "garbage":
            record.status = 200
            if record.stream:
                response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
                await response.prepare(request)
                prefix = "image_generation" if record.endpoint == "generations" else "image_edit"
                await response.write(f'event: {prefix}.completed\ndata: {{"b64_json": <<garbage\n\n'.encode())
                await response.write_eof()
                return response
            return web.Response(status=200, body=GARBAGE_BODY, content_type="application/json")
        # hang: answer nothing; the client's disconnect (or stop()) cancels this task.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def _sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _respond(
        self, request: web.Request, params: Params, record: CallRecord, *, drop: bool, truncated: bool = False
    ) -> web.StreamResponse:
        started = time.monotonic()
        latency = self.latency
        _, b64 = await asyncio.to_thread(drawing.render_final, params)
        if truncated:
            b64 = _cut_off(b64)
        payload = self.images_response(params, b64)
        raw = await asyncio.to_thread(lambda: json.dumps(payload).encode("utf-8"))
        await self._sleep_until(started + latency)
        record.status = 200
        if not drop:
            return web.Response(body=raw, status=200, content_type="application/json")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = len(raw)
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            await response.write(raw[: len(raw) // 2])
            self.cut(request)
        return response

    async def _stream(
        self, request: web.Request, params: Params, record: CallRecord, *, drop: bool, truncated: bool = False
    ) -> web.StreamResponse:
        started = time.monotonic()
        latency = self.latency
        final, b64 = await asyncio.to_thread(drawing.render_final, params)
        if truncated:
            b64 = _cut_off(b64)
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"},
        )
        record.status = 200
        base = {
            "background": params.background if params.background == "transparent" else "opaque",
            "output_format": params.output_format,
            "quality": params.rendered_quality,
            "size": params.size,
        }
        steps = params.partial_images + 1
        try:
            await response.prepare(request)
            sent = 0
            for index in range(params.partial_images):
                partial = await asyncio.to_thread(drawing.partial, final, params, index)
                await self._sleep_until(started + latency * (index + 1) / steps)
                event = {
                    "type": f"{params.event_prefix}.partial_image",
                    "b64_json": partial,
                    "created_at": int(time.time()),
                    "partial_image_index": index,
                    **base,
                }
                await response.write(await asyncio.to_thread(_sse, event))
                sent += 1
                if drop:
                    break
            if drop:
                self.cut(request)
                return response
            await self._sleep_until(started + latency)
            completed = {
                "type": f"{params.event_prefix}.completed",
                "b64_json": b64,
                "created_at": int(time.time()),
                **base,
                "usage": rules.usage(params, self.prices.model(params.model), sent),
            }
            await response.write(await asyncio.to_thread(_sse, completed))
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; aiohttp finishes quietly when handed the response back
        return response

    def images_response(self, params: Params, b64: str) -> dict[str, Any]:
        """The JSON body of a non-streamed answer (an ImagesResponse, `usage` by the price table); a batch
        output line carries the same body."""
        usage = rules.usage(params, self.prices.model(params.model), 0)
        usage["output_tokens_details"] = {"image_tokens": usage["output_tokens"], "text_tokens": 0}
        return {
            "created": int(time.time()),
            "data": [{"b64_json": b64}],
            "background": params.background if params.background == "transparent" else "opaque",
            "output_format": params.output_format,
            "quality": params.rendered_quality,
            "size": params.size,
            "usage": usage,
        }

    def cut(self, request: web.Request) -> None:
        """Close the connection mid-body: the client sees a truncated response."""
        transport = request.transport
        if transport is not None:
            # close(), not abort(): what was written is flushed first, so the client gets a partial body.
            transport.close()


def _env_seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds; use e.g. 3 or 0.5")
    return seconds


def _cut_off(b64: str) -> str:
    """The first half of an image, still valid base64 (whole 4-character groups): it does not decode."""
    return b64[: len(b64) // 8 * 4]


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _serve_forever(server: OfflineImageServer) -> None:
    base_url = await server.start()
    print(f"offline image server at {base_url} (latency {server.latency:g}s)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main_forever(
    host: str,
    port: int,
    latency: float,
    faults: str,
    prices: PriceTable | None = None,
    batch_latency: float = 20.0,
) -> None:
    """Run the server in the foreground until interrupted (`imagebot offline-server`)."""
    server = OfflineImageServer(
        latency=latency, faults=faults, host=host, port=port, prices=prices, batch_latency=batch_latency
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(server))
