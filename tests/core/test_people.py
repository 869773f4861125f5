"""A person's own defaults, a job's card and their history through the real core (bot/policy/preferences.py,
bot/jobs/card.py, bot/store/people.py), on SQLite and on PostgreSQL: what a default does to a request, what
the channel's ceilings do to a default, who may read a card, and that a bad setting changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import commands
from bot.errors import UserError
from bot.jobs.card import no_such_job
from bot.model.pricing import format_usd, load_prices
from bot.model.request import Defaults, ImageRequest, Requester, parse_request
from bot.model.sizes import parse_size
from bot.policy.access import QUALITY_RANK, Access, Rules, from_your_default
from bot.policy.preferences import Preferences
from tests.support.core import ALICE, BOB, MakeCore, admin_chat, rows
from tests.support.core import AccessView as View

PRICES = load_prices()
ADMIN = Requester("slack", "W1", "C1", "UADMIN")
ELSEWHERE = Requester("slack", "W2", "C1", "U1")  # the same user id in another workspace


async def settings_of(core: Any, who: Requester, text: str = "") -> str:
    return (await commands.my_settings(core, who, text)).text


def shape(request: ImageRequest) -> tuple[str, str, str, int, bool]:
    """What a request asks for: size, quality, format, count, and whether it is relax."""
    return (str(request.size), request.quality, request.format, request.count, request.relax)


# -- defaults -------------------------------------------------------------------------------------------------


async def test_a_default_fills_in_what_the_request_leaves_unsaid(make_core: MakeCore) -> None:
    core = await make_core()
    said = await settings_of(core, ALICE, "--size 2k --quality high --relax format=png count=2")
    assert "size: 2k (yours)" in said and "mode: relax (yours)" in said
    bare = await core.parse_for(ALICE, "a lighthouse")
    assert shape(bare) == ("2048x2048", "high", "png", 2, True)
    assert set(bare.defaulted) == {"size", "quality", "format", "count", "mode"}
    typed = await core.parse_for(ALICE, "a fox --size 1k --quality low --format jpeg --count 1 --fast")
    assert shape(typed) == ("1024x1024", "low", "jpeg", 1, False)
    assert typed.defaulted == ()
    # Bob, and Alice in another workspace, have their own (none).
    for other in (BOB, ELSEWHERE):
        plain = await core.parse_for(other, "a cat")
        assert shape(plain)[:4] == ("auto", "auto", "jpeg", 1)


async def test_an_aspect_ratio_default_shapes_a_preset_size(make_core: MakeCore) -> None:
    core = await make_core()
    await settings_of(core, ALICE, "size=2k ar=16:9")
    assert str((await core.parse_for(ALICE, "wide")).size) == str(parse_size("2k", "16:9"))
    assert str((await core.parse_for(ALICE, "wider --size 4k")).size) == str(parse_size("4k", "16:9"))
    assert str((await core.parse_for(ALICE, "exact --size 1536x1024")).size) == "1536x1024"
    await core.set_preferences(ALICE, "size=1536x1024")  # an exact size: the ratio waits for a preset
    assert str((await core.parse_for(ALICE, "exact")).size) == "1536x1024"
    assert str((await core.parse_for(ALICE, "typed --size 2k")).size) == str(parse_size("2k", "16:9"))


@pytest.mark.parametrize(
    ("words", "names"),
    [
        ("colour=red", ["size=", "quality=", "mode=", "language="]),
        ("quality=ultra", ["low, medium, high, auto"]),
        ("format=gif", ["png, jpeg, webp"]),
        ("count=9", ["1-4"]),
        ("mode=slow", ["fast, relax"]),
        ("language=fr", ["en, zh-CN"]),
        ("size=99x99", ["auto, 1k, 2k, 4k or WxH"]),
        ("ar=0:1", ["W:H"]),
        ("--model gpt-image-2", ["size="]),
        ("quality=high size=huge", ["auto, 1k, 2k, 4k or WxH"]),
    ],
)
async def test_a_bad_setting_names_the_valid_ones_and_changes_nothing(
    make_core: MakeCore, words: str, names: list[str]
) -> None:
    core = await make_core()
    await core.set_preferences(ALICE, "quality=low language=zh-CN")
    with pytest.raises(UserError) as refused:
        await core.set_preferences(ALICE, words)
    assert "Nothing was changed" in str(refused.value)
    assert all(name in str(refused.value) for name in names), str(refused.value)
    assert await core.preferences(ALICE) == Preferences(quality="low", language="zh-CN")


async def test_default_and_reset_clear_settings(make_core: MakeCore) -> None:
    core = await make_core()
    await core.set_preferences(ALICE, "quality=high format=webp language=zh_cn")
    assert (await core.preferences(ALICE)).language == "zh-CN"
    await core.set_preferences(ALICE, "quality=default")
    assert await core.preferences(ALICE) == Preferences(format="webp", language="zh-CN")
    await core.set_preferences(ALICE, "reset")
    assert await core.preferences(ALICE) == Preferences()


async def test_a_default_above_a_ceiling_is_refused_as_the_flag_would_be_and_says_it_is_yours(
    make_core: MakeCore,
) -> None:
    core = await make_core()
    await admin_chat(core, ADMIN, "channel <#C1> max_quality=medium max_size=1k", platform_admin=True)
    await core.set_preferences(ALICE, "quality=high")
    view = View()
    await core.submit(await core.parse_for(ALICE, "a lighthouse"), ALICE, view)
    [mine] = view.refusals
    await core.submit(await core.parse_for(BOB, "a lighthouse --quality high"), BOB, (typed := View()))
    [theirs] = typed.refusals
    assert mine.startswith(theirs) and from_your_default("quality") in mine
    await core.set_preferences(ALICE, "quality=default size=2k")
    await core.submit(await core.parse_for(ALICE, "a lighthouse"), ALICE, (big := View()))
    assert "max_size=1k" in big.refusals[0] and from_your_default("size") in big.refusals[0]
    assert rows(core) == []  # nothing reserved


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.sampled_from(["auto", "1k", "2k", "4k", "1536x1024", "1024x1536", "2560x1440"]),
    quality=st.sampled_from(["low", "medium", "high", "auto"]),
    ceiling_size=st.sampled_from([None, "1k", "2k", "1536x1024", "4k"]),
    ceiling_quality=st.sampled_from([None, "low", "medium", "high"]),
    typed=st.booleans(),
)
def test_a_default_never_escapes_a_channel_ceiling(
    size: str, quality: str, ceiling_size: str | None, ceiling_quality: str | None, typed: bool
) -> None:
    """Whatever a person's defaults and a channel's ceilings: what runs is within every ceiling, or nothing runs;
    and a default is treated exactly as the same value typed as a flag (same outcome, same rule named)."""
    mine = Preferences(size=size, quality=quality)
    rules = Rules(
        {
            name: value
            for name, value in (("max_size", ceiling_size), ("max_quality", ceiling_quality))
            if value is not None
        },
        {},
    )
    rules = Rules({k: (str(parse_size(v)) if k == "max_size" else v) for k, v in rules.channel.items()}, {})
    gate = Access(PRICES)

    def admitted(request: ImageRequest) -> ImageRequest | str:
        try:
            return gate.within(request, rules)
        except UserError as exc:
            return str(exc)

    from_default = admitted(parse_request("a fox", prices=PRICES, defaults=mine.over(Defaults())))
    from_flags = admitted(parse_request(f"a fox --size {size} --quality {quality}", prices=PRICES))
    if isinstance(from_default, str):
        assert isinstance(from_flags, str) and from_default.startswith(from_flags)
        return
    assert isinstance(from_flags, ImageRequest)
    assert (from_default.size, from_default.quality) == (from_flags.size, from_flags.quality)
    if ceiling_size is not None and not from_default.size.is_auto:
        assert from_default.size.pixels <= parse_size(ceiling_size).pixels
    if ceiling_quality is not None:
        assert from_default.quality != "auto" or ceiling_quality == "high"
        assert QUALITY_RANK.get(from_default.quality, 2) <= QUALITY_RANK[ceiling_quality]


# -- a job's card and history -----------------------------------------------------------------------------------


async def test_the_card_shows_the_ledgers_money_to_the_asker_and_admins_only(make_core: MakeCore) -> None:
    core = await make_core()
    request = await core.parse_for(ALICE, "a lighthouse --size 1024x1024 --quality low --count 2")
    result = await core.submit(request, ALICE, View())
    assert result is not None
    job = result.job_id
    ledger_rows = rows(core, "job_id=?", (job,))
    reserved = sum(r["reserved_micros"] for r in ledger_rows)
    charged = sum(r["actual_micros"] for r in ledger_rows)
    shown = (await commands.info(core, ALICE, job, platform_admin=False)).text
    assert f"reserved {format_usd(reserved)}, charged {format_usd(charged)}" in shown
    assert (
        "a lighthouse" in shown
        and "2 images" in shown
        and "1024x1024" in shown
        and "References: none" in shown
    )
    assert (await commands.info(core, ALICE, "1", platform_admin=False)).text == shown
    assert (await commands.info(core, ADMIN, job, platform_admin=True)).text == shown
    for who, admin in ((BOB, False), (ELSEWHERE, False), (ELSEWHERE, True)):
        with pytest.raises(UserError) as refused:
            await commands.info(core, who, job, platform_admin=admin)
        assert str(refused.value) == no_such_job(job)
    with pytest.raises(UserError) as unknown:
        await commands.info(core, BOB, "0123456789abcdef", platform_admin=False)
    assert str(unknown.value) == no_such_job("0123456789abcdef")


async def test_history_lists_exactly_the_callers_jobs_newest_first(make_core: MakeCore) -> None:
    core = await make_core()
    mine = []
    for n in range(3):
        result = await core.submit(
            await core.parse_for(ALICE, f"mine {n} --quality low --size 1024x1024"), ALICE, View()
        )
        assert result is not None
        mine.append(result.job_id)
    other = await core.submit(await core.parse_for(BOB, "theirs --quality low --size 1024x1024"), BOB, View())
    assert other is not None
    listed = (await commands.my_history(core, ALICE, "")).text
    assert [line.split(" job ")[-1] for line in listed.splitlines() if " job " in line] == mine[::-1]
    assert other.job_id not in listed and "theirs" not in listed
    two = (await commands.my_history(core, ALICE, "2")).text
    assert mine[0] not in two and mine[2] in two
    with pytest.raises(UserError, match="1 to 50"):
        await commands.my_history(core, ALICE, "51")
    assert "no jobs" in (await commands.my_history(core, ELSEWHERE, "")).text


async def test_the_console_has_settings_history_and_info(make_core: MakeCore, tmp_path: Any) -> None:
    from adapters.console import handle_line

    core = await make_core()
    who = Requester("console", "local", "console", "console")
    said = await handle_line(core, "/settings --size 1536x1024 --quality low", who, tmp_path)
    assert said is not None and "size: 1536x1024 (yours)" in said
    assert await handle_line(core, "a red fox", who, tmp_path) is None
    [row] = rows(core)
    assert (row["size"], row["quality"]) == ("1536x1024", "low")
    listed = await handle_line(core, "/history", who, tmp_path)
    assert listed is not None and row["job_id"] in listed and format_usd(row["actual_micros"]) in listed
    written = next(tmp_path.glob("image-*"))
    assert str(written) in listed
    shown = await handle_line(core, "/info 1", who, tmp_path)
    assert shown is not None and f"charged {format_usd(row['actual_micros'])}" in shown
    assert "not one of your settings" in (
        await handle_line(core, "/settings colour=red", who, tmp_path) or ""
    )
    assert (await core.preferences(who)).size == "1536x1024"
