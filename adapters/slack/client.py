"""The Slack Web API client: one pooled aiohttp session, slack_sdk's retries made safe for posts, and how a
failed call is told (`why_not`) or retried at start-up (`until_answered`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import HttpRequest, HttpResponse, RetryState
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError

from ..startup import unreachable, until_up

log = logging.getLogger("imagebot.slack")

# Start-up (ops): Slack's answers that mean the token itself is wrong. Trying again cannot help: exit 2.
REFUSED_TOKEN_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "not_allowed_token_type",
        "team_disabled",
        "invalid_token",
    }
)


def why_not(exc: Exception) -> str:
    """A Web API failure in a few words: Slack's error code, or the kind of connection trouble."""
    if isinstance(exc, SlackApiError) and exc.response is not None:
        return str(exc.response.get("error"))
    return type(exc).__name__


class SafeConnectionErrorRetryHandler(AsyncConnectionErrorRetryHandler):
    """slack_sdk's retry of a dropped or reset connection, for the methods that are safe to send twice (the
    upload steps, reads, edits): a repeated chat.postMessage whose answer was lost would post twice."""

    POSTS = ("chat.postMessage", "chat.postEphemeral", "chat.meMessage", "views.open", "views.push")

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if request.url.rstrip("/").endswith(self.POSTS):
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)


def web_client(token: str, base_url: str, http: aiohttp.ClientSession) -> AsyncWebClient:
    """The Web API client on `http` (one pooled session for every call: slack_sdk otherwise opens one per call),
    with slack_sdk's own retries: 429 (waiting out Retry-After), a dropped or reset connection, and 500/503.
    Handing in a list replaces the client's defaults, so the connection handler is named here too: without it
    one dropped files.getUploadURLExternal lost a paid image's upload."""
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        session=http,
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            SafeConnectionErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


async def until_answered(
    method: str, token_name: str, call: Callable[[], Awaitable[Any]], waiting: Callable[[str], None]
) -> Any:
    """`call()` (a Web API method) until Slack answers it (adapters/startup.py): a refused token is a ConfigError
    naming `token_name` (one line, exit 2); anything else (no answer, 5xx, an error that may pass) is logged (one
    line), told to `waiting` (for /readyz) and tried again with backoff."""

    def outage(exc: Exception) -> str | None:
        if isinstance(exc, SlackApiError):
            error = str(exc.response.get("error") or exc.response.status_code)
            if error in REFUSED_TOKEN_ERRORS:
                raise ConfigError(f"{token_name} was refused by Slack ({method}: {error})") from None
            return f"Slack answered {method} with {error}"
        return unreachable(exc, f"{method} failed: ")

    def retrying(reason: str, attempt: int, _delay: float) -> None:
        waiting(f"{reason} (attempt {attempt}); retrying")
        log.warning("slack start-up: retrying", extra={"error": reason, "attempt": attempt})

    return await until_up(call, outage, retrying)
