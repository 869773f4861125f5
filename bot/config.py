"""Settings from the environment and a `.env` file (docs/rules.md §7), validated once at start."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from bot import platforms
from bot.errors import ConfigError, UserError
from bot.model.pricing import MICRO
from bot.model.sizes import parse_size
from bot.store import pg

# The bounds of every limit and the limits as numbers are the store's (it checks them); the settings build them.
from bot.store.admission import MAX_LIMIT_IMAGES as MAX_LIMIT_IMAGES
from bot.store.admission import MAX_LIMIT_USD as MAX_LIMIT_USD
from bot.store.admission import QuotaDefaults as QuotaDefaults

QUALITIES = ("low", "medium", "high", "auto")
USD_RANGE = f"USD 0 to {MAX_LIMIT_USD:,}"
IMAGES_RANGE = f"0 to {MAX_LIMIT_IMAGES:,} images"
# Platforms an IMAGEBOT_ADMINS entry may name (`slack:U123`); a bare id is an operator on every platform.
PLATFORMS = tuple(platforms.PLATFORMS)


def usd_micros(text: str) -> int:
    """The one parser of a USD amount for limits (config and admin commands alike): `5`, `12.50`, `$3` ->
    micro-dollars, rounded DOWN to a whole micro-dollar, so a limit never allows more than it says.

    Raises ValueError with a one-line reason that states the range; callers add the name.
    """
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise ValueError(f"is not a USD amount (e.g. 5 or 12.50): use {USD_RANGE}") from None
    if not value.is_finite() or not 0 <= value <= MAX_LIMIT_USD:
        raise ValueError(f"is out of range: use {USD_RANGE}")
    return int((value * MICRO).to_integral_value(rounding=ROUND_FLOOR))


MAX_COOLDOWN = 86_400.0  # IMAGEBOT_USER_COOLDOWN and a tenant's cooldown=: at most a day
MAX_JOBS = 100  # IMAGEBOT_USER_MAX_JOBS and a tenant's max_jobs=
MAX_SHARDS = 10_000  # DISCORD_SHARD_COUNT
MAX_RETRY_AFTER = 3600.0  # IMAGEBOT_RETRY_AFTER_MAX: an hour
MAX_IMAGE_DEADLINE = 86_400.0  # IMAGEBOT_IMAGE_DEADLINE: a day


def parse_admins(text: str, name: str = "IMAGEBOT_ADMINS") -> frozenset[str]:
    """IMAGEBOT_ADMINS (and IMAGEBOT_CHANNELS): comma-separated ids, each bare (`U123`: that id on any platform)
    or naming its platform (`slack:U123`, `discord:456`). Platform prefixes are kept lower-case; ConfigError if
    unreadable."""
    found: set[str] = set()
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        platform, sep, ident = entry.rpartition(":") if ":" in entry else ("", "", entry)
        platform = platform.strip().lower()
        ident = ident.strip()
        if sep and (platform not in PLATFORMS or not ident):
            raise ConfigError(
                f"{name} has {entry!r}; use ids, bare (any platform) or as slack:ID or discord:ID"
            )
        found.add(f"{platform}:{ident}" if sep else ident)
    return frozenset(found)


def parse_shard_ids(text: str, count: int | None) -> tuple[int, ...]:
    """DISCORD_SHARD_IDS: the comma-separated shards (of DISCORD_SHARD_COUNT) this replica runs; empty: all of
    them. ConfigError if an id is not a number, repeats, or is not below the count."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        return ()
    if count is None:
        raise ConfigError(
            f"DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the total number of shards, 1-{MAX_SHARDS})"
        )
    valid = f"use shard ids from 0 to {count - 1}, comma-separated (DISCORD_SHARD_COUNT={count})"
    ids: list[int] = []
    for part in parts:
        if not (part.isascii() and part.isdigit()) or int(part) >= count:
            raise ConfigError(f"DISCORD_SHARD_IDS has {part!r}: {valid}")
        if int(part) in ids:
            raise ConfigError(f"DISCORD_SHARD_IDS has {part!r} twice: {valid}")
        ids.append(int(part))
    return tuple(ids)


PG_CONNECT_TIMEOUT = 10  # seconds, unless IMAGEBOT_DB's URL sets connect_timeout itself
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _db(text: str) -> Path | str:
    """IMAGEBOT_DB: a `postgresql://user:password@host:port/db` URL stays a URL; a path without a scheme is a SQLite
    file. Any other URL (`mysql://...`, `sqlite:///...`) is refused: it used to become a file named after it."""
    scheme = _URL_SCHEME.match(text)
    if scheme is None:
        return Path(text)
    if scheme[1] in ("postgresql", "postgres"):
        pg.require_driver()  # psycopg is the `[postgres]` extra: without it, one line naming the extra
        # libpq waits for an unanswered connection as long as the OS does (minutes); a replica that cannot reach
        # its database must find out sooner, say so (/readyz) and try again.
        if "connect_timeout=" not in text:
            text += ("&" if "?" in text else "?") + f"connect_timeout={PG_CONNECT_TIMEOUT}"
        return text
    raise ConfigError(  # the scheme only: the rest of a URL may carry a password
        f"IMAGEBOT_DB uses {scheme[1]}://, which imagebot does not speak; use a SQLite file path "
        "(e.g. ./data/imagebot.sqlite3) or a postgresql://user:password@host:5432/db URL"
    )


class Secret:
    """A string that never shows itself in repr, str, logs or errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything the bot reads from its environment. Secrets are `Secret`s."""

    openai_api_key: Secret | None = None
    openai_base_url: str | None = None
    model: str = "gpt-image-2"
    offline: bool = True
    offline_latency: float = 3.0
    offline_faults: str = ""
    slack_bot_token: Secret | None = None
    slack_signing_secret: Secret | None = None
    slack_app_token: Secret | None = None
    slack_api_url: str = "https://slack.com/api/"
    discord_token: Secret | None = None
    discord_guild_ids: tuple[int, ...] = ()
    discord_api_url: str = "https://discord.com/api/v10"
    discord_shard_count: int | None = None  # None: one connection, no sharding (docs/rules.md §12)
    discord_shard_ids: tuple[int, ...] = ()  # the shards this replica runs; empty: all of the count
    db_path: Path | str = Path("./data/imagebot.sqlite3")  # a SQLite file, or a postgresql:// URL (a str)
    http_host: str = "0.0.0.0"
    http_port: int = 3000
    admins: frozenset[str] = frozenset()
    quotas: QuotaDefaults = field(default_factory=QuotaDefaults)
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    api_timeout: float = 360.0
    api_retries: int = 2
    retry_after_max: float = 60.0  # a longer Retry-After is not waited out: the image fails, saying when
    image_deadline: float = 900.0  # all attempts of one image together
    max_in_flight: int = 8
    max_downloads: int = 8  # attachment downloads at once in this process
    progress_interval: float = 3.0
    partial_images: int = 2
    preview_max_share: float = 0.05  # streamed previews cost at most this share of an image's estimate
    default_size: str = "auto"
    default_quality: str = "auto"
    store_prompts: bool = True
    prices_path: str | None = None
    out_dir: Path = Path("./out")
    shutdown_grace: float = 30.0
    log_level: str = "INFO"
    metrics_token: Secret | None = None
    dashboard_token: Secret | None = None  # operators' sign-in to /dashboard (None: links only)
    public_url: str = "http://localhost:3000"  # where people reach the bot: dashboard links start here
    lease_seconds: float = 60.0
    actions_days: int = 30
    confirm_micros: int | None = 250_000  # a render estimated above this asks first; None: never asks
    channels: frozenset[str] | None = (
        None  # IMAGEBOT_CHANNELS: the only channels the bot works in (None: all)
    )
    user_cooldown: float = 0.0  # seconds between one user's jobs (a tenant may set its own)
    user_max_jobs: int = 4  # one user's jobs running or queued at once (a tenant may set its own)
    batch_window: float = 30.0  # relax jobs gather this long before a batch is sent
    batch_poll: float = 60.0  # open batches are checked this often
    offline_batch_latency: float = 20.0  # the offline server's batches take this long

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def slack_socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def discord_enabled(self) -> bool:
        return self.discord_token is not None

    def secrets(self) -> list[str]:
        """Every configured secret value, for log scrubbing and tests."""
        found = (
            self.openai_api_key,
            self.slack_bot_token,
            self.slack_signing_secret,
            self.slack_app_token,
            self.discord_token,
            self.metrics_token,
            self.dashboard_token,
        )
        hidden = [s.reveal() for s in found if s is not None and s.reveal()]
        password = urlsplit(str(self.db_path)).password if isinstance(self.db_path, str) else None
        return hidden + ([password] if password else [])

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
        """Read settings from `environ` (default os.environ) over a `.env` file; raise ConfigError if bad."""
        merged: dict[str, str] = {}
        if env_file and Path(env_file).is_file():
            merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        merged.update(os.environ if environ is None else environ)
        return _parse(_Env(merged))


class _Env:
    """Typed readers over the raw mapping; every error names the variable and the valid range."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = raw

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.raw.get(name, "").strip()
        return value if value else default

    def secret(self, name: str) -> Secret | None:
        value = self.text(name)
        return Secret(value) if value else None

    def number(
        self, name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
    ) -> float:
        text = self.text(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not a number (seconds, e.g. {default:g})") from None
        if not value >= minimum or value != value or value == float("inf"):
            raise ConfigError(f"{name}={text!r} must be a number >= {minimum:g}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name}={text!r} is out of range ({minimum:g}-{maximum:g})")
        return value

    def share(self, name: str, default: float) -> float:
        """A share from 0 to 1 (0.05 = 5%)."""
        text = self.text(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 1.0:  # NaN fails this too
            raise ConfigError(
                f"{name}={text!r} must be a share from 0 to 1 (e.g. {default:g} for {default:.0%})"
            )
        return value

    def confirm(self, name: str, default: str) -> int | None:
        """A USD threshold, or `off` (never)."""
        text = self.text(name, default) or default
        if text.lower() == "off":
            return None
        try:
            return usd_micros(text)
        except ValueError as exc:
            raise ConfigError(f"{name}={text!r} {exc}, or off") from None

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int = 1 << 31) -> int:
        text = self.text(name)
        if text is None:
            return default
        if not re.fullmatch(r"-?[0-9]+", text):
            raise ConfigError(f"{name}={text!r} is not a whole number ({minimum}-{maximum})")
        value = int(text)
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}={value} is out of range ({minimum}-{maximum})")
        return value

    def flag(self, name: str, default: bool) -> bool:
        text = self.text(name)
        if text is None:
            return default
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={text!r} must be 1 or 0 (true/false)")

    def usd(self, name: str) -> int | None:
        text = self.text(name)
        if text is None:
            return None
        try:
            return usd_micros(text)
        except ValueError as exc:
            raise ConfigError(f"{name}={text!r} {exc} (unset for unlimited)") from None

    def count(self, name: str) -> int | None:
        text = self.text(name)
        if text is None:
            return None
        if not re.fullmatch(r"[0-9]+", text) or int(text) > MAX_LIMIT_IMAGES:
            raise ConfigError(
                f"{name}={text!r} is out of range: use a whole number, {IMAGES_RANGE} (unset for unlimited)"
            )
        return int(text)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """One of `choices` (upper case), whatever the case it is written in."""
        text = (self.text(name, default) or default).upper()
        if text not in choices:
            raise ConfigError(f"{name}={text.lower()!r} must be one of {', '.join(choices)}")
        return text

    def url(self, name: str, default: str) -> str:
        value = self.text(name, default) or default
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name}={value!r} must be an http:// or https:// URL")
        return value


def _public_url(env: _Env, port: int) -> str:
    """IMAGEBOT_PUBLIC_URL: where people reach the bot (behind a load balancer, its address), which the links
    the dashboard sends start with; default http://localhost:<IMAGEBOT_HTTP_PORT>. No trailing slash."""
    text = env.text("IMAGEBOT_PUBLIC_URL")
    if text is None:
        return f"http://localhost:{port}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"IMAGEBOT_PUBLIC_URL={text!r} must be an http:// or https:// address such as "
            "https://imagebot.example.com (a path is fine; no query)"
        )
    return text.rstrip("/")


def _parse(env: _Env) -> Settings:
    api_key = env.secret("OPENAI_API_KEY")
    offline = env.flag("IMAGEBOT_OFFLINE", False) or api_key is None
    slack_bot, slack_secret, slack_app = (
        env.secret(n) for n in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN")
    )
    if slack_bot and not slack_app and not slack_secret:
        raise ConfigError(
            "Slack HTTP mode (SLACK_BOT_TOKEN without SLACK_APP_TOKEN) needs SLACK_SIGNING_SECRET"
        )
    if (slack_app or slack_secret) and not slack_bot:
        raise ConfigError("SLACK_APP_TOKEN / SLACK_SIGNING_SECRET are set but SLACK_BOT_TOKEN is not")
    if slack_app and not slack_app.reveal().startswith("xapp-"):
        raise ConfigError("SLACK_APP_TOKEN must be an app-level token starting with xapp- (Socket Mode)")
    guild_text = env.text("DISCORD_GUILD_IDS", "") or ""
    guilds: list[int] = []
    for part in guild_text.replace(" ", ",").split(","):
        if part:
            if not (part.isascii() and part.isdigit()):
                raise ConfigError(f"DISCORD_GUILD_IDS has {part!r}, which is not a numeric guild id")
            guilds.append(int(part))
    shard_count = (
        env.integer("DISCORD_SHARD_COUNT", 1, minimum=1, maximum=MAX_SHARDS)
        if env.text("DISCORD_SHARD_COUNT") is not None
        else None
    )
    tz_name = env.text("IMAGEBOT_TIMEZONE", "UTC") or "UTC"
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(
            f"IMAGEBOT_TIMEZONE={tz_name!r} is not a known IANA time zone (e.g. Europe/Berlin)"
        ) from None
    quality = (env.text("IMAGEBOT_QUALITY", "auto") or "auto").lower()
    if quality not in QUALITIES:
        raise ConfigError(f"IMAGEBOT_QUALITY={quality!r} must be one of {', '.join(QUALITIES)}")
    size = env.text("IMAGEBOT_SIZE", "auto") or "auto"
    try:
        parse_size(size)
    except UserError as exc:
        raise ConfigError(f"IMAGEBOT_SIZE: {exc}") from None
    channels = (env.text("IMAGEBOT_CHANNELS", "") or "").strip()
    base_url = env.text("OPENAI_BASE_URL")
    if base_url is not None:
        base_url = env.url("OPENAI_BASE_URL", base_url)
    return Settings(
        openai_api_key=api_key,
        openai_base_url=base_url,
        model=env.text("IMAGEBOT_MODEL", "gpt-image-2") or "gpt-image-2",
        offline=offline,
        offline_latency=env.number("IMAGEBOT_OFFLINE_LATENCY", 3.0),
        offline_faults=env.text("IMAGEBOT_OFFLINE_FAULTS", "") or "",
        slack_bot_token=slack_bot,
        slack_signing_secret=slack_secret,
        slack_app_token=slack_app,
        slack_api_url=env.url("SLACK_API_URL", "https://slack.com/api/"),
        discord_token=env.secret("DISCORD_TOKEN"),
        discord_guild_ids=tuple(guilds),
        discord_api_url=env.url("DISCORD_API_URL", "https://discord.com/api/v10").rstrip("/"),
        discord_shard_count=shard_count,
        discord_shard_ids=parse_shard_ids(env.text("DISCORD_SHARD_IDS", "") or "", shard_count),
        db_path=_db(env.text("IMAGEBOT_DB", "./data/imagebot.sqlite3") or "./data/imagebot.sqlite3"),
        http_host=env.text("IMAGEBOT_HTTP_HOST", "0.0.0.0") or "0.0.0.0",
        http_port=env.integer("IMAGEBOT_HTTP_PORT", 3000, minimum=0, maximum=65535),
        admins=parse_admins(env.text("IMAGEBOT_ADMINS", "") or ""),
        quotas=QuotaDefaults(
            user_daily_micros=env.usd("IMAGEBOT_USER_DAILY_USD"),
            user_daily_images=env.count("IMAGEBOT_USER_DAILY_IMAGES"),
            user_monthly_micros=env.usd("IMAGEBOT_USER_MONTHLY_USD"),
            user_monthly_images=env.count("IMAGEBOT_USER_MONTHLY_IMAGES"),
            channel_monthly_micros=env.usd("IMAGEBOT_CHANNEL_MONTHLY_USD"),
            workspace_monthly_micros=env.usd("IMAGEBOT_WORKSPACE_MONTHLY_USD"),
        ),
        timezone=tz,
        api_timeout=env.number("IMAGEBOT_API_TIMEOUT", 360.0, minimum=0.001),
        api_retries=env.integer("IMAGEBOT_API_RETRIES", 2, minimum=0, maximum=2),
        retry_after_max=env.number("IMAGEBOT_RETRY_AFTER_MAX", 60.0, maximum=MAX_RETRY_AFTER),
        image_deadline=env.number("IMAGEBOT_IMAGE_DEADLINE", 900.0, minimum=1.0, maximum=MAX_IMAGE_DEADLINE),
        max_in_flight=env.integer("IMAGEBOT_MAX_IN_FLIGHT", 8, minimum=1, maximum=1000),
        max_downloads=env.integer("IMAGEBOT_MAX_DOWNLOADS", 8, minimum=1, maximum=256),
        progress_interval=env.number("IMAGEBOT_PROGRESS_INTERVAL", 3.0, minimum=0.05),
        partial_images=env.integer("IMAGEBOT_PARTIAL_IMAGES", 2, minimum=0, maximum=3),
        preview_max_share=env.share("IMAGEBOT_PREVIEW_MAX_SHARE", 0.05),
        default_size=size,
        default_quality=quality,
        store_prompts=env.flag("IMAGEBOT_STORE_PROMPTS", True),
        prices_path=env.text("IMAGEBOT_PRICES"),
        out_dir=Path(env.text("IMAGEBOT_OUT_DIR", "./out") or "./out"),
        shutdown_grace=env.number("IMAGEBOT_SHUTDOWN_GRACE", 30.0),
        log_level=env.choice("IMAGEBOT_LOG_LEVEL", "INFO", LOG_LEVELS),
        metrics_token=env.secret("IMAGEBOT_METRICS_TOKEN"),
        dashboard_token=env.secret("IMAGEBOT_DASHBOARD_TOKEN"),
        public_url=_public_url(env, env.integer("IMAGEBOT_HTTP_PORT", 3000, minimum=0, maximum=65535)),
        # How long a process's hold on its running jobs lasts without a heartbeat (docs/rules.md §5: at most 60 s).
        lease_seconds=env.number("IMAGEBOT_LEASE_SECONDS", 60.0, minimum=1.0, maximum=60.0),
        actions_days=env.integer("IMAGEBOT_ACTIONS_DAYS", 30, minimum=1, maximum=3650),
        confirm_micros=env.confirm("IMAGEBOT_CONFIRM_USD", "0.25"),
        channels=parse_admins(channels, "IMAGEBOT_CHANNELS") or None,
        user_cooldown=env.number("IMAGEBOT_USER_COOLDOWN", 0.0, maximum=MAX_COOLDOWN),
        user_max_jobs=env.integer("IMAGEBOT_USER_MAX_JOBS", 4, minimum=1, maximum=MAX_JOBS),
        batch_window=env.number("IMAGEBOT_BATCH_WINDOW", 30.0, maximum=3600.0),
        batch_poll=env.number("IMAGEBOT_BATCH_POLL", 60.0, minimum=0.05, maximum=3600.0),
        offline_batch_latency=env.number("IMAGEBOT_OFFLINE_BATCH_LATENCY", 20.0, maximum=86_400.0),
    )
