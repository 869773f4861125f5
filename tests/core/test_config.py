"""Settings from the environment and `.env` (docs/rules.md §7): the defaults, what overrides what, and
one-line errors that name the variable and never show a secret."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.config import Secret, Settings
from bot.errors import ConfigError
from tests.support.processes import run_once

ROOT = Path(__file__).resolve().parents[2]

# Distinctive values, so a leak anywhere is easy to spot.
SECRETS = {
    "OPENAI_API_KEY": "sk-test-OPENAI-LEAK-c0ffee",
    "SLACK_BOT_TOKEN": "xoxb-test-SLACK-BOT-LEAK-f00d",
    "SLACK_SIGNING_SECRET": "test-SIGNING-LEAK-beef",
    "SLACK_APP_TOKEN": "xapp-test-SLACK-APP-LEAK-cafe",
    "DISCORD_TOKEN": "test-DISCORD-LEAK-d00d",
}


def load(env_file: str | Path | None = None, **environ: str) -> Settings:
    return Settings.load(environ=environ, env_file=env_file)


def config_error(**environ: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(**environ)
    message = str(caught.value)
    assert "\n" not in message, "a configuration error is one line"
    return message


# --- defaults -------------------------------------------------------------------------------


def test_defaults_are_the_specs() -> None:
    settings = load()
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.discord_api_url == "https://discord.com/api/v10"
    assert settings.db_path == Path("./data/imagebot.sqlite3")
    assert settings.http_port == 3000
    assert settings.api_timeout == 360
    assert settings.api_retries == 2
    assert (settings.retry_after_max, settings.image_deadline) == (60, 900)
    assert settings.timezone == ZoneInfo("UTC")
    assert settings.model == "gpt-image-2"
    assert settings.openai_base_url is None


def test_quotas_are_unlimited_by_default() -> None:
    quotas = load().quotas
    assert (quotas.user_daily_micros, quotas.user_daily_images) == (None, None)
    assert (quotas.user_monthly_micros, quotas.user_monthly_images) == (None, None)
    assert (quotas.channel_monthly_micros, quotas.workspace_monthly_micros) == (None, None)


def test_no_chat_platform_is_enabled_without_its_token() -> None:
    settings = load()
    assert not settings.slack_enabled
    assert not settings.discord_enabled


def test_offline_without_an_openai_api_key() -> None:
    assert load().offline
    assert load(IMAGEBOT_OFFLINE="0").offline


def test_online_with_an_openai_api_key() -> None:
    assert not load(OPENAI_API_KEY="sk-test").offline


def test_imagebot_offline_1_forces_offline_even_with_a_key() -> None:
    assert load(OPENAI_API_KEY="sk-test", IMAGEBOT_OFFLINE="1").offline


# --- reading values -------------------------------------------------------------------------


def test_values_are_read_and_typed() -> None:
    settings = load(
        OPENAI_BASE_URL="https://gateway.example/v1",
        IMAGEBOT_DB="/srv/imagebot/ledger.sqlite3",
        IMAGEBOT_HTTP_PORT="8080",
        IMAGEBOT_TIMEZONE="Europe/Berlin",
        IMAGEBOT_API_TIMEOUT="600",
        IMAGEBOT_API_RETRIES="0",
        IMAGEBOT_RETRY_AFTER_MAX="5",
        IMAGEBOT_IMAGE_DEADLINE="1200",
        IMAGEBOT_USER_DAILY_USD="2.50",
        IMAGEBOT_USER_DAILY_IMAGES="10",
        IMAGEBOT_CHANNEL_MONTHLY_USD="$40",
        IMAGEBOT_ADMINS="U1, U2",
        DISCORD_GUILD_IDS="123, 456",
    )
    assert settings.openai_base_url == "https://gateway.example/v1"
    assert settings.db_path == Path("/srv/imagebot/ledger.sqlite3")
    assert settings.http_port == 8080
    assert settings.timezone == ZoneInfo("Europe/Berlin")
    assert (settings.api_timeout, settings.api_retries) == (600, 0)
    assert (settings.retry_after_max, settings.image_deadline) == (5, 1200)
    assert settings.quotas.user_daily_micros == 2_500_000
    assert settings.quotas.user_daily_images == 10
    assert settings.quotas.channel_monthly_micros == 40_000_000
    assert settings.admins == {"U1", "U2"}
    assert settings.discord_guild_ids == (123, 456)


def test_slack_socket_mode_when_the_app_token_is_set() -> None:
    settings = load(SLACK_BOT_TOKEN="xoxb-1", SLACK_APP_TOKEN="xapp-1")
    assert settings.slack_enabled and settings.slack_socket_mode


def test_slack_http_mode_when_the_app_token_is_not_set() -> None:
    settings = load(SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="shh")
    assert settings.slack_enabled and not settings.slack_socket_mode


def test_the_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "OPENAI_API_KEY=sk-from-file\nIMAGEBOT_HTTP_PORT=4000\nIMAGEBOT_TIMEZONE=Asia/Tokyo\n",
        encoding="utf-8",
    )
    settings = load(env_file, IMAGEBOT_HTTP_PORT="5000")
    assert settings.openai_api_key == Secret("sk-from-file")
    assert not settings.offline
    assert settings.timezone == ZoneInfo("Asia/Tokyo")
    assert settings.http_port == 5000


def test_dot_env_in_the_working_directory_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("IMAGEBOT_API_RETRIES=1\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert Settings.load(environ={}).api_retries == 1


def test_the_biggest_limits_are_accepted() -> None:
    quotas = load(IMAGEBOT_USER_DAILY_USD="1000000", IMAGEBOT_USER_DAILY_IMAGES="1000000").quotas
    assert (quotas.user_daily_micros, quotas.user_daily_images) == (1_000_000_000_000, 1_000_000)


@pytest.mark.parametrize(
    ("text", "admins"),
    [
        ("U1, slack:U2 ,discord:345", {"U1", "slack:U2", "discord:345"}),
        ("SLACK:U2", {"slack:U2"}),
        (" , ", set()),
    ],
)
def test_imagebot_admins_takes_bare_and_platform_qualified_ids(text: str, admins: set[str]) -> None:
    assert load(IMAGEBOT_ADMINS=text).admins == admins


@pytest.mark.parametrize("text", ["teams:U1", "slack:", ":U1", "slack:U1:extra", "U1,discord:"])
def test_imagebot_admins_refuses_what_it_cannot_read(text: str) -> None:
    assert "IMAGEBOT_ADMINS" in config_error(IMAGEBOT_ADMINS=text)


# --- errors: one line, naming the variable --------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, ["SLACK_SIGNING_SECRET", "HTTP mode"]),
        ({"IMAGEBOT_API_TIMEOUT": "abc"}, ["IMAGEBOT_API_TIMEOUT", "not a number"]),
        ({"IMAGEBOT_API_TIMEOUT": "-5"}, ["IMAGEBOT_API_TIMEOUT", ">= 0.001"]),
        ({"IMAGEBOT_API_RETRIES": "many"}, ["IMAGEBOT_API_RETRIES", "0-2"]),
        ({"IMAGEBOT_API_RETRIES": "3"}, ["IMAGEBOT_API_RETRIES", "0-2"]),
        ({"IMAGEBOT_LEASE_SECONDS": "61"}, ["IMAGEBOT_LEASE_SECONDS", "1-60"]),
        ({"IMAGEBOT_RETRY_AFTER_MAX": "a minute"}, ["IMAGEBOT_RETRY_AFTER_MAX", "not a number"]),
        ({"IMAGEBOT_RETRY_AFTER_MAX": "-1"}, ["IMAGEBOT_RETRY_AFTER_MAX", ">= 0"]),
        ({"IMAGEBOT_RETRY_AFTER_MAX": "7200"}, ["IMAGEBOT_RETRY_AFTER_MAX", "0-3600"]),
        ({"IMAGEBOT_IMAGE_DEADLINE": "nan"}, ["IMAGEBOT_IMAGE_DEADLINE", ">= 1"]),
        ({"IMAGEBOT_IMAGE_DEADLINE": "0"}, ["IMAGEBOT_IMAGE_DEADLINE", ">= 1"]),
        ({"IMAGEBOT_IMAGE_DEADLINE": "1e9"}, ["IMAGEBOT_IMAGE_DEADLINE", "1-86400"]),
        ({"IMAGEBOT_USER_DAILY_USD": "-1"}, ["IMAGEBOT_USER_DAILY_USD", "USD 0 to 1,000,000"]),
        ({"IMAGEBOT_CHANNEL_MONTHLY_USD": "-0.01"}, ["IMAGEBOT_CHANNEL_MONTHLY_USD", "USD 0 to 1,000,000"]),
        ({"IMAGEBOT_WORKSPACE_MONTHLY_USD": "lots"}, ["IMAGEBOT_WORKSPACE_MONTHLY_USD", "not a USD amount"]),
        ({"IMAGEBOT_USER_MONTHLY_IMAGES": "-3"}, ["IMAGEBOT_USER_MONTHLY_IMAGES", "out of range"]),
        # Limits are bounded (a huge one used to crash the first reservation with an OverflowError).
        (
            {"IMAGEBOT_USER_DAILY_USD": "1e20"},
            ["IMAGEBOT_USER_DAILY_USD", "out of range", "USD 0 to 1,000,000"],
        ),
        (
            {"IMAGEBOT_WORKSPACE_MONTHLY_USD": "1000000.01"},
            ["IMAGEBOT_WORKSPACE_MONTHLY_USD", "USD 0 to 1,000,000"],
        ),
        ({"IMAGEBOT_USER_MONTHLY_USD": "Infinity"}, ["IMAGEBOT_USER_MONTHLY_USD", "USD 0 to 1,000,000"]),
        ({"IMAGEBOT_CHANNEL_MONTHLY_USD": "NaN"}, ["IMAGEBOT_CHANNEL_MONTHLY_USD", "USD 0 to 1,000,000"]),
        (
            {"IMAGEBOT_USER_DAILY_IMAGES": "1000001"},
            ["IMAGEBOT_USER_DAILY_IMAGES", "out of range", "0 to 1,000,000"],
        ),
        (
            {"IMAGEBOT_USER_MONTHLY_IMAGES": "99999999999999999999999"},
            ["IMAGEBOT_USER_MONTHLY_IMAGES", "0 to 1,000,000"],
        ),
        ({"IMAGEBOT_ADMINS": "teams:U1"}, ["IMAGEBOT_ADMINS", "'teams:U1'", "slack:ID or discord:ID"]),
        ({"IMAGEBOT_ADMINS": "U1,slack:"}, ["IMAGEBOT_ADMINS", "'slack:'"]),
        ({"IMAGEBOT_TIMEZONE": "Mars/Olympus_Mons"}, ["IMAGEBOT_TIMEZONE", "IANA time zone"]),
        ({"IMAGEBOT_TIMEZONE": "America"}, ["IMAGEBOT_TIMEZONE", "IANA time zone"]),
        ({"IMAGEBOT_HTTP_PORT": "http"}, ["IMAGEBOT_HTTP_PORT", "0-65535"]),
        ({"IMAGEBOT_HTTP_PORT": "70000"}, ["IMAGEBOT_HTTP_PORT", "0-65535"]),
        ({"IMAGEBOT_HTTP_PORT": "-1"}, ["IMAGEBOT_HTTP_PORT", "0-65535"]),
        ({"IMAGEBOT_HTTP_PORT": "--5"}, ["IMAGEBOT_HTTP_PORT", "0-65535"]),
        ({"IMAGEBOT_HTTP_PORT": "²"}, ["IMAGEBOT_HTTP_PORT", "0-65535"]),
        ({"DISCORD_GUILD_IDS": "123,abc"}, ["DISCORD_GUILD_IDS", "'abc'"]),
        ({"OPENAI_BASE_URL": "gateway.example/v1"}, ["OPENAI_BASE_URL", "http://"]),
        ({"IMAGEBOT_SIZE": "4000x4000"}, ["IMAGEBOT_SIZE", "3840"]),
        ({"IMAGEBOT_QUALITY": "ultra"}, ["IMAGEBOT_QUALITY", "low, medium, high, auto"]),
    ],
)
def test_a_bad_setting_is_a_one_line_error_naming_the_variable(
    environ: dict[str, str], names: list[str]
) -> None:
    message = config_error(**environ)
    for name in names:
        assert name in message


# --- secrets --------------------------------------------------------------------------------


def test_secrets_never_show_in_the_settings_repr() -> None:
    settings = load(**SECRETS)
    for text in (repr(settings), str(settings)):
        for value in SECRETS.values():
            assert value not in text
    assert sorted(settings.secrets()) == sorted(
        SECRETS.values()
    )  # still usable, for the API and log scrubbing


@pytest.mark.parametrize(
    "environ",
    [
        {"IMAGEBOT_API_TIMEOUT": "abc"},
        {"IMAGEBOT_HTTP_PORT": "70000"},
        {"IMAGEBOT_TIMEZONE": "Nowhere/Land"},
        {"IMAGEBOT_USER_DAILY_USD": "-1"},
        {"SLACK_APP_TOKEN": "not-an-xapp-token-LEAK"},
        {"SLACK_APP_TOKEN": "", "SLACK_SIGNING_SECRET": ""},
        {"SLACK_BOT_TOKEN": ""},
    ],
)
def test_secrets_never_show_in_an_error(environ: dict[str, str]) -> None:
    values = {**SECRETS, **environ}
    with pytest.raises(ConfigError) as caught:
        load(**values)
    for name in SECRETS:
        if values[name]:
            assert values[name] not in str(caught.value)
    assert "LEAK" not in str(caught.value)


def test_a_secret_hides_itself() -> None:
    secret = Secret("sk-hidden-LEAK")
    assert "LEAK" not in repr(secret) and "LEAK" not in str(secret) and "LEAK" not in f"{secret}"
    assert secret.reveal() == "sk-hidden-LEAK"


# --- the command line ------------------------------------------------------------------------


def test_imagebot_run_with_a_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    prefixes = ("OPENAI_", "SLACK_", "DISCORD_", "IMAGEBOT_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(prefixes) and "TOKEN" not in k and "SECRET" not in k
    }
    env["IMAGEBOT_API_TIMEOUT"] = "abc"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = run_once(tmp_path, env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "IMAGEBOT_API_TIMEOUT" in lines[0]
    assert "Traceback" not in result.stderr


# --- every variable the code reads: documented, and a bad value is one line and exit 2 ----------------

# What reads the environment: the typed readers of bot/config.py (`env.integer("NAME", ...)`), mappings
# (`environ.get("NAME")`, `os.environ["NAME"]`, `os.getenv("NAME")`, `_env_seconds(environ, "NAME")`), and
# in bot/config.py any bare literal name (`for n in ("SLACK_BOT_TOKEN", ...)`).
_READERS = re.compile(
    r"""(?:\benv\.\w+|\benviron\.get|\bgetenv|\b_env_\w+)\(\s*(?:\w+\s*,\s*)?["']([A-Z][A-Z0-9_]+)["']"""
    r"""|\benviron\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\]"""
)
_LITERAL = re.compile(r"""["']((?:IMAGEBOT|SLACK|DISCORD|OPENAI)_[A-Z0-9_]+)["']""")

# A value of each variable that has a format, and one it must refuse. Anything the code reads and that is not
# here must be in FREE_TEXT (tokens, paths, host names): a new variable fails this test until it is sorted.
BAD_VALUES = {
    "DISCORD_API_URL": "discord.example/api",
    "DISCORD_GUILD_IDS": "123,abc",
    "DISCORD_SHARD_COUNT": "0",
    "DISCORD_SHARD_IDS": "x",
    "IMAGEBOT_ACTIONS_DAYS": "0",
    "IMAGEBOT_ADMINS": "teams:U1",
    "IMAGEBOT_API_RETRIES": "3",
    "IMAGEBOT_API_TIMEOUT": "abc",
    "IMAGEBOT_BATCH_POLL": "0",
    "IMAGEBOT_BATCH_WINDOW": "-1",
    "IMAGEBOT_CHANNELS": "teams:C1",
    "IMAGEBOT_CHANNEL_MONTHLY_USD": "lots",
    "IMAGEBOT_IMAGE_DEADLINE": "0",
    "IMAGEBOT_MAX_DOWNLOADS": "0",
    "IMAGEBOT_RETRY_AFTER_MAX": "-1",
    "IMAGEBOT_CONFIRM_USD": "lots",
    "IMAGEBOT_DB": "mysql://x",
    "IMAGEBOT_HTTP_PORT": "70000",
    "IMAGEBOT_LEASE_SECONDS": "61",
    "IMAGEBOT_LOG_LEVEL": "verbose",
    "IMAGEBOT_MAX_IN_FLIGHT": "0",
    "IMAGEBOT_MODEL": "gpt-9000",
    "IMAGEBOT_OFFLINE": "maybe",
    "IMAGEBOT_OFFLINE_BATCH_LATENCY": "-1",
    "IMAGEBOT_OFFLINE_FAULTS": "explode",
    "IMAGEBOT_OFFLINE_LATENCY": "slow",
    "IMAGEBOT_PARTIAL_IMAGES": "4",
    "IMAGEBOT_PREVIEW_MAX_SHARE": "2",
    "IMAGEBOT_PRICES": "/nonexistent/prices.json",
    "IMAGEBOT_PROGRESS_INTERVAL": "0",
    "IMAGEBOT_QUALITY": "ultra",
    "IMAGEBOT_SHUTDOWN_GRACE": "-1",
    "IMAGEBOT_SIZE": "4000x4000",
    "IMAGEBOT_STORE_PROMPTS": "maybe",
    "IMAGEBOT_TIMEZONE": "Mars/Olympus_Mons",
    "IMAGEBOT_USER_COOLDOWN": "-1",
    "IMAGEBOT_USER_DAILY_IMAGES": "many",
    "IMAGEBOT_USER_DAILY_USD": "-1",
    "IMAGEBOT_USER_MAX_JOBS": "0",
    "IMAGEBOT_USER_MONTHLY_IMAGES": "-3",
    "IMAGEBOT_USER_MONTHLY_USD": "NaN",
    "IMAGEBOT_WORKSPACE_MONTHLY_USD": "lots",
    "OPENAI_BASE_URL": "gateway.example/v1",
    "IMAGEBOT_PUBLIC_URL": "imagebot.example.com/dashboard",
    "SLACK_API_URL": "slack.example/api",
    "SLACK_APP_TOKEN": "xoxb-not-an-app-token",
}
FREE_TEXT = {
    "OPENAI_API_KEY",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "DISCORD_TOKEN",
    "IMAGEBOT_METRICS_TOKEN",
    "IMAGEBOT_DASHBOARD_TOKEN",
    "IMAGEBOT_OUT_DIR",  # any folder: created on the first image
    "IMAGEBOT_HTTP_HOST",  # an address to bind: checked when `imagebot run` binds it (one line, exit 2)
}


def variables_read() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.joinpath("bot").rglob("*.py"), *ROOT.joinpath("adapters").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for match in _READERS.finditer(text):
            names.add(match[1] or match[2])
        if path == ROOT / "bot" / "config.py":
            names.update(_LITERAL.findall(text))
    return names


def readme_configuration() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Configuration")
    return readme[start : readme.index("\n## ", start + 1)]


def test_every_variable_the_code_reads_is_documented_and_sorted() -> None:
    names = variables_read()
    assert {
        "IMAGEBOT_DB",
        "SLACK_BOT_TOKEN",
        "IMAGEBOT_OUT_DIR",
        "IMAGEBOT_LOG_LEVEL",
    } <= names  # the scan works
    table = readme_configuration()
    undocumented = sorted(name for name in names if f"`{name}`" not in table)
    assert undocumented == [], f"not in README.md's configuration table: {undocumented}"
    unsorted = sorted(names - set(BAD_VALUES) - FREE_TEXT)
    assert unsorted == [], f"give these a bad value in BAD_VALUES (or list them in FREE_TEXT): {unsorted}"


def _clean_env(tmp_path: Path) -> dict[str, str]:
    prefixes = ("OPENAI_", "SLACK_", "DISCORD_", "IMAGEBOT_")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(prefixes) and "TOKEN" not in k and "SECRET" not in k
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["IMAGEBOT_DB"] = str(tmp_path / "bot.sqlite3")
    return env


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_of_every_variable_exits_2_with_one_line_naming_it(name: str, tmp_path: Path) -> None:
    """`imagebot imagine` (settings, then the core: the price table, the model, the offline server) with each
    bad value alone: exit 2, one line on stderr naming the variable, no traceback, no file, no database."""
    run = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "imagine", "a fox", "--out", str(tmp_path / "fox.jpg")],
        cwd=tmp_path,
        env={**_clean_env(tmp_path), name: BAD_VALUES[name]},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr[-300:]
    assert len(run.stderr.strip().splitlines()) == 1 and name in run.stderr, run.stderr[-300:]
    assert "Traceback" not in run.stderr and not (tmp_path / "fox.jpg").exists()


def test_imagebot_db_takes_a_path_or_a_postgresql_url_and_nothing_else() -> None:
    assert (
        load(IMAGEBOT_DB="postgresql://u:p@h:5432/d").db_path
        == "postgresql://u:p@h:5432/d?connect_timeout=10"
    )
    assert (
        load(IMAGEBOT_DB="postgres://u:p@h/d?connect_timeout=3").db_path
        == "postgres://u:p@h/d?connect_timeout=3"
    )
    assert load(IMAGEBOT_DB="data/x.sqlite3").db_path == Path("data/x.sqlite3")
    for url in ("mysql://x", "sqlite:///tmp/x.db", "MySQL://root:hunter2@db/x"):
        message = config_error(IMAGEBOT_DB=url)
        assert "IMAGEBOT_DB" in message and "postgresql://" in message and "hunter2" not in message


def test_imagebot_log_level_names_its_levels() -> None:
    assert load(IMAGEBOT_LOG_LEVEL="debug").log_level == "DEBUG"
    message = config_error(IMAGEBOT_LOG_LEVEL="verbose")
    assert "IMAGEBOT_LOG_LEVEL" in message and "DEBUG, INFO, WARNING, ERROR" in message
