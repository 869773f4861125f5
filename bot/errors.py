"""The error hierarchy: what went wrong, and who can fix it."""

from __future__ import annotations


class ImagebotError(Exception):
    """Base of every error the core raises on purpose."""


class UserError(ImagebotError):
    """Something the requester can fix; the message says what and how. Shown only to them."""


class QuotaExceeded(UserError):
    """A limit would be crossed; the message names the limit, what is left and when it resets."""


class ApiRejected(UserError):
    """The provider refused the request as invalid (HTTP 400): the user can change it. Not billed."""

    def __init__(self, message: str, request_ids: tuple[str, ...] = (), attempts: int = 1) -> None:
        super().__init__(message)
        self.request_ids = request_ids
        self.attempts = attempts


class ModerationRefused(ApiRejected):
    """The provider refused the prompt or image on content grounds."""


class ProviderError(ImagebotError):
    """The image provider failed in a way the user cannot fix (5xx, timeouts, broken streams)."""

    def __init__(
        self,
        message: str,
        request_ids: tuple[str, ...] = (),
        *,
        possibly_billed: bool = False,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.request_ids = request_ids
        self.possibly_billed = possibly_billed
        self.attempts = attempts

    def __str__(self) -> str:
        base = super().__str__()
        if self.request_ids:
            return f"{base} (request id {', '.join(self.request_ids)})"
        return base


class ConfigError(ImagebotError):
    """A bad or contradictory setting; the message is one line naming the setting."""
