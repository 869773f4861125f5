"""An httpx2 transport over aiohttp, built on the public APIs of both, for the OpenAI SDK's HTTP client.

Why not the SDK's own aiohttp backend (`openai.DefaultAioHttpClient`): its transport is private
(`openai._vendor.httpx_aiohttp`), and it files every aiohttp connection error under `ConnectTimeout`
(`aiohttp.ClientConnectionError` first in its map), so a refused connection reached the user as "did not
answer within 360 s". Why aiohttp, not httpx2's own transport: httpx's pool walks every open connection on
each request and release, which cost ~30% of the bot's CPU with 200 calls in flight.

Errors are mapped by what happened, and say where: `ConnectError` (no connection: refused, no such host,
TLS handshake; the request never left), `ConnectTimeout` (no connection in time; never left), `ReadTimeout`
(no answer in time), `RemoteProtocolError` / `ReadError` (the connection broke after the request went out).
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx2

CHUNK_BYTES = 64 * 1024


def _where(url: httpx2.URL) -> str:
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


def _seconds(value: Any) -> str:
    return f" within {value:g} s" if isinstance(value, int | float) else ""


def _connect_failure(exc: aiohttp.ClientConnectorError, where: str) -> str:
    """`connection refused by 127.0.0.1:9`, `no such host api.example (...)`, in the OS's words."""
    os_error = exc.os_error
    reason = (getattr(os_error, "strerror", None) or str(os_error) or exc.__class__.__name__).rstrip(".")
    if isinstance(os_error, ConnectionRefusedError) or getattr(os_error, "errno", None) == errno.ECONNREFUSED:
        return f"connection refused by {where}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return f"TLS handshake with {where} failed ({reason})"
    return f"could not connect to {where} ({reason})"


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """Sends httpx2 requests with one aiohttp ClientSession (made on first use, on the running loop).

    `ConnectError` and `ConnectTimeout` from it mean the request never reached the server; any other
    `TransportError` may come after it did.
    """

    def __init__(
        self,
        *,
        limits: httpx2.Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits or httpx2.Limits(max_connections=100, max_keepalive_connections=20)
        self.ssl_context = ssl_context or httpx2.create_ssl_context()
        self._session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry or 5.0,
            ssl=self.ssl_context,
        )
        # trust_env: HTTP(S)_PROXY and NO_PROXY apply here, inside the recorded transport.
        return aiohttp.ClientSession(connector=connector, trust_env=True)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._session is None or self._session.closed:
            self._session = self._new_session()
        timeout = request.extensions.get("timeout", {})
        where = _where(request.url)
        data: Any
        try:
            data = request.content or None
        except httpx2.RequestNotRead:  # a streamed body (multipart uploads): aiohttp reads it as it sends
            data = request.stream
            request.headers.pop("transfer-encoding", None)
        try:
            response = await self._session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx2.ConnectTimeout(
                f"no connection to {where}{_seconds(timeout.get('connect'))}", request=request
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx2.ConnectError(_connect_failure(exc, where), request=request) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise httpx2.ReadTimeout(
                f"{where} did not answer{_seconds(timeout.get('read'))}", request=request
            ) from exc
        except aiohttp.ClientError as exc:
            raise _broken(exc, where, request) from exc
        return httpx2.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, where, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _broken(exc: aiohttp.ClientError, where: str, request: httpx2.Request) -> httpx2.TransportError:
    """A connection that broke after the request may have gone out (a hang-up, a reset, a cut body)."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx2.RemoteProtocolError(
            f"{where} closed the connection without a complete answer", request=request
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx2.RemoteProtocolError(f"the answer from {where} was cut off", request=request)
    return httpx2.ReadError(
        f"the connection to {where} broke ({exc.__class__.__name__}: {exc})", request=request
    )


class _Body(httpx2.AsyncByteStream):
    """The response body, read as it arrives; errors mapped as the request's are."""

    def __init__(self, response: aiohttp.ClientResponse, where: str, request: httpx2.Request) -> None:
        self._response = response
        self._where = where
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(CHUNK_BYTES):
                yield chunk
        except aiohttp.ServerTimeoutError as exc:
            read = self._request.extensions.get("timeout", {}).get("read")
            raise httpx2.ReadTimeout(
                f"{self._where} stopped answering{_seconds(read)}", request=self._request
            ) from exc
        except aiohttp.ClientError as exc:
            raise _broken(exc, self._where, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()
