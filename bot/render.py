"""The API call: AsyncOpenAI against OpenAI, a gateway, or the offline server (SPEC §4).

The SDK retries 5xx, 429 (honouring Retry-After) and timeouts itself. The one case it misses is a
stream that breaks after it started; that is retried here, within the same retry budget.
A recording transport sees every HTTP attempt, so each request id is kept and every attempt that
may have been billed without giving us an image is counted.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
import openai

from . import metrics
from .errors import ApiRejected, ModerationRefused, ProviderError
from .images import image_size
from .pricing import Usage
from .request import ImageRequest

log = logging.getLogger("imagebot.render")

PreviewCallback = Callable[[bytes, int], Awaitable[None]]
# Answers above this are parsed on a thread (a 4K image is tens of MB of JSON); below it the thread
# hop costs more than the parse.
INLINE_PARSE_BYTES = 1 << 20


@dataclass
class Attempt:
    """One HTTP attempt as the transport saw it."""

    request_id: str | None = None
    status: int | None = None
    delivered: bool = True  # False when the request never reached the server (connect failure)
    completed: bool = False  # True for the attempt whose image we received

    @property
    def possibly_billed(self) -> bool:
        """Reached the provider, did not fail with an error status, and gave us no image."""
        return self.delivered and not self.completed and (self.status is None or self.status < 300)


@dataclass(frozen=True, slots=True)
class RenderResult:
    """One rendered image and what it took."""

    data: bytes
    width: int
    height: int
    format: str
    usage: Usage
    request_ids: tuple[str, ...]
    attempts: int
    lost_attempts: int  # attempts that may have been billed without an image
    elapsed: float


_ATTEMPTS: contextvars.ContextVar[list[Attempt] | None] = contextvars.ContextVar("imagebot_attempts", default=None)


# The SDK's aiohttp backend (what openai.DefaultAioHttpClient uses): httpx's pool walks every open
# connection on each request and release, which costs ~30% of the bot's CPU with 200 calls in flight.
try:
    from openai._vendor.httpx_aiohttp import AiohttpTransport as _Transport
    _HttpClient: Any = openai.DefaultAioHttpClient
except ImportError:  # an SDK without it: httpx's own transport
    _Transport = httpx2.AsyncHTTPTransport  # type: ignore[assignment,misc]
    _HttpClient = openai.DefaultAsyncHttpxClient


# aiohttp's errors for a request that never left: no connection could be made (or none in time).
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class _RecordingTransport(_Transport):
    """Records every attempt (request id, status, whether it was delivered) for the current render."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        attempts = _ATTEMPTS.get()
        attempt = Attempt()
        if attempts is not None:
            attempts.append(attempt)
        try:
            response = await super().handle_async_request(request)
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, _NOT_SENT):
                # The aiohttp backend files every broken connection under "connect" errors, even one that
                # broke after the request went out (the server hung up, a reset): that may have been billed.
                metrics.ATTEMPTS.labels("disconnected").inc()
                raise
            attempt.delivered = False
            metrics.ATTEMPTS.labels("connect_error").inc()
            raise
        except httpx2.TimeoutException:
            metrics.ATTEMPTS.labels("timeout").inc()
            raise
        attempt.status = response.status_code
        attempt.request_id = response.headers.get("x-request-id")
        metrics.ATTEMPTS.labels(f"{response.status_code // 100}xx").inc()
        log.info("api attempt", extra={"request_id": attempt.request_id, "status": attempt.status,
                                       "client_request_id": request.headers.get("x-client-request-id")})
        return response


class _StreamBroken(Exception):
    pass


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    details = getattr(raw, "input_tokens_details", None)
    text = getattr(details, "text_tokens", None)
    image = getattr(details, "image_tokens", None)
    if text is None and image is None:
        text, image = getattr(raw, "input_tokens", 0) or 0, 0
    return Usage(
        text_tokens=int(text or 0),
        image_tokens=int(image or 0),
        output_tokens=int(getattr(raw, "output_tokens", 0) or 0),
        cached_text_tokens=int(getattr(details, "cached_tokens", 0) or 0),
    )


def _decode(b64: str) -> tuple[bytes, int, int]:
    data = base64.b64decode(b64)
    width, height = image_size(data)
    return data, width, height


class Renderer:
    """Makes one image per call. Owns the AsyncOpenAI client and its HTTP pool."""

    def __init__(self, *, base_url: str | None, api_key: str, timeout: float, max_retries: int) -> None:
        self.timeout = timeout
        self.max_retries = max_retries
        transport = _RecordingTransport(limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100))
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            http_client=_HttpClient(transport=transport),
        )

    async def close(self) -> None:
        await self.client.close()

    def _params(self, request: ImageRequest, partials: int, client_request_id: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "prompt": request.prompt,
            "size": str(request.size),
            "quality": request.quality,
            "output_format": request.format,
            "extra_headers": {"X-Client-Request-Id": client_request_id},
        }
        if request.compression is not None and request.format != "png":
            params["output_compression"] = request.compression
        if partials:
            params["stream"] = True
            params["partial_images"] = partials
        if request.is_edit:
            params["image"] = [(ref.name, ref.data, ref.mime) for ref in request.references]
            if request.mask is not None:
                params["mask"] = (request.mask.name, request.mask.data, "image/png")
        return params

    async def render(
        self,
        request: ImageRequest,
        *,
        partials: int = 0,
        on_preview: PreviewCallback | None = None,
        client_request_id: str = "",
    ) -> RenderResult:
        """Make one image. Raises UserError (fixable by the user) or ProviderError (with request ids)."""
        attempts: list[Attempt] = []
        token = _ATTEMPTS.set(attempts)
        started = time.monotonic()
        try:
            for stream_try in range(self.max_retries + 1):
                try:
                    b64, usage = await self._call(request, partials, on_preview, client_request_id)
                    break
                except _StreamBroken:
                    if stream_try == self.max_retries:
                        raise ProviderError(
                            f"the image stream broke before the image arrived, {len(attempts)} attempts",
                            _ids(attempts) or (client_request_id,), possibly_billed=True, attempts=len(attempts),
                        ) from None
                    log.warning("stream broke; retrying", extra={"request_ids": _ids(attempts)})
            for attempt in reversed(attempts):
                if attempt.status == 200:
                    attempt.completed = True
                    break
            data, width, height = await asyncio.to_thread(_decode, b64)
        except openai.APIError as exc:
            raise _translate(exc, attempts, self.timeout, client_request_id) from None
        except (ValueError, TypeError, OSError) as exc:  # unreadable JSON, base64 or image: it may still be billed
            raise ProviderError(
                f"the image API sent an answer that is not an image ({type(exc).__name__})",
                _ids(attempts), possibly_billed=True, attempts=len(attempts),
            ) from None
        finally:
            _ATTEMPTS.reset(token)
        return RenderResult(
            data=data, width=width, height=height, format=request.format, usage=usage,
            request_ids=_ids(attempts), attempts=len(attempts),
            lost_attempts=sum(a.possibly_billed for a in attempts), elapsed=time.monotonic() - started,
        )

    async def _call(
        self, request: ImageRequest, partials: int, on_preview: PreviewCallback | None, client_request_id: str
    ) -> tuple[str, Usage]:
        params = self._params(request, partials, client_request_id)
        images = self.client.images
        if not partials:
            # Read the body on the loop, but parse a 4K answer (tens of MB of JSON) on a thread.
            raw_images = images.with_raw_response
            raw = await (raw_images.edit if request.is_edit else raw_images.generate)(**params)
            big = len(raw.http_response.content) > INLINE_PARSE_BYTES
            response = await asyncio.to_thread(raw.parse) if big else raw.parse()
            if not isinstance(response, openai.types.ImagesResponse) or not response.data or not response.data[0].b64_json:
                raise ValueError("no image in the response")
            return response.data[0].b64_json, _usage(response.usage)
        stream = await (images.edit if request.is_edit else images.generate)(**params)
        try:
            async for event in stream:
                kind = getattr(event, "type", "")
                if kind.endswith("partial_image"):
                    if on_preview is not None:
                        preview = await asyncio.to_thread(base64.b64decode, event.b64_json)
                        await on_preview(preview, int(getattr(event, "partial_image_index", 0)))
                elif kind.endswith("completed"):
                    return event.b64_json, _usage(getattr(event, "usage", None))
        except (openai.APIConnectionError, httpx2.TransportError) as exc:
            raise _StreamBroken() from exc
        finally:
            await stream.close()
        raise _StreamBroken()


def _ids(attempts: list[Attempt]) -> tuple[str, ...]:
    return tuple(a.request_id for a in attempts if a.request_id)


def _translate(exc: openai.APIError, attempts: list[Attempt], timeout: float, client_id: str = "") -> Exception:
    # With no answer there is no x-request-id; our X-Client-Request-Id still identifies the call.
    ids = _ids(attempts) or ((client_id,) if client_id else ())
    n = len(attempts)
    billed = any(a.possibly_billed for a in attempts)
    tries = f"after {n} attempt{'s' if n != 1 else ''}"
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(f"the image API did not answer within {timeout:g} s, {tries}", ids,
                             possibly_billed=billed, attempts=n)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"the connection to the image API failed, {tries}", ids,
                             possibly_billed=billed, attempts=n)
    if isinstance(exc, openai.BadRequestError):
        body = exc.body if isinstance(exc.body, dict) else {}
        code = body.get("code") or (body.get("error") or {}).get("code") if isinstance(body, dict) else None
        message = str(body.get("message") or exc.message)[:300]
        if code == "moderation_blocked" or "safety" in message.lower():
            return ModerationRefused(
                "the image API's safety system refused this request; rephrase the prompt or change the image"
                + (f" (request id {', '.join(ids)})" if ids else ""),
                ids, n,
            )
        return ApiRejected(f"the image API rejected the request: {message}"
                           + (f" (request id {', '.join(ids)})" if ids else ""), ids, n)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderError("the image API refused the bot's credentials; an admin should check OPENAI_API_KEY",
                             ids, attempts=n)
    if isinstance(exc, openai.RateLimitError):
        return ProviderError(f"the image API is rate limiting us (HTTP 429), {tries}; try again in a minute",
                             ids, attempts=n)
    if isinstance(exc, openai.APIStatusError):
        return ProviderError(f"the image API failed (HTTP {exc.status_code}), {tries}", ids, attempts=n)
    return ProviderError(f"the image API sent an answer we could not read, {tries}", ids,
                         possibly_billed=True, attempts=n)
