"""The buttons under a result and the price check, the same on Slack and Discord, written once and run on each
(tests/support/platforms.py drives the platform): Re-roll, Vary, Upscale, Edit and Delete, whose job a click is,
how long a button lives, and how an expensive render asks its requester first. How each platform lays out and
acknowledges its buttons stays in test_slack_actions.py and test_discord_actions.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.jobs import texts
from tests.support.platforms import Driver, backdate

CHECK = {"IMAGEBOT_CONFIRM_USD": "0.10"}  # a price check above $0.10: a high 1024x1024 image asks first
WIDE = "1536x1024"


# -- the buttons ---------------------------------------------------------------------------------------------


async def test_reroll_repeats_the_request_as_the_clickers_own_job_under_the_result(on: Driver) -> None:
    first = await on.result("a red fox in snow", size=WIDE)
    again = await on.delivered(await on.click(first, "Re-roll", user="other"))
    one, two = on.bot.server.calls
    assert two.endpoint == "generations" and two.images == 0
    assert (two.prompt, two.size, two.quality) == (one.prompt, one.size, one.quality)
    assert on.answers(again, first)  # in the result's thread, or the response to the click on it
    assert on.labels(again)[0] == "Re-roll"  # the new job's result has its own buttons
    rows = await on.bot.ledger()
    assert [(r["user"], r["channel"], r["status"]) for r in rows] == [
        (on.users["member"], on.channels["here"], "delivered"),
        (on.users["other"], on.channels["here"], "delivered"),
    ]


async def test_vary_edits_the_delivered_image_fetched_from_the_platform(on: Driver) -> None:
    first = await on.result("a red fox in snow", size=WIDE)
    varied = await on.delivered(await on.click(first, "Vary"))
    vary = on.bot.server.calls[-1]
    assert vary.endpoint == "edits" and vary.images == 1 and not vary.mask
    assert vary.size == WIDE and (vary.prompt or "").startswith("a red fox in snow")
    assert await on.fetched(first)  # the image on the result, downloaded as the platform serves it
    assert "Vary" in on.labels(varied) and await on.image_sizes(varied) == [(1536, 1024)]


async def test_several_images_get_numbered_buttons_and_vary_n_edits_the_nth(on: Driver) -> None:
    many = await on.result("four of them", size="1024x1024", count=4)
    assert sorted(on.labels(many)) == sorted(
        ["Re-roll", "Info"]
        + [f"{verb} {n}" for verb in ("Vary", "Upscale", "Edit", "Delete") for n in range(1, 5)]
    )
    assert await on.image_sizes(many) == [(1024, 1024)] * 4
    await on.delivered(await on.click(many, "Vary 3"))
    assert await on.fetched(many, 2) and not await on.fetched(many, 1)
    assert on.bot.server.calls[-1].endpoint == "edits"


async def test_upscale_renders_the_largest_size_of_the_shape_at_high_and_not_beyond(on: Driver) -> None:
    first = await on.result("a wide valley", size=WIDE)
    bigger = await on.delivered(await on.click(first, "Upscale"))
    upscale = on.bot.server.calls[-1]
    assert (upscale.endpoint, upscale.images, upscale.size, upscale.quality) == (
        "edits",
        1,
        "3504x2336",
        "high",
    )
    assert await on.image_sizes(bigger) == [(3504, 2336)]
    assert "Upscale" not in on.labels(bigger)  # at its largest already: no Upscale under it
    assert on.labels(bigger)[:2] == ["Re-roll", "Vary"]


async def test_edit_opens_a_form_whose_instruction_is_the_prompt_of_the_clickers_job(on: Driver) -> None:
    first = await on.result("a quiet harbour", size=WIDE)
    edited = await on.delivered(await on.edit(first, "make the sky stormy", user="other"))
    edit = on.bot.server.calls[-1]
    assert (edit.endpoint, edit.images, edit.prompt, edit.size) == ("edits", 1, "make the sky stormy", WIDE)
    assert edited.row["user"] == on.users["other"] and on.answers(edited, first) and on.labels(edited)
    assert on.forms_opened() == 1


async def test_delete_is_the_requesters_or_an_admins_and_not_anothers(on: Driver) -> None:
    mine = await on.result("a secret plan", size="1024x1024")
    assert await on.refused(await on.click(mine, "Delete", user="other")) == texts.DELETE_REFUSED
    assert not on.gone(mine)
    assert await on.told(await on.click(mine, "Delete")) == texts.DELETED
    assert on.gone(mine)
    if on.buttons_outlive_their_image:  # its other buttons now say so, privately, and call nothing
        assert "deleted" in await on.refused(await on.click(mine, "Vary"))
    # An admin may delete anyone's image; deleting calls no image API.
    also = await on.result("another plan", size="1024x1024")
    assert await on.told(await on.click(also, "Delete", user="admin")) == texts.DELETED
    assert on.gone(also) and len(on.bot.server.calls) == 2


@pytest.mark.env(IMAGEBOT_USER_DAILY_IMAGES="1")
async def test_a_click_over_the_clickers_own_quota_is_refused_privately(on: Driver) -> None:
    mine = await on.result("mine", size="1024x1024")
    await on.delivered(await on.click(mine, "Re-roll", user="other"))  # their one image of the day
    assert "daily images" in await on.refused(await on.click(mine, "Vary", user="other"))
    assert len(on.bot.server.calls) == 2 and len(await on.bot.ledger()) == 2


async def test_buttons_past_their_days_only_say_so_privately(on: Driver) -> None:
    old = await on.result("old news", size="1024x1024")
    await backdate(on.bot, "results", timedelta(days=31))  # past IMAGEBOT_ACTIONS_DAYS (30)
    for label in ("Vary", "Re-roll", "Delete"):
        assert "expired" in await on.refused(await on.click(old, label)), label
    assert len(on.bot.server.calls) == 1 and len(await on.bot.ledger()) == 1 and not on.gone(old)


async def test_buttons_work_after_a_restart(on: Driver) -> None:
    first = await on.result("a lasting image", size=WIDE)
    await on.restart()
    await on.delivered(await on.click(first, "Vary"))
    [vary] = on.bot.server.calls  # the new process's image server
    assert (vary.endpoint, vary.images, vary.size) == ("edits", 1, WIDE)
    assert len(await on.bot.ledger()) == 2


async def test_a_replayed_command_click_or_form_is_no_new_job(on: Driver) -> None:
    """The same command, click or form delivered again (Slack's retry of a signed request within its 5 minutes,
    Discord's redelivered interaction) is acknowledged and ignored: one job, one API call and one image each,
    and the replays get no word of their own."""
    command = await on.start("a red fox", size="1024x1024")
    for _ in range(2):
        await on.replay(command)
    first = await on.delivered(command)
    click = await on.click(first, "Re-roll")
    for _ in range(2):
        await on.replay(click)
    await on.delivered(click)
    form = await on.edit(first, "make the fox blue")
    for _ in range(2):
        await on.replay(form)
    await on.delivered(form)
    # A positive signal that every replay above was handled: a new command after them renders; then the drain.
    await on.render("a grey wolf", size="1024x1024")
    await on.bot.idle()
    rows = await on.bot.ledger()
    assert [r["status"] for r in rows] == ["delivered"] * 4, rows
    assert len(on.bot.server.calls) == 4 and on.forms_opened() == 1
    assert len(on.images_posted()) == 4 and on.private_to("member") == []


# -- the price check -----------------------------------------------------------------------------------------


@pytest.mark.env(**CHECK)
async def test_an_expensive_render_asks_privately_first_and_renders_once_on_render(on: Driver) -> None:
    question = await on.ask("a cathedral", size="1024x1024", quality="high")
    assert on.labels(question) == ["Render", "Cancel"]
    assert "up to $0.21" in question.text and "$0.1000" in question.text and "Render" in question.text
    await on.bot.idle()
    assert await on.bot.ledger() == [] and on.bot.server.calls == [] and on.images_posted() == []
    result = await on.delivered(await on.click(question, "Render"))
    assert (result.row["quality"], result.row["size"]) == ("high", "1024x1024")
    [call] = on.bot.server.calls
    assert (call.prompt, call.size, call.quality) == ("a cathedral", "1024x1024", "high")
    assert on.labels(result)[0] == "Re-roll"  # a rendered price check is a job like any other
    assert on.question_open(question) != on.answered_questions_close
    # Pressed again (a second tab), it renders nothing more.
    assert "already" in await on.refused(await on.click(question, "Render"))
    assert len(on.bot.server.calls) == 1


@pytest.mark.env(**CHECK)
async def test_cancel_on_the_price_check_costs_nothing(on: Driver) -> None:
    question = await on.ask("a cathedral", size="1024x1024", quality="high")
    assert await on.told(await on.click(question, "Cancel")) == texts.CONFIRM_CANCELLED
    await on.bot.idle()
    [(state,)] = await on.bot.core.ledger.query("SELECT state FROM confirmations")
    assert state == "cancelled" and on.question_open(question) != on.answered_questions_close
    assert await on.bot.ledger() == [] and on.bot.server.calls == []


@pytest.mark.env(**CHECK)
async def test_render_by_another_or_after_ten_minutes_is_refused(on: Driver) -> None:
    question = await on.ask("a cathedral", size="1024x1024", quality="high")
    assert "only the person who asked" in await on.refused(await on.click(question, "Render", user="other"))
    await backdate(on.bot, "confirmations", timedelta(minutes=11))
    assert "expired" in await on.refused(await on.click(question, "Render"))
    assert await on.bot.ledger() == [] and on.bot.server.calls == [] and on.images_posted() == []


@pytest.mark.env(**CHECK)
async def test_a_cheap_render_does_not_ask_and_an_expensive_click_asks_its_clicker(on: Driver) -> None:
    first = await on.result("a red fox", size=WIDE)  # low: no question
    assert on.private_to("member") == [] and len(on.bot.server.calls) == 1
    question = await on.asked(await on.click(first, "Upscale", user="other"))  # high at 3504x2336
    assert on.labels(question) == ["Render", "Cancel"] and len(on.bot.server.calls) == 1
    bigger = await on.delivered(await on.click(question, "Render", user="other"))
    assert bigger.row["user"] == on.users["other"] and on.bot.server.calls[-1].size == "3504x2336"
