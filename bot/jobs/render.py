"""The API call: AsyncOpenAI against OpenAI, a gateway, or the offline server (docs/rules.md §4).

One retry budget per image: the SDK makes exactly one HTTP attempt per call (`max_retries=0`) and this
module retries, so every attempt counts, a stream that breaks after it started included. Retried: 5xx,
429 and 408 (honouring Retry-After), timeouts and broken connections; never another 4xx, whatever its
headers say (the SDK alone would also retry 409 and anything marked `x-should-retry: true`).
A recording transport sees every HTTP attempt, so each request id is kept and every attempt that
may have been billed without giving us an image is counted. Before a retry that follows such an
attempt the caller is asked (`before_retry`), so it can extend the reservation or refuse; if it cannot
(a limit, or a database error), the image ends there with what may have been billed.

Not retried either: a 429 for an account out of credit (`insufficient_quota`, `billing_hard_limit_reached`),
and a Retry-After longer than `retry_after_max` (the message says when to try again). One deadline per
image (`image_deadline`) bounds all its attempts together. An answer with HTTP 200 was billed: if its image
cannot be decoded, that attempt counts as billed.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import datetime
import email.utils
import io
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
from PIL import Image

from bot import lazy, metrics
from bot.errors import ApiRejected, ModerationRefused, ProviderError, QuotaExceeded
from bot.i18n import Msg, msg
from bot.model.pricing import Usage
from bot.model.request import ImageRequest
from bot.transport import AiohttpTransport

if TYPE_CHECKING:
    import openai
else:
    openai = lazy.module("openai")  # imported by the first render or batch (bot/lazy.py)

log = logging.getLogger("imagebot.render")

PreviewCallback = Callable[[bytes, int], Awaitable[None]]
# Called before a retry that follows an attempt that may have been billed; raises QuotaExceeded to refuse it.
BeforeRetry = Callable[[], Awaitable[None]]
RETRY_STATUSES = frozenset({408, 429})  # and every 5xx
BACKOFF_SECONDS = 0.5  # the first retry's wait (doubling, at most MAX_BACKOFF_SECONDS), as the SDK's own
MAX_BACKOFF_SECONDS = 8.0
RETRY_AFTER_MAX_SECONDS = 60.0  # IMAGEBOT_RETRY_AFTER_MAX: a longer Retry-After fails the image at once
IMAGE_DEADLINE_SECONDS = 900.0  # IMAGEBOT_IMAGE_DEADLINE: all attempts of one image together
# A 429 with one of these error codes is an account out of credit, not a rate limit: no retry can succeed.
OUT_OF_CREDIT_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
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


@dataclass(frozen=True, slots=True, kw_only=True)
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


_ATTEMPTS: contextvars.ContextVar[list[Attempt] | None] = contextvars.ContextVar(
    "imagebot_attempts", default=None
)


class _RecordingTransport(AiohttpTransport):
    """Records every attempt (request id, status, whether it was delivered) for the current render."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        attempts = _ATTEMPTS.get()
        attempt = Attempt()
        if attempts is not None:
            attempts.append(attempt)
        try:
            response = await super().handle_async_request(request)
        except (httpx2.ConnectError, httpx2.ConnectTimeout):
            attempt.delivered = False  # no connection was made: the request never left
            metrics.ATTEMPTS.labels("connect_error").inc()
            raise
        except httpx2.TimeoutException:
            metrics.ATTEMPTS.labels("timeout").inc()
            raise
        except httpx2.TransportError:  # broke after the request went out (a hang-up, a reset): may be billed
            metrics.ATTEMPTS.labels("disconnected").inc()
            raise
        attempt.status = response.status_code
        attempt.request_id = response.headers.get("x-request-id")
        metrics.ATTEMPTS.labels(f"{response.status_code // 100}xx").inc()
        log.info(
            "api attempt",
            extra={
                "request_id": attempt.request_id,
                "status": attempt.status,
                "client_request_id": request.headers.get("x-client-request-id"),
            },
        )
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
    """The image's bytes and size; ValueError or OSError if it is not a whole PNG, JPEG or WebP (an answer
    cut off half way). Checks the file's structure, not every pixel: a 4K image decodes in ~0.1 s of CPU."""
    data = base64.b64decode(b64)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, kind = image.width, image.height, image.format
            if kind == "PNG":
                image.verify()  # every chunk's CRC, through IEND
    except (OSError, ValueError):
        raise
    except Exception as exc:  # Pillow says "broken PNG" with SyntaxError, and has more types besides
        raise ValueError(f"{exc.__class__.__name__}: {exc}") from exc
    if kind == "JPEG" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        raise ValueError("the JPEG image ends before its end marker")
    if kind == "WEBP" and int.from_bytes(data[4:8], "little") + 8 > len(data):
        raise ValueError("the WebP image is shorter than its header says")
    return data, width, height


class Renderer:
    """Makes one image per call. Owns the AsyncOpenAI client and its HTTP pool."""

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str,
        timeout: float,
        max_retries: int,
        backoff: float = BACKOFF_SECONDS,
        retry_after_max: float = RETRY_AFTER_MAX_SECONDS,
        image_deadline: float = IMAGE_DEADLINE_SECONDS,
    ) -> None:
        self.timeout = timeout  # one attempt's, at most
        self.max_retries = max_retries  # retries per image, on top of its first attempt
        self.backoff = backoff
        self.retry_after_max = retry_after_max
        self.image_deadline = image_deadline
        self._base_url, self._api_key = base_url, api_key
        self._client: openai.AsyncOpenAI | None = None
        self._making = asyncio.Lock()

    async def sdk(self) -> openai.AsyncOpenAI:
        """The SDK's client, made on first use (Core.start asks for it before the lease starts). Its import
        (bot/lazy.py: most of a second of CPU) runs in a thread, so the event loop keeps answering; one-shot
        commands that build no core (`imagebot --help`, `report`, `quota`) never pay it."""
        if self._client is not None:  # every attempt asks: no lock once the client is made
            return self._client
        async with self._making:  # one client, even when two images of one job ask at once
            if self._client is None:
                await asyncio.to_thread(lazy.load, "openai")
                self._client = self._new_client()
        return self._client

    def _new_client(self) -> openai.AsyncOpenAI:
        transport = _RecordingTransport(
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
        )
        return openai.AsyncOpenAI(
            base_url=self._base_url,
            api_key=self._api_key,
            timeout=self.timeout,
            max_retries=0,  # every retry is ours, counted against the one budget
            # trust_env off: proxies from the environment would be mounted as transports that record
            # nothing; our transport's aiohttp session reads HTTP(S)_PROXY and NO_PROXY itself.
            http_client=httpx2.AsyncClient(
                transport=transport, timeout=self.timeout, follow_redirects=True, trust_env=False
            ),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

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
        if request.moderation is not None and not request.is_edit:  # the edits endpoint has no such parameter
            params["moderation"] = request.moderation
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
        before_retry: BeforeRetry | None = None,
        attempts: list[Attempt] | None = None,
    ) -> RenderResult:
        """Make one image in at most 1 + `max_retries` HTTP attempts.

        Raises UserError (fixable by the user) or ProviderError (with request ids and the attempts that may
        have been billed). `attempts`, if given, is filled as attempts are made, so a caller that cancels
        the render can still tell which of them may have cost money.
        """
        attempts = [] if attempts is None else attempts
        token = _ATTEMPTS.set(attempts)
        started = time.monotonic()
        deadline = started + self.image_deadline  # the loop's clock is time.monotonic()
        try:
            for retry in range(self.max_retries + 1):
                left = deadline - time.monotonic()
                if left <= 0:  # the caller's reservation for the retry took the rest of the time
                    raise self._past_deadline(attempts, client_request_id)
                per_attempt = min(self.timeout, left)
                scope = asyncio.timeout_at(deadline)
                try:
                    async with scope:
                        b64, usage = await self._call(
                            request, partials, on_preview, client_request_id, per_attempt
                        )
                    break
                except TimeoutError:
                    if not scope.expired():
                        raise
                    raise self._past_deadline(attempts, client_request_id) from None
                except (openai.APIError, _StreamBroken) as exc:
                    if isinstance(exc, openai.APITimeoutError) and per_attempt < self.timeout:
                        raise self._past_deadline(attempts, client_request_id) from None
                    failure = exc
                await self._retry_or_raise(
                    failure, retry, attempts, deadline, client_request_id, before_retry
                )
            try:
                data, width, height = await asyncio.to_thread(_decode, b64)
            except (ValueError, OSError) as exc:
                raise ProviderError(
                    msg("render.undecodable", error=f"{exc.__class__.__name__}: {str(exc)[:120]}"),
                    _ids(attempts),
                    billed_attempts=_billed(attempts),
                    attempts=len(attempts),
                ) from None
            # Only now is the answer an image: until here a 200 counts as billed without one (docs/rules.md §4).
            for attempt in reversed(attempts):
                if attempt.status == 200:
                    attempt.completed = True
                    break
        except (
            ValueError,
            TypeError,
            OSError,
        ) as exc:  # unreadable JSON, base64 or image: billed all the same
            raise ProviderError(
                msg("render.not_an_image", error=exc.__class__.__name__),
                _ids(attempts),
                billed_attempts=_billed(attempts),
                attempts=len(attempts),
            ) from None
        finally:
            _ATTEMPTS.reset(token)
        return RenderResult(
            data=data,
            width=width,
            height=height,
            format=request.format,
            usage=usage,
            request_ids=_ids(attempts),
            attempts=len(attempts),
            lost_attempts=_billed(attempts),
            elapsed=time.monotonic() - started,
        )

    def _past_deadline(self, attempts: list[Attempt], client_request_id: str) -> ProviderError:
        n = len(attempts)
        return ProviderError(
            msg("render.past_deadline", n=n, deadline=f"{self.image_deadline:g}"),
            _ids(attempts) or ((client_request_id,) if client_request_id else ()),
            billed_attempts=_billed(attempts),
            attempts=n,
        )

    async def _retry_or_raise(
        self,
        failure: Exception,
        retry: int,
        attempts: list[Attempt],
        deadline: float,
        client_request_id: str,
        before_retry: BeforeRetry | None,
    ) -> None:
        """Wait for retry number `retry + 1`, or raise the error that ends the image: the failure cannot
        be retried (a 4xx, an account out of credit, the budget spent), the wait it asks is too long or
        would pass the deadline, or the caller cannot reserve the retry."""

        def ends(not_retried: Msg | None = None) -> Exception:
            return _translate(failure, attempts, self.timeout, client_request_id, not_retried)

        if _out_of_credit(failure):
            metrics.OUT_OF_CREDIT.inc()
            log.error(
                "image API account out of credit: add credit to the account",
                extra={
                    "code": getattr(failure, "code", None),
                    "request_ids": ",".join(_ids(attempts)),
                    "client_request_id": client_request_id,
                },
            )
            raise ends() from None
        if retry == self.max_retries or not _retryable(failure):
            raise ends() from None
        asked = _retry_after(failure)
        if asked is not None and asked > self.retry_after_max:
            raise ends(
                msg(
                    "render.wait_too_long",
                    asked=math.ceil(asked),
                    most=f"{self.retry_after_max:g}",
                    again=_try_again(asked),
                )
            ) from None
        delay = asked if asked is not None and asked >= 0 else _backoff(retry, self.backoff)
        if time.monotonic() + delay >= deadline:
            raise ends(msg("render.after_deadline", deadline=f"{self.image_deadline:g}")) from None
        if attempts and attempts[-1].possibly_billed and before_retry is not None:
            try:
                await before_retry()
            except QuotaExceeded as refused:
                raise ends(msg("render.retry_refused", refused=refused.text)) from None
            except Exception as broken:  # a database error: the retry is not reserved, so it is not made
                log.error(
                    "could not reserve a retry",
                    exc_info=True,
                    extra={"request_ids": ",".join(_ids(attempts)), "client_request_id": client_request_id},
                )
                raise ends(msg("render.retry_not_reserved", error=broken.__class__.__name__)) from None
        log.warning(
            "api attempt failed; retrying",
            extra={
                "request_ids": ",".join(_ids(attempts)),
                "error": type(failure).__name__,
                "retry_in_s": round(delay, 2),
                "client_request_id": client_request_id,
            },
        )
        await asyncio.sleep(delay)

    async def _call(
        self,
        request: ImageRequest,
        partials: int,
        on_preview: PreviewCallback | None,
        client_request_id: str,
        attempt_seconds: float,
    ) -> tuple[str, Usage]:
        params = self._params(request, partials, client_request_id)
        params["timeout"] = attempt_seconds
        images = (await self.sdk()).images
        if not partials:
            # Read the body on the loop, but parse a 4K answer (tens of MB of JSON) on a thread.
            raw_images = images.with_raw_response
            raw = await (raw_images.edit if request.is_edit else raw_images.generate)(**params)
            big = len(raw.http_response.content) > INLINE_PARSE_BYTES
            response = await asyncio.to_thread(raw.parse) if big else raw.parse()
            if (
                not isinstance(response, openai.types.ImagesResponse)
                or not response.data
                or not response.data[0].b64_json
            ):
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


def _billed(attempts: list[Attempt]) -> int:
    return sum(a.possibly_billed for a in attempts)


def _retryable(exc: Exception) -> bool:
    """5xx, 429, 408, timeouts and broken connections (a broken stream too); never another 4xx."""
    if isinstance(exc, _StreamBroken | openai.APIConnectionError):  # APITimeoutError is one of these
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in RETRY_STATUSES
    return False


def _retry_after(exc: Exception) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, or Retry-After as seconds or an HTTP date)."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            moment = email.utils.parsedate_to_datetime(value)
            return moment.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):
        return None


def _backoff(retry: int, backoff: float) -> float:
    """The wait before retry number `retry + 1` when the server names none: exponential, with jitter."""
    return min(backoff * 2**retry, MAX_BACKOFF_SECONDS) * (1 - 0.25 * random.random())


def _try_again(seconds: float) -> Msg:
    """`try again at 14:02:07 UTC (in 120 s)`: the wall time, and how long from now."""
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    when = f"{moment:%Y-%m-%d %H:%M:%S}" if seconds > 12 * 3600 else f"{moment:%H:%M:%S}"
    return msg("render.try_again_at", when=when, seconds=math.ceil(seconds))


def _out_of_credit(exc: Exception) -> bool:
    """A 429 that no retry can fix: the API account has no credit left (told apart by its error code)."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code != 429:
        return False
    return (
        getattr(exc, "code", None) in OUT_OF_CREDIT_CODES or getattr(exc, "type", None) in OUT_OF_CREDIT_CODES
    )


def _transport_error(exc: BaseException) -> httpx2.TransportError | None:
    """The transport's own error under an SDK error: it says what happened and where."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx2.TransportError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _translate(
    exc: Exception,
    attempts: list[Attempt],
    timeout: float,
    client_id: str = "",
    not_retried: Msg | None = None,
) -> Exception:
    """The last failure of a render as the error the job reports, with every attempt's request id."""
    # With no answer there is no x-request-id; our X-Client-Request-Id still identifies the call.
    ids = _ids(attempts) or ((client_id,) if client_id else ())
    n = len(attempts)
    billed = _billed(attempts)
    tries = msg("render.tries", n=n, why=msg("render.not_retried", why=not_retried) if not_retried else "")
    cause = _transport_error(exc)
    if isinstance(exc, _StreamBroken):
        reason = f" ({cause})" if cause is not None and str(cause) else ""
        return ProviderError(
            msg("render.stream_broke", reason=reason, tries=tries),
            ids,
            billed_attempts=billed,
            attempts=n,
        )
    if isinstance(exc, openai.APIConnectionError) and isinstance(
        cause, httpx2.ConnectError | httpx2.ConnectTimeout
    ):
        # No connection was made (refused, no such host, TLS, none in time): say which, and where.
        return ProviderError(
            msg("render.unreachable", cause=str(cause), tries=tries), ids, billed_attempts=billed, attempts=n
        )
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(
            msg("render.timeout", timeout=f"{timeout:g}", tries=tries),
            ids,
            billed_attempts=billed,
            attempts=n,
        )
    if isinstance(exc, openai.APIConnectionError):
        reason = f" ({cause})" if cause is not None and str(cause) else ""
        return ProviderError(
            msg("render.connection_broke", reason=reason, tries=tries),
            ids,
            billed_attempts=billed,
            attempts=n,
        )
    if isinstance(exc, openai.BadRequestError):
        body = exc.body if isinstance(exc.body, dict) else {}
        code = body.get("code") or (body.get("error") or {}).get("code") if isinstance(body, dict) else None
        message = str(body.get("message") or exc.message)[:300]
        if code == "moderation_blocked" or "safety" in message.lower():
            return ModerationRefused(
                msg("render.moderation"),
                ids,
                n,
                billed_attempts=billed,
            )
        return ApiRejected(msg("render.rejected", message=message), ids, n, billed_attempts=billed)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return ProviderError(
            msg("render.credentials"),
            ids,
            billed_attempts=billed,
            attempts=n,
        )
    if _out_of_credit(exc):
        return ProviderError(
            msg("render.out_of_credit", code=getattr(exc, "code", None) or "insufficient_quota", tries=tries),
            ids,
            billed_attempts=billed,
            attempts=n,
        )
    if isinstance(exc, openai.RateLimitError):
        asked = _retry_after(exc)
        hint = (
            ""
            if not_retried
            else msg("render.hint", hint=_try_again(asked) if asked else msg("render.in_a_minute"))
        )
        return ProviderError(
            msg("render.rate_limited", tries=tries, hint=hint),
            ids,
            billed_attempts=billed,
            attempts=n,
        )
    if isinstance(exc, openai.APIStatusError):
        return ProviderError(
            msg("render.failed", status=exc.status_code, tries=tries), ids, billed_attempts=billed, attempts=n
        )
    # An answer we could not read (an error event mid-stream, a malformed body): it may have been billed.
    return ProviderError(
        msg("render.unreadable", tries=tries),
        ids,
        billed_attempts=max(billed, 1),
        attempts=n,
    )
