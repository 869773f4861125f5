"""The error hierarchy: what went wrong, and who can fix it.

An error meant for people is raised with a catalog sentence (`UserError(msg("sizes.not_a_size", ...))`,
bot/i18n.py): `str(error)` is its English text (logs, the CLI), `error.text` says it in any language.
"""

from __future__ import annotations

from bot.i18n import ENGLISH, Text, lazy, msg, translate


class ImagebotError(Exception):
    """Base of every error the core raises on purpose."""

    @property
    def text(self) -> Text:
        """The message for people, in whichever language it is rendered (bot/i18n.py `translate`)."""
        return lazy(self.said)

    def said(self, locale: str = ENGLISH) -> str:
        """The message in `locale`."""
        first = self.args[0] if self.args else ""
        return translate(first, locale)


class UserError(ImagebotError):
    """Something the requester can fix; the message says what and how. Shown only to them."""


class QuotaExceeded(UserError):
    """A limit would be crossed; the message names the limit, what is left and when it resets."""


class PaceExceeded(UserError):
    """A user's cooldown or their most jobs at once (docs/rules.md §10); the message says when they can go again."""


class _Attempted:
    """What an error of the image API carries: every attempt's request id, how many attempts were made and
    how many of them may have been billed without giving an image. `str()` names the request ids once."""

    request_ids: tuple[str, ...]
    attempts: int
    billed_attempts: int

    @property
    def possibly_billed(self) -> bool:
        return self.billed_attempts > 0

    @property
    def message(self) -> str:
        """The text without the request ids (a Text when it is ours, the provider's words otherwise)."""
        first = self.args[0] if self.args else ""  # type: ignore[attr-defined]
        return first if isinstance(first, Text) else str(first)

    def said(self, locale: str = ENGLISH) -> str:
        if self.request_ids:
            return msg("errors.request_ids", message=self.message, ids=", ".join(self.request_ids)).render(
                locale
            )
        return translate(self.message, locale)

    def __str__(self) -> str:
        return self.said(ENGLISH)


class ApiRejected(_Attempted, UserError):
    """The provider refused the request as invalid (HTTP 400): the user can change it. That attempt is not
    billed; earlier attempts of the same image (a timeout, then the refusal) may have been."""

    def __init__(
        self, message: str, request_ids: tuple[str, ...] = (), attempts: int = 1, *, billed_attempts: int = 0
    ) -> None:
        super().__init__(message)
        self.request_ids = request_ids
        self.attempts = attempts
        self.billed_attempts = billed_attempts


class ModerationRefused(ApiRejected):
    """The provider refused the prompt or image on content grounds."""


class ProviderError(_Attempted, ImagebotError):
    """The image provider failed in a way the user cannot fix (5xx, timeouts, broken streams)."""

    def __init__(
        self,
        message: str,
        request_ids: tuple[str, ...] = (),
        *,
        billed_attempts: int = 0,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.request_ids = request_ids
        self.billed_attempts = billed_attempts
        self.attempts = attempts


class CannotPost(ImagebotError):
    """The platform would not take the job's progress message; the text is its reason, for the requester
    (e.g. "not_in_channel; invite me with /invite"). The job is released: nothing is charged."""


class DeliveryFailed(ImagebotError):
    """The platform did not take a finished job's images. `retry`: worth trying again (a 5xx, a 429, a broken
    connection); False when it never will (a file that cannot be written, a channel the bot was removed
    from). The images stay in the outbox either way (bot/store/jobstate.py); the text is the reason."""

    def __init__(self, reason: str, *, retry: bool = True) -> None:
        super().__init__(reason)
        self.retry = retry


class ConfigError(ImagebotError):
    """A bad or contradictory setting; the message is one line naming the setting."""
