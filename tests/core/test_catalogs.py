"""The message catalogs (bot/locale/*/LC_MESSAGES/imagebot.po): complete in both languages, used correctly by
the code, and the only place the bot's sentences live."""

from __future__ import annotations

import ast
import re
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot import i18n
from bot.i18n import CATALOGS, CHINESE, ENGLISH, Catalogs, language_for, msg, placeholders

ROOT = Path(__file__).resolve().parents[2]
# The code people's words could come from (bot/config.py speaks to the operator at start-up, in English): the
# core and the chat adapters, modules or packages (the dashboard is not among them).
CHAT = ("adapters/*.py", "adapters/slack/*.py", "adapters/discord/*.py")
SOURCES = sorted(
    p
    for p in [*ROOT.glob("bot/**/*.py"), *(f for pattern in CHAT for f in ROOT.glob(pattern))]
    if p != ROOT / "bot" / "config.py"
)
# Errors and replies whose words reach a person: their text must come from the catalogs. (ConfigError and
# DatabaseUnavailable are the operator's one line at start-up, in English like the logs.)
ERRORS = {
    "UserError",
    "QuotaExceeded",
    "PaceExceeded",
    "CannotPost",
    "DeliveryFailed",
    "ProviderError",
    "ApiRejected",
    "ModerationRefused",
    "Reply",
}
# How an adapter or a view says something to a person.
SENDS = {"tell", "refused", "confirm", "undelivered", "send_message", "respond", "followup_send"}
WORDS = re.compile(r"[A-Za-z]{2,}")


def _messages(language: str) -> dict[str, tuple[str, ...]]:
    """id -> its text (a plural: every form) in one catalog, as written."""
    out: dict[str, tuple[str, ...]] = {}
    for message in CATALOGS.read(language):
        if not message.id:
            continue
        key = message.id[0] if isinstance(message.id, tuple) else message.id
        out[key] = message.string if isinstance(message.string, tuple) else (message.string,)
    return out


EN, ZH = _messages(ENGLISH), _messages(CHINESE)


def _calls() -> list[tuple[Path, ast.Call]]:
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                found.append((path, node))
    return found


CALLS = _calls()


def _name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        owner = func.value
        if func.attr == "send" and isinstance(owner, ast.Attribute) and owner.attr == "followup":
            return "followup_send"
        return func.attr
    return ""


def _used() -> list[tuple[str, str, set[str] | None, bool]]:
    """(where, id, keyword names or None if `**` is used, whether `n` is given) of every literal id in
    `msg(...)` and `say(locale, ...)`."""
    used = []
    for path, call in CALLS:
        name = _name(call)
        if name == "msg" and call.args:
            key_node = call.args[0]
        elif name == "say" and len(call.args) >= 2:
            key_node = call.args[1]
        else:
            continue
        if not (isinstance(key_node, ast.Constant) and isinstance(key_node.value, str)):
            continue
        names = {k.arg for k in call.keywords if k.arg}
        starred = any(k.arg is None for k in call.keywords)
        plural = (
            "n" in names or (name == "msg" and len(call.args) > 1) or (name == "say" and len(call.args) > 2)
        )
        used.append(
            (f"{path.relative_to(ROOT)}:{call.lineno}", key_node.value, None if starred else names, plural)
        )
    return used


def test_every_english_message_has_a_chinese_one_with_the_same_placeholders() -> None:
    assert EN, "the English catalog is empty"
    assert set(EN) == set(ZH), f"only English: {set(EN) - set(ZH)}; only Chinese: {set(ZH) - set(EN)}"
    for key, forms in EN.items():
        wanted = {frozenset(placeholders(form)) for form in forms}
        assert len(wanted) == 1, f"{key}: its English plural forms differ in placeholders"
        for form in ZH[key]:
            assert form, f"{key} has no Chinese"
            assert placeholders(form) == placeholders(forms[0]), f"{key}: {form!r} has other placeholders"


def test_every_message_id_in_the_code_is_in_both_catalogs_with_its_placeholders() -> None:
    used = _used()
    assert len(used) > 150  # the scan sees the code (a broken scan would pass on nothing)
    for where, key, names, plural in used:
        assert key in EN and key in ZH, f"{where}: {key} is in no catalog"
        needed = placeholders(EN[key][0]) - ({"n"} if plural else set())
        if names is not None:
            assert needed <= names, f"{where}: {key} needs {needed - names}"
            assert names - {"n"} <= needed, f"{where}: {key} has no {names - {'n'} - needed}"


def test_no_user_facing_sentence_is_written_outside_the_catalogs() -> None:
    """An error a person reads, or a reply sent to one, gets its words from a `msg`: a literal sentence (or an
    f-string with words in it) handed to one would be said in English to everyone."""
    offenders = []
    for path, call in CALLS:
        name = _name(call)
        if name not in ERRORS and not (name in SENDS and isinstance(call.func, ast.Attribute)):
            continue
        given = [*call.args[:1], *(k.value for k in call.keywords if k.arg in ("text", "content"))]
        for node in given:
            words = ""
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words = node.value
            elif isinstance(node, ast.JoinedStr):
                words = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if WORDS.search(words):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}({words[:60]!r})")
    assert not offenders, "sentences outside the catalogs:\n" + "\n".join(offenders)


def test_a_missing_empty_or_fuzzy_translation_is_said_in_english_never_as_its_id(tmp_path: Path) -> None:
    shutil.copytree(i18n.LOCALE_DIR, tmp_path / "locale")
    po = tmp_path / "locale" / "zh_CN" / "LC_MESSAGES" / "imagebot.po"
    text = po.read_text()
    text = re.sub(r'msgid "actions\.deleted"\nmsgstr "[^"]*"\n', "", text)  # missing
    text = re.sub(r'(msgid "texts\.nothing_charged"\nmsgstr )"[^"]*"', r'\1""', text)  # empty
    text = text.replace('msgid "discord.cancel"', '#, fuzzy\nmsgid "discord.cancel"')  # fuzzy
    po.write_text(text)
    catalogs = Catalogs(tmp_path / "locale")
    assert catalogs.say(CHINESE, "actions.deleted") == "Deleted."
    assert catalogs.say(CHINESE, "texts.nothing_charged") == "Nothing was charged."
    assert catalogs.say(CHINESE, "discord.cancel") == "Cancel"
    assert catalogs.say(CHINESE, "actions.confirm_cancelled") == "已取消：没有预留或收取任何费用。"
    assert catalogs.own(CHINESE, "actions.deleted") is None  # Discord's localizations: none, not English
    # A translation whose placeholders do not fit is said in English too (with a warning), never half-filled.
    po.write_text(text.replace("{cost}：API 可能", "{money}：API 可能"))
    catalogs = Catalogs(tmp_path / "locale")
    said = catalogs.say(CHINESE, "texts.charged_failed", None, {"cost": "$1"})
    assert said == "Charged $1: the API may have billed attempts that gave no image."


@pytest.mark.parametrize(
    ("setting", "platform", "language"),
    [
        (None, None, ENGLISH),
        (None, "zh-CN", CHINESE),  # Discord's and Slack's tag
        (None, "zh_CN", CHINESE),
        (None, "zh-TW", ENGLISH),  # Traditional Chinese: no catalog of ours
        (None, "en-GB", ENGLISH),
        (None, "ja-JP", ENGLISH),
        ("zh-CN", "en-US", CHINESE),  # the person's own setting comes first
        ("en", "zh-CN", ENGLISH),
        ("klingon", "zh-CN", CHINESE),  # a setting we do not speak: the platform's, then English
    ],
)
def test_the_language_is_the_setting_else_the_platform_locale_else_english(
    setting: str | None, platform: str | None, language: str
) -> None:
    assert language_for(setting, platform) == language


def test_money_numbers_and_times_are_written_as_each_language_writes_them() -> None:
    assert i18n.money(211_000) == "$0.2110"
    assert i18n.money(211_000, CHINESE) == "US$0.2110"
    assert i18n.money(1_234_500_000, ENGLISH) == "$1,234.5000"
    assert i18n.number(12.6, CHINESE) == "13" and i18n.number(1234.25, ENGLISH, 1) == "1,234.2"
    when = datetime(2026, 12, 6, 14, 3, 5, tzinfo=ZoneInfo("UTC"))
    assert i18n.time_of_day(when) == "14:03:05 UTC"
    assert i18n.moment(when, CHINESE) == "2026年12月6日 14:03:05"


def test_a_message_is_its_english_text_and_says_itself_in_chinese() -> None:
    text = msg("texts.images", n=3)
    assert text == "3 images" and str(text) == "3 images"
    assert text.render(CHINESE) == "3 张图片" and msg("texts.images", n=1) == "1 image"
    nested = msg("texts.image_failed", error=msg("actions.not_ours"))
    assert nested.render(CHINESE) == "失败：该按钮不属于 imagebot"
