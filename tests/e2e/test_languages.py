"""Two languages end to end: each person hears the bot in their own language (their Discord client's locale,
their Slack locale from users.info), in the same channel at the same time; prompts stay as typed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from tests.e2e.harness import RunningBot, running_bot, slack_env
from tests.fakes.discord import FakeDiscord, RestCall, reset_discord_endpoints
from tests.fakes.slack import FakeSlack
from tests.support.discord import RESULT_LABELS


@contextlib.asynccontextmanager
async def discord_bot(tmp_path: Path) -> AsyncIterator[tuple[FakeDiscord, RunningBot]]:
    """A fake Discord and the bot connected to it, with its commands synced."""
    fake = FakeDiscord()
    await fake.start()
    try:
        async with running_bot(
            tmp_path, {"DISCORD_TOKEN": fake.token, "DISCORD_API_URL": fake.api_url}
        ) as bot:
            await fake.wait_ready()
            await fake.wait_for("PUT", rf"/applications/{fake.application_id}/commands")
            bot.adapters["discord"].edit_interval = 0.05
            yield fake, bot
    finally:
        await fake.stop()
        reset_discord_endpoints()
    assert not fake.errors, fake.errors


def original_edits(fake: FakeDiscord, ix: dict[str, Any]) -> list[RestCall]:
    return fake.calls_matching("PATCH", rf"/webhooks/{fake.application_id}/{ix['token']}/messages/@original")


async def _until(fake: FakeDiscord, found: Callable[[RestCall], bool], within: float = 30) -> RestCall:
    async with asyncio.timeout(within):
        while True:
            hits = [c for c in fake.calls if found(c)]
            if hits:
                return hits[0]
            await asyncio.sleep(0.02)


def _text(call: RestCall) -> str:
    body = call.json if isinstance(call.json, dict) else {}
    return str(body.get("content") or "").replace("\\", "")


def _labels(call: RestCall) -> list[str]:
    body = call.json if isinstance(call.json, dict) else {}
    return [c.get("label", "") for row in body.get("components") or [] for c in row.get("components") or []]


async def _imagine(fake: FakeDiscord, prompt: str, user_id: int, locale: str) -> dict[str, Any]:
    options = [{"name": "prompt", "type": 3, "value": prompt}]
    return await fake.send_interaction(name="imagine", options=options, user_id=user_id, locale=locale)


async def test_a_chinese_discord_user_hears_chinese_while_an_english_one_hears_english(
    tmp_path: Path,
) -> None:
    async with discord_bot(tmp_path) as (fake, bot):
        english, chinese = fake.user_id, fake.user_id + 1
        bot.server.latency = 0.3  # long enough for a progress edit

        # A refusal: private, in the asker's language, and naming the same rule.
        refused_zh = await _imagine(fake, "一只猫 --size 4000x1000", chinese, "zh-CN")
        refused_en = await _imagine(fake, "a cat --size 4000x1000", english, "en-US")
        said_zh = await _until(fake, lambda c: refused_zh["token"] in c.path and "4000" in _text(c))
        said_en = await _until(fake, lambda c: refused_en["token"] in c.path and "4000" in _text(c))
        assert "宽度 4000 超过了 3840 的上限" in _text(said_zh)
        assert "width 4000 is over the 3840 limit" in _text(said_en)
        assert bot.server.calls == [] and await bot.ledger() == []

        # A job each, at once, in the same channel: progress and summary in the requester's language.
        zh = await _imagine(fake, "灯塔，黎明 --quality low --size 1024x1024", chinese, "zh-CN")
        en = await _imagine(fake, "a lighthouse at dawn --quality low --size 1024x1024", english, "en-US")
        final_zh = await _until(fake, lambda c: c in original_edits(fake, zh) and bool(c.files))
        final_en = await _until(fake, lambda c: c in original_edits(fake, en) and bool(c.files))
        await bot.settled(2)

        progress_zh = _text(original_edits(fake, zh)[0])
        progress_en = _text(original_edits(fake, en)[0])
        assert "**正在生成**" in progress_zh and "秒" in progress_zh and "Rendering" not in progress_zh
        assert "**Rendering**" in progress_en and "正在" not in progress_en
        assert "请求 ID req_" in _text(final_zh) and "离线图像服务器" in _text(final_zh)
        assert "US$" in _text(final_zh)
        assert "request id req_" in _text(final_en) and "US$" not in _text(final_en)
        assert [label.split(" · ")[0] for label in _labels(final_zh)] == [
            "重新生成",
            "变体",
            "放大",
            "编辑",
            "删除",
            "信息",
        ]
        assert [label.split(" · ")[0] for label in _labels(final_en)] == RESULT_LABELS
        # The prompt is never translated: the image API got it as typed, and the summary quotes it so.
        # (Sent at once, the two jobs may reach the API in either order.)
        assert sorted(c.prompt for c in bot.server.calls) == sorted(["灯塔，黎明", "a lighthouse at dawn"])
        assert "灯塔，黎明" in _text(final_zh)
        # The job keeps its language, for a restart that delivers it or tells of it.
        contexts = {json.loads(r["context"])["locale"] for r in await bot.ledger()}
        assert contexts == {"zh-CN", "en"}


async def test_discord_commands_carry_chinese_localizations_the_api_accepts(tmp_path: Path) -> None:
    async with discord_bot(tmp_path) as (fake, _bot):
        [put] = fake.calls_matching("PUT", rf"/applications/{fake.application_id}/commands")
        assert put.status == 200  # the fake checks localizations as Discord does (locale keys, name rules)
        commands = {c["name"]: c for c in fake.registered_commands}
        imagine = commands["imagine"]
        assert imagine["name_localizations"]["zh-CN"] == "画图"
        assert imagine["description_localizations"]["zh-CN"].startswith("用 gpt-image-2 生成图片")
        prompt = next(o for o in imagine["options"] if o["name"] == "prompt")
        assert prompt["name_localizations"] == {"zh-CN": "提示词"}
        admin = commands["imagine-admin"]
        quota = next(o for o in admin["options"] if o["name"] == "quota")
        assert quota["name_localizations"] == {"zh-CN": "配额"}
        assert commands["Edit image"]["name_localizations"] == {"zh-CN": "编辑图片"}


async def test_a_chinese_slack_user_hears_chinese_by_their_users_info_locale(
    slack: FakeSlack, tmp_path: Path
) -> None:
    slack.locales["U2"] = "zh-CN"
    async with running_bot(tmp_path, slack_env(slack), latency=0.3) as bot:
        await slack.send_slash_command(bot.events_url, text="一只猫 --size 4000x1000", user_id="U2")
        await slack.send_slash_command(bot.events_url, text="a cat --size 4000x1000", user_id="U1")
        await slack.wait_for("response_url", 2)
        said = [str(e.get("text")) for e in slack.response_posts]
        assert any("宽度 4000 超过了 3840 的上限" in s for s in said)
        assert any("width 4000 is over the 3840 limit" in s for s in said)

        await slack.send_slash_command(
            bot.events_url, text="灯塔 --quality low --size 1024x1024", user_id="U2"
        )
        await slack.send_slash_command(
            bot.events_url, text="a lighthouse --quality low --size 1024x1024", user_id="U1"
        )
        await slack.wait_for("files.completeUploadExternal", 2)
        await bot.settled(2)
        by_prompt = {u.title: u.initial_comment for u in slack.uploaded}
        assert "请求 ID req_" in by_prompt["灯塔"] and "US$" in by_prompt["灯塔"]
        assert "request id req_" in by_prompt["a lighthouse"] and "请求" not in by_prompt["a lighthouse"]
        posts = {c.args["text"]: c.args for c in slack.calls_to("chat.postMessage")}
        assert "排队中：灯塔" in posts and "Queued: a lighthouse" in posts
        progress = json.dumps(posts["排队中：灯塔"]["blocks"], ensure_ascii=False)
        assert "秒" in progress and "离线图像服务器" in progress and "取消" in progress
        # users.info was asked with include_locale, once per person however many commands they sent.
        asked = [c.args for c in slack.calls_to("users.info")]
        assert sorted(a["user"] for a in asked) == ["U1", "U2"]
        assert all(str(a.get("include_locale")).lower() in ("1", "true") for a in asked)


async def test_a_slack_user_whose_locale_we_do_not_speak_hears_english(
    slack: FakeSlack, bot: RunningBot
) -> None:
    slack.locales["U1"] = "ja-JP"
    await slack.send_slash_command(bot.events_url, text="a cat --size 4000x1000")
    await slack.wait_for("response_url")
    assert "width 4000 is over the 3840 limit" in str(slack.response_posts[-1].get("text"))
