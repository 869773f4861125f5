"""What a new user hit in the console, by hand (issue [5/6], "While you touch every sentence"): each is what
the terminal shows after one line typed at the `imagine>` prompt."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.console import handle_line
from bot.app import Core
from bot.model.request import Requester
from tests.support.core import MakeCore

WHO = Requester("console", "local", "console", "console")


@dataclass
class Console:
    """A core and the terminal a user types at: `say` types one line and returns what the terminal shows."""

    core: Core
    out: Path
    capsys: pytest.CaptureFixture[str]

    async def say(self, line: str) -> str:
        """One line typed; what the terminal shows (stdout and stderr, and a refusal returned as text)."""
        refusal = await handle_line(self.core, line, WHO, self.out)
        shown = self.capsys.readouterr()
        return shown.out + shown.err + (refusal or "")

    def image_calls(self) -> int:
        assert self.core.offline_server is not None
        return len(self.core.offline_server.calls)


StartConsole = Callable[..., Awaitable[Console]]


@pytest.fixture
def console(make_core: MakeCore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> StartConsole:
    """A console on a fresh core (`env`: its settings on top of make_core's)."""

    async def start(**env: str) -> Console:
        return Console(await make_core(**env), tmp_path, capsys)

    return start


async def test_an_upscale_past_the_experimental_threshold_says_so_as_an_edit_does(
    console: StartConsole,
) -> None:
    term = await console(IMAGEBOT_API_TIMEOUT="60")  # a 2880x2880 image on a busy machine
    await term.say("a red fox --size 1024x1024 --quality low")
    upscaled = await term.say("/upscale 1")
    assert "2880x2880" in upscaled and "experimental" in upscaled
    edited = await term.say("/edit 1 make it blue")
    assert "2880x2880" in edited and "experimental" in edited


async def test_a_number_past_the_jobs_images_names_how_many_there_are(console: StartConsole) -> None:
    term = await console()
    await term.say("a red fox --size 1024x1024 --quality low")
    shown = await term.say("/vary 7")
    assert "not ready" not in shown
    assert "no image 7" in shown and "1 image" in shown
    assert term.image_calls() == 1


async def test_a_second_delete_of_the_same_image_says_it_was_deleted(console: StartConsole) -> None:
    term = await console()
    await term.say("a red fox --size 1024x1024 --quality low")
    assert "Deleted." in await term.say("/delete 1")
    again = await term.say("/delete 1")
    assert "Deleted." not in again and "image 1 of this job was deleted" in again


async def test_days_that_are_not_a_number_are_called_that(console: StartConsole) -> None:
    term = await console()
    shown = await term.say("/imagine-usage --days abc")
    assert "out of range" not in shown
    assert "--days 'abc' is not a whole number" in shown and "1-366" in shown


async def test_ar_without_a_size_does_not_name_a_size_nobody_typed(console: StartConsole) -> None:
    term = await console()
    shown = await term.say("a red fox --ar 16:9")
    assert "--size auto" not in shown
    assert "--ar needs --size 1k, 2k or 4k" in shown
    assert term.image_calls() == 0


async def test_a_format_that_contradicts_the_files_name_is_refused_and_a_name_alone_picks_it(
    make_core: MakeCore, tmp_path: Path
) -> None:
    from io import StringIO

    from PIL import Image

    from adapters.console import imagine

    core = await make_core()
    err = StringIO()
    code = await imagine(core, "a fox --format png", WHO, tmp_path / "x.jpg", out_is_file=True, err=err)
    assert code == 2 and "--format png does not match --out x.jpg (jpeg)" in err.getvalue()
    assert not (tmp_path / "x.jpg").exists() and not core.offline_server.calls  # type: ignore[union-attr]
    assert await imagine(core, "a fox", WHO, tmp_path / "y.png", out_is_file=True, err=StringIO()) == 0
    assert Image.open(tmp_path / "y.png").format == "PNG"


def test_a_log_line_during_the_progress_bar_gets_a_line_of_its_own() -> None:
    import logging
    from io import StringIO

    from adapters.console import Terminal
    from bot import logs

    screen = StringIO()
    terminal = Terminal(screen)
    logs.setup("WARNING", [], stream=terminal)
    try:
        terminal.write("\r░░░░ 1 s of ~3 s   ")
        logging.getLogger("imagebot.test").warning("the api is slow")
        terminal.write("\r████ 2 s of ~3 s   ")
        terminal.write("\n")
    finally:
        logs.setup("WARNING", [])
    lines = screen.getvalue().split("\n")
    assert lines[0] == "\r░░░░ 1 s of ~3 s   "  # the bar, left as it was
    assert lines[1].startswith("{") and '"the api is slow"' in lines[1]  # the log line: alone, whole
    assert lines[2] == "\r████ 2 s of ~3 s   "


def test_the_help_names_the_tokens_and_relax(capsys: pytest.CaptureFixture[str]) -> None:
    from adapters.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    run_help = " ".join(capsys.readouterr().out.split())
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_APP_TOKEN",
        "SLACK_SIGNING_SECRET",
        "DISCORD_TOKEN",
        "OPENAI_API_KEY",
    ):
        assert name in run_help
    with pytest.raises(SystemExit):
        main(["imagine", "--help"])
    assert "--relax" in capsys.readouterr().out
