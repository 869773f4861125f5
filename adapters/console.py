"""The console adapter: the same core, in a terminal. Used by `imagebot imagine` and `imagebot console`."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any, TextIO

from bot import commands
from bot.app import Core
from bot.errors import DeliveryFailed, UserError
from bot.i18n import msg
from bot.jobs import texts
from bot.jobs.actions import Button, Kind, last_job
from bot.jobs.outcomes import Image, JobFailure, JobResult, Progress
from bot.model.pricing import format_usd
from bot.model.request import ImageRequest, Requester, split_flags

from .mentions import read_admin

log = logging.getLogger("imagebot.console")
TERMINAL_TICK = 0.5  # a terminal line costs nothing to redraw, unlike a chat message


class Terminal:
    """stderr as the console shares it: a progress bar redrawn in place (a write that starts with a carriage
    return and ends without a newline) and log lines. A log line that comes while the bar is drawn starts on
    a line of its own instead of being printed onto the bar; the bar's next tick draws it again below."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.partial = False  # the cursor is at the end of a drawn progress bar

    def write(self, text: str) -> int:
        if self.partial and not text.startswith(("\r", "\n")):
            self.stream.write("\n")
        self.stream.write(text)
        if text:
            self.partial = text.startswith("\r") and not text.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def share_terminal() -> Terminal:
    """One Terminal over stderr, for the progress bar and for every log handler that wrote to stderr."""
    terminal = Terminal(sys.stderr)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and (
            handler.stream is sys.stderr or isinstance(handler.stream, Terminal)
        ):
            handler.setStream(terminal)  # type: ignore[arg-type]
    return terminal


class ConsoleView:
    """Draws a progress bar on stderr, writes images to files, prints the summary on stdout."""

    previews = False  # a terminal cannot show a partial image: stream none (each costs output tokens)
    confirms = False  # price checks: not yet on this platform

    def __init__(
        self,
        out: Path,
        *,
        out_is_file: bool,
        err: TextIO | None = None,
        stdout: TextIO | None = None,
        actions: bool = False,
    ) -> None:
        self.out = out
        self.actions = actions  # the console loop offers /reroll, /vary N, ...; a one-shot `imagine` does not
        self.out_is_file = out_is_file
        self.err: TextIO | Terminal = err or share_terminal()
        self.stdout = stdout or sys.stdout
        self.written: list[Path] = []
        self.exit_code = 0

    async def open(self, first: Progress) -> dict[str, Any]:
        return {"out": str(self.out)}  # the terminal is the message: nothing to post

    async def refused(self, text: str) -> None:
        self.err.write(f"{text}\n")
        self.err.flush()
        self.exit_code = 2

    async def confirm(self, text: str, token: str) -> None:
        raise NotImplementedError  # never called: confirms is False

    async def platform_admin(self) -> bool:
        return True  # whoever runs the terminal holds the database (no access rule applies there anyway)

    async def member_of(self, groups: Collection[str]) -> bool:
        return False

    async def progress(self, progress: Progress) -> None:
        self.err.write(f"\r{texts.status_line(progress)}   ")
        self.err.flush()

    async def deliver(self, result: JobResult) -> list[dict[str, Any]]:
        self.err.write("\n")
        paths = []
        for index, image in enumerate(result.images):
            path = self._path(result.job_id, index, image)
            try:
                await asyncio.to_thread(_write, path, image.data)
            except OSError as exc:  # a folder, a full disk, no permission: the outbox keeps the image
                raise DeliveryFailed(
                    msg("console.not_written", path=str(path), why=exc.strerror or type(exc).__name__),
                    retry=False,
                ) from exc
            paths.append(path)
        self.written += paths
        files = ", ".join(str(p) for p in paths)
        offered = (
            "  ".join(_command(b) for b in result.buttons if b.kind != Kind.REMOVE) if self.actions else ""
        )
        self.stdout.write(f"Wrote {files}\n{texts.summary(result)}\n" + (f"{offered}\n" if offered else ""))
        self.stdout.flush()
        return [{"path": str(path)} for path in paths]

    async def failed(self, failure: JobFailure) -> None:
        self.err.write(f"\n{texts.summary(failure)}\n")
        self.err.flush()
        self.exit_code = 1

    async def undelivered(self, text: str) -> None:
        self.err.write(f"\n{text}\n")
        self.err.flush()
        self.exit_code = 1

    def _path(self, job_id: str, index: int, image: Image) -> Path:
        """Where an image goes: `--out FILE` (its siblings -2, -3...), else a file in the folder whose name
        carries the job id, so that no later job ever overwrites it."""
        if self.out_is_file:
            if index == 0:
                return self.out
            return self.out.with_name(f"{self.out.stem}-{index + 1}{self.out.suffix}")
        return self.out / image.filename.replace("image-", f"image-{job_id}-{index + 1}-")


def _command(button: Button) -> str:
    """The console's spelling of a result button: `/vary 2 ($0.0530)`."""
    words = (
        f"/{button.kind}"
        + (f" {button.index}" if button.index else "")
        + (" <instruction>" if button.kind == Kind.EDIT else "")
    )
    return words + (f" ({format_usd(button.cost_micros)})" if button.cost_micros is not None else "")


class Files:
    """Where the console keeps its images: files (what `/vary 2` starts from, what `/delete 2` removes).
    `name` says which image, for the line a missing file gets."""

    def __init__(self, name: str = "that image") -> None:
        self.name = name

    async def fetch(self, where: dict[str, Any]) -> bytes:
        try:
            return await asyncio.to_thread(Path(where["path"]).read_bytes)
        except FileNotFoundError:
            raise UserError(msg("console.file_gone", name=self.name, path=where["path"])) from None

    async def delete(self, where: dict[str, Any]) -> None:
        await asyncio.to_thread(Path(where["path"]).unlink, True)


ACTION_COMMANDS = {f"/{kind}": kind for kind in Kind if kind != Kind.INFO}  # /info N is the card (below)


def _path_of(where: dict[str, Any]) -> str | None:
    """Where a console job's first image was written (its card's and history's link), if it was."""
    images = where.get("images") or []
    return str(images[0].get("path")) if images and images[0].get("path") else None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def imagine(
    core: Core,
    text: str,
    who: Requester,
    out: Path,
    *,
    out_is_file: bool,
    err: TextIO | None = None,
    actions: bool = False,
) -> int:
    """One job: exit 0 on success, 1 on a provider failure, 2 on invalid input or a quota refusal."""
    view = ConsoleView(out, out_is_file=out_is_file, err=err, actions=actions)
    core.runner.progress_interval = min(core.runner.progress_interval, TERMINAL_TICK)
    try:
        request = await core.parse_for(who, text)
        if out_is_file:
            request = await _format_of_the_file(core, who, text, request, out)
    except UserError as exc:
        await view.refused(str(exc))
        return 2
    outcome = await core.submit(request, who, view)
    # A result whose images could not be written is kept (the outbox) but is not a success: exit non-zero.
    return view.exit_code or (0 if isinstance(outcome, JobResult) else 1)


FILE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


async def _format_of_the_file(
    core: Core, who: Requester, text: str, request: ImageRequest, out: Path
) -> ImageRequest:
    """`--out fox.png` names a format: without --format it is the one made; with a --format that differs
    the job is refused before anything is spent (PNG bytes in a file called .jpg open nowhere)."""
    named = FILE_FORMATS.get(out.suffix.lower())
    if named is None or named == request.format:
        return request
    if "format" in split_flags(text)[1]:
        suffix = "." + ("jpg" if request.format == "jpeg" else request.format)
        raise UserError(
            msg(
                "console.format_mismatch",
                format=request.format,
                out=out.name,
                named=named,
                fits=out.with_suffix(suffix).name,
            )
        )
    return await core.parse_for(who, text, format=named)  # the file's format over a default one


async def handle_line(core: Core, line: str, who: Requester, out_dir: Path) -> str | None:
    """One console line, as the Slack command would take it. Returns text to print, if any."""
    line = line.strip()
    if not line:
        return None
    command, _, rest = line.partition(" ") if line.startswith("/") else ("/imagine", "", line)
    try:
        if command == "/imagine":
            await imagine(core, rest, who, out_dir, out_is_file=False, actions=True)
            return None
        if command == "/imagine-usage":
            reply = await commands.usage(core, who, rest)
            chart = out_dir / "usage.png"
            if reply.chart:
                await asyncio.to_thread(_write, chart, reply.chart)
            return reply.text + (f"\nChart: {chart}" if reply.chart else "")
        if command == "/imagine-quota":
            return (await commands.my_quota(core, who)).text
        if command == "/imagine-admin":
            return (await commands.admin(core, who, read_admin(rest, who.platform), platform_admin=True)).text
        if command in ("/settings", "/imagine-settings"):
            return (await commands.my_settings(core, who, rest)).text
        if command in ("/history", "/imagine-history"):
            return (await commands.my_history(core, who, rest, link=_path_of)).text
        if command in ("/info", "/imagine-info"):
            return (await commands.info(core, who, rest, platform_admin=True, link=_path_of)).text
        if command in ACTION_COMMANDS:
            await act(core, ACTION_COMMANDS[command], rest, who, out_dir)
            return None
    except UserError as exc:
        return str(exc)
    return (
        f"unknown command {command}; use /imagine, /reroll, /vary N, /upscale N, /edit N <instruction>, "
        "/delete N, /settings, /history [N], /info [N], /imagine-usage, /imagine-quota, /imagine-admin or quit"
    )


async def act(core: Core, kind: Kind, args: str, who: Requester, out_dir: Path) -> None:
    """`/vary 2`, `/upscale 1`, `/edit 1 make it blue`, `/reroll`, `/delete 2` on the last job's images."""
    number, _, instruction = args.strip().partition(" ")
    if kind == Kind.REROLL:
        index = 0
    elif number.isdigit() and int(number) >= 1:
        index = int(number)
    elif not number and kind != Kind.EDIT:
        index = 1
    else:
        raise UserError(
            msg("console.needs_number_edit" if kind == Kind.EDIT else "console.needs_number", kind=str(kind))
        )
    job_id = await core.ledger.run_db(lambda db: last_job(db, who))
    view = ConsoleView(out_dir, out_is_file=False, actions=True)
    store = Files(f"image {index} of your last job")
    await core.act(Button(kind, job_id, index, "", None).key, who, view, store, instruction=instruction)
    if kind == Kind.REMOVE and not view.exit_code:
        print(texts.DELETED)


async def loop(core: Core, who: Requester, out_dir: Path) -> None:
    """Read lines until EOF or `quit`."""
    offline = " (offline image server)" if core.runner.offline else ""
    print(
        f"imagebot console{offline}: type a prompt or /imagine <prompt> --size 2k; then /reroll, /vary N, "
        f"/upscale N, /edit N <instruction>, /delete N; /settings, /history, /info N; /imagine-usage, "
        f"/imagine-quota, quit. "
        f"Images go to {out_dir}/"
    )
    while True:
        try:
            line = await asyncio.to_thread(input, "imagine> ")
        except EOFError:
            return
        if line.strip() in ("quit", "exit", "/quit"):
            return
        try:
            text = await handle_line(core, line, who, out_dir)
        except Exception as exc:  # one line, and the next command still runs
            log.debug("console line failed", exc_info=True)
            text = f"that did not work ({type(exc).__name__}: {exc})"
        if text:
            print(text, flush=True)
