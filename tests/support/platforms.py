"""One scenario, both platforms: a small driver per platform that does what a person does there (an admin sets
a rule, a member runs /imagine, clicks a button under a result, fills in the Edit form, reads what only they were
told) through the fake Slack or the fake Discord, so a rule that is the same on both is written once
(tests/e2e/test_*_rules.py) and run on each.

Users are named by their part: "member" (the one who usually asks), "other" (a second member), "artist" (the one
member of the "artists" group: a Slack user group, a Discord role), "admin" (a workspace admin on Slack, Manage
Server on Discord). Channels: "here" (the one the tests use) and "elsewhere".

What a scenario holds: a `Shown` (a message the bot posted: a result with its ledger row, or a private price
question) and a `Sent` (what a person sent: a command, a click, a submitted form), which the driver reads back
(`delivered`, `told`). Where the two platforms genuinely differ, the driver says so in an attribute."""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from tests.e2e.harness import RunningBot, running_bot, slack_env
from tests.fakes.discord import FakeDiscord, reset_discord_endpoints
from tests.fakes.slack import FakeSlack
from tests.support import discord as on_discord
from tests.support import slack as on_slack
from tests.support.waits import until

HERE = 1100000000000000003  # the fake Discord's own channel (FakeDiscord's default channel_id)
ELSEWHERE = 1100000000000000077  # a second text channel of the Discord guild
ARTISTS_GROUP = "S0ART"  # the Slack user group of the artists
ORIGINAL = r"/webhooks/\d+/[^/]+/messages/@original"  # an interaction's response, edited
SHORT = 0.5  # seconds the Discord adapter waits on one call when a test makes it hang
PRICED = re.compile(r" · \$\d+\.\d+$")  # a render button's price


@dataclass
class Shown:
    """A message the bot posted: `ref` finds it on the platform; a result has its ledger `row`, a question its
    `text`."""

    ref: Any
    row: dict[str, Any] = field(default_factory=dict)
    text: str = ""


@dataclass
class Sent:
    """What `user` sent (a command, a click, a form): `ref` is the platform's handle; the rest is what there was
    before it, so that what it set off can be told apart."""

    user: str
    ref: Any
    rows: int  # ledger rows
    calls: int = 0  # image API calls
    images: int = 1  # how many images it asked for
    jobs: int = 0  # Slack's job messages
    said: dict[str, str] = field(default_factory=dict)  # what the sender had been told, on Slack
    work: Any = None  # the bot's work in flight, on Slack


@dataclass(frozen=True)
class Ask:
    """One /imagine: by the `user` part, in the `where` channel, with these options (None: not given)."""

    prompt: str
    user: str = "member"
    size: str | None = None
    quality: str | None = "low"
    where: str = "here"
    relax: bool = False
    count: int | None = None


@dataclass(frozen=True)
class Pick:
    """What an /imagine-admin verb names, as ids: a user, the artists group, a channel, its settings (or the
    settings verb's text)."""

    user: str | None
    group: bool
    channel: str | None
    settings: str | None


class Driver:
    """What a scenario may do on a platform (a driver per platform implements the rest), and the ids the ledger
    stores for its people and places."""

    bot: RunningBot
    stack: contextlib.AsyncExitStack
    tmp_path: Path  # where the bot's SQLite file is
    users: dict[str, str]  # part -> the user id in the ledger
    channels: dict[str, str]  # "here" / "elsewhere" -> the channel id in the ledger
    tenant: str  # "slack:T0001", "discord:<guild>": where settings and ledger rows belong
    artists: str  # how the bot writes the artists group in its answers
    admin_verbs: tuple[str, ...]  # what `/imagine-admin help` lists on this platform
    # Where the platforms differ: on Slack a deleted image leaves its job message (and buttons) behind, on
    # Discord the message that carried it goes; Slack takes an answered price question away, Discord cannot
    # edit an ephemeral message it did not send with the clicking interaction, so it stays.
    buttons_outlive_their_image: bool
    answered_questions_close: bool
    # The faults a connection to the platform can have on the way to posting an image, and on a progress edit:
    # Slack's upload takes three calls, each of which can drop; Discord's is one edit, which can drop or hang.
    upload_faults: tuple[str, ...]
    progress_faults: tuple[str, ...]

    # -- the bot ------------------------------------------------------------------------------------------

    def _bot(self) -> contextlib.AbstractAsyncContextManager[RunningBot]:
        raise NotImplementedError

    async def restart(self) -> None:
        """Stop the bot (if it runs) and start it on the same database, against the same fake platform (a
        deploy)."""
        await self.stack.aclose()
        self.bot = await self.stack.enter_async_context(self._bot())

    # -- an admin, a person's commands --------------------------------------------------------------------

    async def admin(
        self,
        verb: str,
        *,
        by: str = "admin",
        user: str | None = None,
        group: bool = False,
        where: str | None = None,
        settings: str | None = None,
    ) -> str:
        """`/imagine-admin <verb>` by `by`, naming a user (a part), the artists group, a channel and settings as
        the platform lets an admin pick them: what only they were told."""
        pick = Pick(
            self.users[user] if user else None, group, self.channels[where] if where else None, settings
        )
        return await self._admin(verb, self.users[by], pick)

    async def _admin(self, verb: str, by: str, pick: Pick) -> str:
        raise NotImplementedError

    async def set_channel(self, settings: str) -> str:
        """`/imagine-admin channel <here> <settings>` by the admin: what only they were told."""
        return await self.admin("channel", where="here", settings=settings)

    async def settings(self, text: str = "") -> str:
        """`/imagine-admin settings [text]` by the admin: what only they were told."""
        return await self.admin("settings", settings=text or None)

    async def my_settings(self, user: str = "member", **values: str) -> str:
        """`/imagine-settings name=value ...` (nothing: only shows): what only `user` was told."""
        raise NotImplementedError

    async def command(self, name: str, value: str = "", *, user: str = "member") -> str:
        """`/imagine-info <value>` or `/imagine-history <value>` (`name` without its slash): the private answer."""
        raise NotImplementedError

    @contextlib.contextmanager
    def another_workspace(self) -> Iterator[None]:
        """While it lasts, the people send from another workspace (Slack) or server (Discord)."""
        holder, name, other = self._another_workspace()
        home = getattr(holder, name)
        setattr(holder, name, other)
        try:
            yield
        finally:
            setattr(holder, name, home)

    def _another_workspace(self) -> tuple[Any, str, Any]:
        """Where the fake keeps the workspace people send from (object, attribute), and another one."""
        raise NotImplementedError

    # -- /imagine -----------------------------------------------------------------------------------------

    async def start(self, prompt: str, **how: Any) -> Sent:
        """/imagine (`how`: user, size, quality, where, relax, count, as in `Ask`), without waiting for it: a
        handle for `delivered`, `told`, `asked` or `replay`."""
        return await self._start(Ask(prompt, **how))

    async def _start(self, ask: Ask) -> Sent:
        raise NotImplementedError

    async def result(self, prompt: str, **how: Any) -> Shown:
        """/imagine that renders: the message with its image and buttons, and its ledger row."""
        return await self.delivered(await self.start(prompt, **how))

    async def render(self, prompt: str, **how: Any) -> dict[str, Any]:
        """/imagine that renders: its ledger row, once delivered."""
        return (await self.result(prompt, **how)).row

    async def finish(self, sent: Sent) -> dict[str, Any]:
        """Wait until the job `start` began has posted its image and its row is delivered: the row."""
        return (await self.delivered(sent)).row

    async def refuse(self, prompt: str, **how: Any) -> str:
        """/imagine that the rules refuse: what only its user was told. Nothing was posted in public, no image
        API was called and no ledger row was written."""
        raise NotImplementedError

    async def ask(self, prompt: str, **how: Any) -> Shown:
        """/imagine above the price check: the private question (with Render and Cancel) only its user sees;
        nothing is reserved or called yet."""
        question = await self.asked(await self.start(prompt, **how))
        assert await self.bot.ledger() == [] and self.bot.server.calls == []
        return question

    # -- buttons and forms --------------------------------------------------------------------------------

    def labels(self, shown: Shown) -> list[str]:
        """The buttons under a message, in order, without their prices."""
        return [PRICED.sub("", label) for label in self._labels(shown)]

    def _labels(self, shown: Shown) -> list[str]:
        raise NotImplementedError

    async def click(self, shown: Shown, label: str, *, user: str = "member") -> Sent:
        """Press the button labelled `label` (exactly, or with its price) under `shown` as `user`."""
        raise NotImplementedError

    async def edit(self, shown: Shown, instruction: str, *, user: str = "member") -> Sent:
        """Press Edit under `shown`, see the form open for `user` (no job yet), and submit `instruction`."""
        raise NotImplementedError

    def forms_opened(self) -> int:
        """How many forms (Edit, ...) the bot has opened so far."""
        raise NotImplementedError

    async def replay(self, sent: Sent) -> None:
        """Deliver `sent` again, as the platform may (Slack's retries within 5 minutes, Discord's redelivered
        interaction): the last request sent, for Slack."""
        raise NotImplementedError

    # -- what came of it ----------------------------------------------------------------------------------

    async def delivered(self, sent: Sent) -> Shown:
        """The job that `sent` (a command, a click, a form, a Render) started, once its image is posted and its
        row delivered."""
        raise NotImplementedError

    async def told(self, sent: Sent) -> str:
        """What only the sender was told about `sent` (a new private message, or the private message they
        clicked, changed), once what it set off has ended."""
        raise NotImplementedError

    async def refused(self, sent: Sent) -> str:
        """What only the sender was told about `sent`, which set nothing off: no image API call, no ledger row,
        nothing public left behind."""
        said = await self.told(sent)
        await self.bot.idle()
        assert len(self.bot.server.calls) == sent.calls and len(await self.bot.ledger()) == sent.rows
        await until(lambda: self._left_nothing(sent), message="something public was left")
        return said

    def _left_nothing(self, sent: Sent) -> bool:
        raise NotImplementedError

    async def asked(self, sent: Sent) -> Shown:
        """The private price question `sent` (a command or a click above the price check) got."""
        raise NotImplementedError

    def question_open(self, question: Shown) -> bool:
        """The private question still shows its Render and Cancel."""
        raise NotImplementedError

    def private_to(self, user: str = "member") -> list[str]:
        """Everything only `user` has been told, oldest first."""
        raise NotImplementedError

    def images_posted(self, where: str = "here") -> list[dict[str, Any]]:
        """The public messages in the channel that carry an image."""
        raise NotImplementedError

    async def image_sizes(self, shown: Shown) -> list[tuple[int, int]]:
        """The width and height of each image `shown` carries, as posted."""
        raise NotImplementedError

    async def summary(self, shown: Shown) -> str:
        """The words posted with a result's image."""
        raise NotImplementedError

    async def fetched(self, shown: Shown, index: int = 0) -> bool:
        """The bot downloaded the `index`th image of `shown` from the platform (to edit it)."""
        raise NotImplementedError

    def answers(self, new: Shown, old: Shown) -> bool:
        """`new` (a click's result) is posted as an answer to `old`: in its thread, or as the response to a
        click (or a form opened by a click) on it."""
        raise NotImplementedError

    def gone(self, shown: Shown) -> bool:
        """The image of `shown` is deleted from the platform."""
        raise NotImplementedError

    def link(self, shown: Shown) -> str:
        """The link to `shown` a person can open (its history's link)."""
        raise NotImplementedError

    # -- faults -------------------------------------------------------------------------------------------

    def fail_next_upload(self, fault: str) -> None:
        """The next image upload meets `fault` (one of `upload_faults`) once."""
        raise NotImplementedError

    def fail_next_progress(self, fault: str) -> None:
        """The next progress edit meets `fault` (one of `progress_faults`) once."""
        raise NotImplementedError

    def failed_calls(self) -> int:
        """How many calls to the platform a fault ended without an answer."""
        raise NotImplementedError


class SlackDriver(Driver):
    """The bolt app in HTTP mode against the fake Slack; U9 is a workspace admin, U4 the artists group."""

    users = {"member": "U1", "other": "U2", "artist": "U4", "admin": on_slack.ADMIN}
    channels = {"here": "C1", "elsewhere": "C2"}
    names = {"C1": "general", "C2": "random"}
    tenant = "slack:T0001"
    artists = f"<!subteam^{ARTISTS_GROUP}>"
    admin_verbs = ("quota", "report", "channel", "allow", "deny", "block", "unblock", "settings", "help")
    buttons_outlive_their_image = answered_questions_close = True
    upload_faults = ("files.getUploadURLExternal", "upload", "files.completeUploadExternal")
    progress_faults = ("chat.update",)

    def __init__(self, slack: FakeSlack, tmp_path: Path, env: dict[str, str]) -> None:
        self.slack, self.tmp_path, self.env = slack, tmp_path, env
        self.stack = contextlib.AsyncExitStack()

    def _bot(self) -> contextlib.AbstractAsyncContextManager[RunningBot]:
        return running_bot(self.tmp_path, slack_env(self.slack, **self.env), latency=0.05)

    async def _admin(self, verb: str, by: str, pick: Pick) -> str:
        words = [verb]
        if pick.user is not None:  # as Slack escapes a picked user (should_escape)
            words.append(f"<@{pick.user}|someone>")
        if pick.group:
            words.append(self.slack.usergroup_mention(ARTISTS_GROUP))
        if pick.channel is not None:
            words.append(f"<#{pick.channel}|{self.names[pick.channel]}>")
        if pick.settings is not None:
            words.append(pick.settings)
        return await on_slack.admin(self.slack, self.bot, " ".join(words), user=by)

    async def command(self, name: str, value: str = "", *, user: str = "member") -> str:
        before, work = self._said(user), self.bot.work()
        await self.slack.send_slash_command(
            self.bot.events_url, command=f"/{name}", text=value, user_id=self.users[user]
        )
        return await self._told(user, before, work)

    async def my_settings(self, user: str = "member", **values: str) -> str:
        text = " ".join(f"{name}={value}" for name, value in values.items()) or "show"
        return await self.command("imagine-settings", text, user=user)

    def _another_workspace(self) -> tuple[Any, str, Any]:
        return self.slack, "team_id", "T0002"

    @staticmethod
    def _text(ask: Ask) -> str:
        flags = {"quality": ask.quality, "size": ask.size, "count": ask.count}
        words = [ask.prompt, *(f"--{name} {value}" for name, value in flags.items() if value)]
        return " ".join(words + (["--relax"] if ask.relax else []))

    async def _start(self, ask: Ask) -> Sent:
        sent = await self._sent(ask.user, None, ask.count or 1)
        await self.slack.send_slash_command(
            self.bot.events_url,
            text=self._text(ask),
            user_id=self.users[ask.user],
            channel_id=self.channels[ask.where],
        )
        return sent

    async def result(self, prompt: str, **how: Any) -> Shown:
        ask = Ask(prompt, **how)
        if ask.where == "here":
            return await self.delivered(await self._start(ask))
        # No buttons to read elsewhere (the helpers read C1's): the upload and the row.
        row = await on_slack.imagine_row(
            self.slack, self.bot, self._text(ask), user=self.users[ask.user], channel=self.channels[ask.where]
        )
        return Shown(json.loads(row["context"])["ts"], row)

    async def refuse(self, prompt: str, **how: Any) -> str:
        ask = Ask(prompt, **how)
        return await on_slack.refused(
            self.slack, self.bot, self._text(ask), user=self.users[ask.user], channel=self.channels[ask.where]
        )

    def _labels(self, shown: Shown) -> list[str]:
        message = self.slack.ephemeral(shown.ref) or on_slack.message(self.slack, shown.ref)
        return [el["text"]["text"] for el in self.slack.buttons(message.get("blocks"))]

    def _private(self, user: str) -> list[dict[str, Any]]:
        """Every private message `user` was sent, a deleted one too (a click on it may still change it)."""
        return [e for e in self.slack.ephemerals if e["user"] == self.users[user]]

    def _said(self, user: str) -> dict[str, str]:
        return {e["message_ts"]: e["text"] for e in self._private(user)}

    def private_to(self, user: str = "member") -> list[str]:
        return [html.unescape(e["text"]) for e in on_slack.private_to(self.slack, self.users[user])]

    async def _sent(self, user: str, ref: Any, images: int = 1) -> Sent:
        rows, calls, jobs = len(await self.bot.ledger()), len(self.bot.server.calls), len(self._jobs())
        return Sent(user, ref, rows, calls, images, jobs, self._said(user), self.bot.work())

    def _jobs(self) -> list[dict[str, Any]]:
        return on_slack.job_messages(self.slack)

    def images_posted(self, where: str = "here") -> list[dict[str, Any]]:
        return [m for m in self.slack.messages.get(self.channels[where], []) if m.get("files")]

    async def click(self, shown: Shown, label: str, *, user: str = "member") -> Sent:
        sent = await self._sent(user, shown.ref)
        status, _ = await self.slack.press(
            self.bot.events_url, label, message_ts=shown.ref, user_id=self.users[user]
        )
        assert status == 200
        return sent

    async def edit(self, shown: Shown, instruction: str, *, user: str = "member") -> Sent:
        forms = self.forms_opened()
        sent = await self.click(shown, "Edit", user=user)
        opened = (await self.slack.wait_for("views.open", forms + 1))[-1]
        assert opened.args["trigger_id"] and len(self.bot.server.calls) == sent.calls  # a form is not a job
        view_id = list(self.slack.views)[-1]
        assert self.slack.views[view_id]["user"] == self.users[user]
        assert self.slack.views[view_id]["view"]["callback_id"] == "imagebot_edit"
        status, body = await self.slack.send_view_submission(
            self.bot.events_url, view_id, {"instruction": instruction}
        )
        assert (status, body.strip()) == (200, "") and self.slack.views[view_id]["closed"]
        return sent

    def forms_opened(self) -> int:
        return len(self.slack.calls_to("views.open"))

    async def delivered(self, sent: Sent) -> Shown:
        [posted, *_] = await until(lambda: self._jobs()[sent.jobs :], 20)
        ts = str(posted["ts"])
        await on_slack.finished(self.slack, self.bot, ts)
        rows = await self.bot.settled(sent.rows + sent.images)
        row = [r for r in rows if json.loads(r["context"]).get("ts") == ts][-1]
        assert row["user"] == self.users[sent.user] and row["status"] == "delivered", row
        return Shown(ts, row)

    async def told(self, sent: Sent) -> str:
        return await self._told(sent.user, sent.said, sent.work, sent.ref)

    async def _told(self, user: str, said: dict[str, str], work: Any, about: str | None = None) -> str:
        def news() -> list[dict[str, Any]]:
            return [e for e in self._private(user) if said.get(e["message_ts"]) != e["text"]]

        [new, *_] = await until(news, message=f"{user} was never told anything")
        await self.bot.idle(since=work)  # a second word would show by now
        assert len(news()) == 1, news()
        if about is not None and self.slack.ephemeral(about) is None:  # a click on a result: in its thread
            assert new["thread_ts"] == about, new
        return html.unescape(new["text"])

    def answers(self, new: Shown, old: Shown) -> bool:
        thread = on_slack.message(self.slack, new.ref).get("thread_ts")
        uploads = [u for u in self.slack.uploaded if u.thread_ts == old.ref]
        return (
            thread == old.ref
            and bool(uploads)
            and str(uploads[-1].initial_comment).startswith(f"<@{new.row['user']}>")
        )

    def gone(self, shown: Shown) -> bool:
        files = [u for u in self.slack.deleted_files if u.thread_ts == shown.ref]
        return bool(files) and not [u for u in self.slack.uploaded if u.thread_ts == shown.ref]

    async def asked(self, sent: Sent) -> Shown:
        def questions() -> list[dict[str, Any]]:
            return [
                e
                for e in on_slack.private_to(self.slack, self.users[sent.user])
                if e["message_ts"] not in sent.said and e.get("blocks")
            ]

        [question] = await until(questions)
        # A command's question answers it (response_url); a click's is said in the clicked result's thread.
        assert (question["source"], question["thread_ts"]) in (
            ("response_url", None),
            ("chat.postEphemeral", sent.ref),
        )
        return Shown(question["message_ts"], text=html.unescape(question["text"]))

    def _left_nothing(self, sent: Sent) -> bool:
        return len(self._jobs()) == sent.jobs

    async def image_sizes(self, shown: Shown) -> list[tuple[int, int]]:
        files = {u.id: u for u in [*self.slack.uploaded, *self.slack.deleted_files]}
        return [
            Image.open(io.BytesIO(files[where["file_id"]].bytes)).size for where in await self._where(shown)
        ]

    async def _where(self, shown: Shown) -> list[dict[str, Any]]:
        """Where the core recorded the images of `shown`'s job (the uploaded files)."""
        [[images]] = await self.bot.core.ledger.query(
            "SELECT images FROM results WHERE job_id=?", [shown.row["job_id"]]
        )
        return [image["where"] for image in json.loads(images)]

    async def fetched(self, shown: Shown, index: int = 0) -> bool:
        file_id = (await self._where(shown))[index]["file_id"]
        infos = [c for c in self.slack.calls_to("files.info") if c.args.get("file") == file_id]
        downloads = self.slack.calls_to("file_download")
        return bool(infos and downloads) and all(
            d.headers["Authorization"] == f"Bearer {self.slack.bot_token}" for d in downloads
        )

    def question_open(self, question: Shown) -> bool:
        shown = self.slack.ephemeral(question.ref)
        return shown is not None and not shown.get("deleted") and bool(self.slack.buttons(shown["blocks"]))

    def fail_next_upload(self, fault: str) -> None:
        self.slack.fail_next[fault] = {"drop": True}

    def fail_next_progress(self, fault: str) -> None:
        self.slack.fail_next[fault] = {"drop": True}

    def failed_calls(self) -> int:
        return len([c for c in self.slack.calls if c.status == 0])

    async def summary(self, shown: Shown) -> str:
        files = {where["file_id"] for where in await self._where(shown)}
        return html.unescape(" ".join(str(u.initial_comment) for u in self.slack.uploaded if u.id in files))

    def link(self, shown: Shown) -> str:
        channel = json.loads(shown.row["context"])["channel"]
        return f"https://{self.slack.team_domain}.slack.com/archives/{channel}/p{shown.ref.replace('.', '')}"

    async def replay(self, sent: Sent) -> None:
        assert (await self.slack.replay())[0] == 200


class DiscordDriver(Driver):
    """The discord.py client against the fake Discord: a guild with an admin, another member, an artist (of the
    artists role) and a second channel."""

    admin_verbs = (
        *("quota", "report", "channel", "allow", "deny", "block", "unblock", "settings", "dashboard", "help"),
    )
    buttons_outlive_their_image = answered_questions_close = False
    upload_faults = progress_faults = ("drop", "hang")

    def __init__(self, fake: FakeDiscord, tmp_path: Path, env: dict[str, str]) -> None:
        self.fake, self.tmp_path, self.env = fake, tmp_path, env
        self.stack = contextlib.AsyncExitStack()
        self.targets: dict[str, str] = {}  # an interaction's id -> the message it was made on
        self.users = {
            "member": str(fake.user_id),
            "other": str(on_discord.OTHER),
            "artist": str(on_discord.ARTIST),
            "admin": str(on_discord.ADMIN),
        }
        self.channels = {"here": str(fake.channel_id), "elsewhere": str(ELSEWHERE)}
        self.tenant = f"discord:{fake.guild_id}"
        self.artists = f"<@&{on_discord.ARTISTS}>"

    def _bot(self) -> contextlib.AbstractAsyncContextManager[RunningBot]:
        return on_discord.bot_on(self.fake, self.tmp_path, **self.env)

    async def _admin(self, verb: str, by: str, pick: Pick) -> str:
        options: dict[str, Any] = {}
        if pick.user is not None:
            options["user"] = int(pick.user)
        if pick.group:
            options["role"] = on_discord.ARTISTS
        if pick.channel is not None:
            options["channel"] = int(pick.channel)
        if pick.settings is not None:  # the channel verb's settings, the settings verb's text
            options["settings" if verb == "channel" else "text"] = pick.settings
        return await on_discord.admin(self.fake, verb, by=int(by), **options)

    async def command(self, name: str, value: str = "", *, user: str = "member", **options: Any) -> str:
        option = {"imagine-info": "job", "imagine-history": "count"}.get(name)
        if value and option:
            options[option] = int(value) if value.isdigit() and option == "count" else value
        typed = [
            {"name": k, "type": 5 if isinstance(v, bool) else 4 if isinstance(v, int) else 3, "value": v}
            for k, v in options.items()
        ]
        ix = await self.fake.send_interaction(name=name, options=typed, user_id=int(self.users[user]))
        return await on_discord.private_answer(self.fake, ix)

    async def my_settings(self, user: str = "member", **values: str) -> str:
        return await self.command("imagine-settings", user=user, **values)

    def _another_workspace(self) -> tuple[Any, str, Any]:
        return self.fake, "guild_id", self.fake.guild_id + 1

    def images_posted(self, where: str = "here") -> list[dict[str, Any]]:
        return [
            m
            for m in self.fake.messages.get(int(self.channels[where]), [])
            if not m["flags"] & on_discord.EPHEMERAL and m["attachments"]
        ]

    async def _imagine(self, ask: Ask) -> dict[str, Any]:
        options: list[dict[str, Any]] = [{"name": "prompt", "type": 3, "value": ask.prompt}]
        for name, value in (("quality", ask.quality), ("size", ask.size)):
            if value:
                options.append({"name": name, "type": 3, "value": value})
        if ask.count:
            options.append({"name": "count", "type": 4, "value": ask.count})
        if ask.relax:  # Discord's boolean option
            options.append({"name": "relax", "type": 5, "value": True})
        return await self.fake.send_interaction(
            name="imagine",
            options=options,
            user_id=int(self.users[ask.user]),
            channel_id=int(self.channels[ask.where]),
        )

    async def _start(self, ask: Ask) -> Sent:
        rows, calls = len(await self.bot.ledger()), len(self.bot.server.calls)
        return Sent(ask.user, await self._imagine(ask), rows, calls, ask.count or 1)

    async def refuse(self, prompt: str, **how: Any) -> str:
        rows = len(await self.bot.ledger())
        ix = await self._imagine(Ask(prompt, **how))
        said = await on_discord.refused(self.fake, self.bot, ix, "", rows)
        assert "Nothing was charged" in said, said
        return said

    def _labels(self, shown: Shown) -> list[str]:
        message = self.fake.message(int(shown.ref["id"])) or shown.ref
        return [str(b["label"]) for b in FakeDiscord.buttons(message)]

    def private_to(self, user: str = "member") -> list[str]:
        return [
            on_discord.content_of(m)
            for messages in self.fake.messages.values()
            for m in messages
            if m["flags"] & on_discord.EPHEMERAL
            and m["content"]
            and (m.get("interaction_metadata") or {}).get("user", {}).get("id") == self.users[user]
        ]

    async def click(self, shown: Shown, label: str, *, user: str = "member") -> Sent:
        rows, calls = len(await self.bot.ledger()), len(self.bot.server.calls)
        press = await self.fake.press_button(shown.ref, label, user_id=int(self.users[user]))
        self.targets[press["id"]] = shown.ref["id"]
        return Sent(user, press, rows, calls)

    async def edit(self, shown: Shown, instruction: str, *, user: str = "member") -> Sent:
        forms = self.forms_opened()
        press = await self.click(shown, "Edit", user=user)
        await self.fake.wait_for("POST", rf"/interactions/{press.ref['id']}/[^/]+/callback")
        assert on_discord.callback(self.fake, press.ref).json["type"] == 9  # the form is the answer
        assert self.forms_opened() == forms + 1 and len(self.bot.server.calls) == press.calls  # not a job
        form = self.fake.modals[-1]
        assert form["custom_id"].startswith("imagebot:edit:edit:") and len(form["custom_id"]) <= 100
        submit = await self.fake.send_interaction(
            type=5,
            modal_values={"Instruction": instruction},
            target_message=shown.ref,
            user_id=int(self.users[user]),
        )
        self.targets[submit["id"]] = shown.ref["id"]
        return Sent(user, submit, press.rows, press.calls)

    def forms_opened(self) -> int:
        return len(self.fake.modals)

    async def delivered(self, sent: Sent) -> Shown:
        message = await on_discord.finished(self.fake, self.bot, sent.ref, sent.rows + sent.images)
        acks = self.fake.calls_matching("POST", rf"/interactions/{sent.ref['id']}/[^/]+/callback")
        assert len(acks) == 1, acks  # answered once, however often Discord delivered it
        job = str(FakeDiscord.buttons(message)[0]["custom_id"]).split(":")[3]
        [row, *_] = await self.bot.ledger("job_id=?", [job])
        assert row["user"] == self.users[sent.user] and row["status"] == "delivered", row
        return Shown(message, row)

    async def told(self, sent: Sent) -> str:
        return await on_discord.private_answer(self.fake, sent.ref)

    def answers(self, new: Shown, old: Shown) -> bool:
        """`new` is the response to a click, or to a form opened by a click, on `old`."""
        return self.targets.get(new.ref["interaction_metadata"]["id"]) == old.ref["id"]

    def gone(self, shown: Shown) -> bool:
        return self.fake.message(int(shown.ref["id"])) is None

    async def asked(self, sent: Sent) -> Shown:
        await on_discord.private_words(self.fake, sent.ref)
        [question] = [
            m
            for m in self.fake.messages[self.fake.channel_id]
            if m["flags"] & on_discord.EPHEMERAL
            and m["components"]
            and m["interaction_metadata"]["id"] == sent.ref["id"]
        ]
        assert self._left_nothing(sent)  # nothing public was left of what asked
        return Shown(question, text=on_discord.content_of(question))

    def _left_nothing(self, sent: Sent) -> bool:
        return on_discord.response_of_gone(self.fake, sent.ref)

    async def image_sizes(self, shown: Shown) -> list[tuple[int, int]]:
        message = self.fake.message(int(shown.ref["id"])) or shown.ref
        return [(a["width"], a["height"]) for a in message["attachments"]]

    async def fetched(self, shown: Shown, index: int = 0) -> bool:
        message = shown.ref
        fetched = self.fake.calls_matching(
            "GET", rf"/channels/{message['channel_id']}/messages/{message['id']}"
        )
        attachment = message["attachments"][index]["id"]
        downloads = [r for r in self.fake.cdn_requests if attachment in r.path and r.status == 200]
        return bool(fetched and downloads)

    def question_open(self, question: Shown) -> bool:
        shown = self.fake.message(int(question.ref["id"]))
        return shown is not None and bool(FakeDiscord.buttons(shown))

    async def replay(self, sent: Sent) -> None:
        await self.fake.replay_interaction(sent.ref)

    def fail_next_upload(self, fault: str) -> None:
        self.bot.adapters["discord"].upload_timeout = SHORT
        self.fake.inject_fault("PATCH", ORIGINAL, fault, when=on_discord.final_result)

    def fail_next_progress(self, fault: str) -> None:
        self.bot.adapters["discord"].post_timeout = SHORT
        self.fake.inject_fault("PATCH", ORIGINAL, fault, when=lambda c: "Rendering" in on_discord.content(c))

    def failed_calls(self) -> int:
        return len([c for c in self.fake.calls if c.status == 0])

    async def summary(self, shown: Shown) -> str:
        return on_discord.content_of(self.fake.message(int(shown.ref["id"])) or shown.ref)

    def link(self, shown: Shown) -> str:
        message = shown.ref
        return f"https://discord.com/channels/{self.fake.guild_id}/{message['channel_id']}/{message['id']}"


async def backdate(bot: RunningBot, table: str, by: timedelta) -> None:
    """Move every row of `table` (results, confirmations) `by` into the past, as if that much time had gone
    by."""

    def shift(db: Any) -> None:
        for rowid, created in db.conn.execute(f"SELECT rowid, created_at FROM {table}").fetchall():
            older = (datetime.fromisoformat(created) - by).isoformat(timespec="milliseconds")
            db.conn.execute(f"UPDATE {table} SET created_at=? WHERE rowid=?", [older, rowid])

    await bot.core.ledger.run_db(shift)


@contextlib.asynccontextmanager
async def driver(platform: str, tmp_path: Path, **env: str) -> AsyncIterator[Driver]:
    """The bot on `platform` ("slack" or "discord") against its fake, with price checks off unless `env` says
    (in a value, "{here}" and "{elsewhere}" stand for the platform's channel ids, "{elsewhere_entry}" for the
    other channel as an operator lists it in IMAGEBOT_CHANNELS)."""
    here, elsewhere, entry = {
        "slack": ("C1", "C2", "C2"),
        "discord": (str(HERE), str(ELSEWHERE), f"discord:{ELSEWHERE}"),
    }[platform]
    env = {"IMAGEBOT_CONFIRM_USD": "off"} | {
        name: value.format(here=here, elsewhere=elsewhere, elsewhere_entry=entry)
        for name, value in env.items()
    }
    on: SlackDriver | DiscordDriver
    if platform == "slack":
        slack = FakeSlack()
        slack.admins.add(on_slack.ADMIN)
        slack.add_usergroup(ARTISTS_GROUP, [SlackDriver.users["artist"]], handle="artists")
        fake: FakeSlack | FakeDiscord = slack
        on = SlackDriver(slack, tmp_path, env)
    else:
        fake = on_discord.guild_fake(lambda fake: fake.add_channel(ELSEWHERE, "elsewhere"))
        on = DiscordDriver(fake, tmp_path, env)
    await fake.start()
    try:
        async with on.stack:
            await on.restart()
            yield on
    finally:
        await fake.stop()
        if platform == "discord":
            reset_discord_endpoints()
    assert not getattr(fake, "errors", None), fake
