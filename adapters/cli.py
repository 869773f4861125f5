"""`imagebot` command line: run, console, imagine, offline-server, report, quota, manifests.

The CLI is one more adapter: an argparse front end over the core (bot/), like the chat adapters beside it.

`quota` and `report` mirror the library: limits, counters and reports belong to a tenant (bot/policy/quota.py),
named `--tenant PLATFORM:WORKSPACE` (`slack:T123`, `discord:456`, `cli:local`). With `--user`/`--channel` it
is that tenant's user or channel; `quota set|show --tenant X` alone is the tenant's own limit. The CLI is
the operators' tool (it has the database): it may set any tenant's limits, and `report` without a tenant
covers every tenant. Without `--tenant` the tenant is taken from the ledger where that is unambiguous (the
only tenant that id, or `--workspace`, was ever seen in; or the only tenant there is); otherwise the
command stops with a one-line error asking for `--tenant`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import logs
from bot.config import ConfigError, Settings
from bot.database import DatabaseUnavailable, open_ledger
from bot.errors import UserError
from bot.i18n import msg
from bot.model.request import Requester
from bot.policy.quota import Tenant

if TYPE_CHECKING:
    from bot.app import Core
    from bot.store.ledger import Ledger

# Each command imports what it needs when it runs: the core (bot.app: the renderer, the SDK, aiohttp, the offline
# server) is most of a second of CPU to import, which `quota`, `report`, `history`, `info`, `--help` and a
# configuration error do not need (docs/design.md, "Start-up").

IMAGINE_OPTIONS = ("--out", "--user", "--channel", "--workspace")


def _settings() -> Settings:
    try:
        return Settings.load()
    except ConfigError as exc:
        print(f"imagebot: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _split_imagine(argv: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Pull the CLI's own options out; everything else is `/imagine` text (prompt and flags)."""
    options: dict[str, str] = {}
    rest: list[str] = []
    items = iter(argv)
    for arg in items:
        name, eq, value = arg.partition("=")
        if name in IMAGINE_OPTIONS:
            if not eq:
                value = next(items, "")
            if not value:
                raise UserError(msg("cli.needs_value", name=name))
            options[name[2:]] = value
        else:
            rest.append(arg)
    return " ".join(rest), options


async def _with_core(settings: Settings, body, *, renders: bool = True):  # type: ignore[no-untyped-def]
    """`body(core)` on a started core; `renders=False` for a command that makes no image (no offline server,
    no SDK client: bot/app.py `Core.start`)."""
    from bot.app import Core

    core = await Core.start(settings, renders=renders)
    try:
        return await body(core)
    finally:
        await core.close()


def cmd_imagine(argv: Sequence[str]) -> int:
    from . import console

    if not argv or argv[0] in ("-h", "--help"):
        print(
            'usage: imagebot imagine "<prompt>" [--size WxH|auto|1k|2k|4k] [--ar W:H] [--quality q] '
            "[--format f] [--compression N] [--count N] [--model M] [--relax | --fast] [--user ID] "
            "[--channel ID] --out FILE\n\n"
            "--relax: half price through the Batch API, delivered when the batch ends (up to 24 h); --fast "
            "(the default): now\n\n"
            "examples:\n" + "\n".join(f"  {line}" for line in IMAGINE_EXAMPLES)
        )
        return 0
    try:
        text, options = _split_imagine(argv)
    except UserError as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = _settings()
    logs.setup("WARNING", settings.secrets())
    who = Requester(
        "cli", options.get("workspace", "local"), options.get("channel", "cli"), options.get("user", "cli")
    )
    raw_out = options.get("out", "imagebot-image.jpg")
    out = Path(raw_out)
    # `--out some/dir/` (or an existing folder): the image goes into it, under a name no other job uses.
    as_file = not (raw_out.endswith(("/", os.sep)) or out.is_dir())
    return asyncio.run(
        _with_core(settings, lambda core: console.imagine(core, text, who, out, out_is_file=as_file))
    )


def cmd_redeliver(args: argparse.Namespace) -> int:
    """`imagebot redeliver JOB`: a paid image that could not be posted (it waits in the outbox) is delivered
    again: a terminal's job into --out, a chat job by the running bot that serves its platform."""
    from bot import platforms

    from . import console

    settings = _settings()
    logs.setup("WARNING", settings.secrets())

    out = Path(args.out or settings.out_dir)
    as_file = not out.is_dir() and bool(out.suffix)  # a file name (image.png), else a folder

    async def body(core: Core) -> int:
        if not await core.ledger.outbox(args.job):
            print(
                f"job {args.job}: no image of it waits to be delivered (delivered already, unknown here, or "
                f"older than IMAGEBOT_ACTIONS_DAYS)",
                file=sys.stderr,
            )
            return 2
        who, _context = await core.ledger.place(args.job)
        if platforms.is_local(who.platform):
            view = console.ConsoleView(out, out_is_file=as_file)
            delivered = await core.redeliver(args.job, view)
            return view.exit_code or (0 if delivered else 1)
        rows = await core.ledger.requeue(args.job)
        print(
            f"job {args.job}: {len(rows)} image(s) queued again; a running `imagebot run` serving "
            f"{who.platform} posts them within 30 s"
        )
        return 0

    return int(asyncio.run(_with_core(settings, body, renders=False)))


def cmd_console(args: argparse.Namespace) -> int:
    from . import console

    settings = _settings()
    logs.setup("WARNING", settings.secrets())
    who = Requester("console", "local", args.channel, args.user)
    asyncio.run(
        _with_core(settings, lambda core: console.loop(core, who, Path(args.out or settings.out_dir)))
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from . import service

    settings = _settings()
    logs.setup(settings.log_level, settings.secrets())
    return asyncio.run(service.run(settings))


def cmd_offline_server(args: argparse.Namespace) -> int:
    from bot.model.pricing import load_prices
    from bot.offline import main_forever

    settings = _settings()
    logs.setup(settings.log_level, settings.secrets())
    main_forever(
        args.host,
        args.port,
        settings.offline_latency if args.latency is None else args.latency,
        settings.offline_faults,
        load_prices(settings.prices_path),
    )
    return 0


def cmd_discord_sync(args: argparse.Namespace) -> int:
    from . import discord

    settings = _settings()
    logs.setup(settings.log_level, settings.secrets())
    if settings.discord_token is None:
        print("imagebot: discord-sync needs DISCORD_TOKEN", file=sys.stderr)
        return 2
    return int(asyncio.run(_with_core(settings, discord.sync_now, renders=False)))


_NAME_IT = msg("cli.name_it")


async def _seen(ledger: Ledger, **named: str) -> list[Tenant]:
    """The tenants with ledger rows (of the `workspace`, `channel` and `user` named), in a stable order."""
    return [Tenant(p, w) for p, w in await ledger.usage.tenants(**named)]


async def _tenant(ledger: Ledger, args: argparse.Namespace, command: str) -> Tenant | None:
    """The tenant `--tenant` names, or the one the ledger makes unambiguous (see the module docstring), or
    None when nothing at all is named (`report`: every tenant). UserError (one line) when it is ambiguous."""
    workspace = getattr(args, "workspace", None)
    if args.tenant:
        tenant = Tenant.parse(args.tenant)
        if workspace and workspace != tenant.workspace:
            raise UserError(
                msg("cli.workspace_mismatch", command=command, workspace=workspace, tenant=str(tenant))
            )
        return tenant
    named = [
        (column, getattr(args, column))
        for column in ("workspace", "user", "channel")
        if getattr(args, column, None)
    ]
    if not named:
        return None
    what = " ".join(f"--{column} {value}" for column, value in named)
    found = await _seen(ledger, **dict(named))
    if len(found) == 1:
        return found[0]
    if found:
        raise UserError(
            msg(
                "cli.ambiguous",
                command=command,
                what=what,
                n=len(found),
                found=", ".join(map(str, found)),
                name_it=_NAME_IT,
            )
        )
    everyone = await _seen(ledger)
    if workspace and len({t.platform for t in everyone}) == 1:
        return Tenant(everyone[0].platform, workspace)  # as the schema-5 migration decides, too
    if not workspace and len(everyone) == 1:
        return everyone[0]
    if command == "report":
        return None  # nothing to mix up: the report is simply empty
    raise UserError(msg("cli.unknown_tenant", command=command, what=what, n=len(everyone), name_it=_NAME_IT))


def cmd_report(args: argparse.Namespace) -> int:
    from bot import report

    async def body(ledger: Ledger) -> int:
        try:
            tenant = await _tenant(ledger, args, "report")
        except UserError as exc:
            print(exc, file=sys.stderr)
            return 2
        built = await report.build(
            ledger, tenant=tenant, channel=args.channel, user=args.user, days=args.days
        )
        print(built.text())
        if args.csv:
            rows = await report.export_csv(
                ledger, args.csv, tenant=tenant, channel=args.channel, user=args.user, days=args.days
            )
            print(f"Wrote {rows} ledger rows to {args.csv}")
        if args.chart:
            chart = await asyncio.to_thread(report.chart_png, built)
            await asyncio.to_thread(Path(args.chart).write_bytes, chart)
            print(f"Wrote chart to {args.chart}")
        return 0

    return _ledger_only(body)


def _ledger_only(body: Callable[[Ledger], Awaitable[int]]) -> int:
    """Run `body(ledger)`: report and quota commands need the database, not the renderer."""
    settings = _settings()

    async def main() -> int:
        ledger = await open_ledger(settings)
        try:
            return await body(ledger)
        finally:
            await asyncio.to_thread(ledger.close)

    return asyncio.run(main())


def cmd_quota(args: argparse.Namespace) -> int:
    from bot.policy import quota

    async def body(ledger: Ledger) -> int:
        command = f"quota {args.action}"
        try:
            if args.user and args.channel and args.action == "set":
                raise UserError(msg("cli.user_or_channel", command=command))
            if args.action == "set":
                values = quota.parse_limits(
                    args.limits
                )  # a bad limit is reported before the tenant is looked up
            elif args.limits:
                raise UserError(msg("cli.no_limits_here", command=command, limits=" ".join(args.limits)))
            tenant = await _tenant(ledger, args, command)
            if tenant is None:
                raise UserError(msg("cli.needs_target", command=command))
            if args.action == "show":
                return await _show(ledger, args, tenant)
            scope, key = (
                ("user", args.user)
                if args.user
                else ("channel", args.channel)
                if args.channel
                else ("workspace", tenant.workspace)
            )
            await ledger.set_limits(scope, key, values, tenant=tenant)
        except UserError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"limits for {scope} {key} in {tenant}: {json.dumps(values)}")
        return 0

    return _ledger_only(body)


def settings_words(words: Sequence[str], platform: str) -> list[str]:
    """`imagebot settings` words -> `/imagine-admin` words. At a shell an id is typed bare: `channel C012AB`,
    `block U02ABC`, `allow S0ABC` (a Slack user group) or `allow 789` (a Discord role) become the mentions a
    chat platform would send."""
    words = list(words)
    if len(words) >= 2 and "<" not in words[1] and words[1].lower() not in ("everyone", "workspace"):
        target = words[1].lstrip("#@")
        if words[0] == "channel":
            words[1] = f"<#{target}>"
        elif words[0] in ("block", "unblock"):
            words[1] = f"<@{target}>"
        elif words[0] in ("allow", "deny"):
            words[1] = f"<!subteam^{target}>" if platform == "slack" else f"<@&{target}>"
    return words


def cmd_settings(args: argparse.Namespace) -> int:
    """`imagebot settings --tenant slack:T1 [VERB ...]`: the access rules of one tenant, in the words of
    `/imagine-admin` (channel, allow, deny, block, unblock, settings), as its operator; no words shows them.
    `--channel C1 confirm=0.10` is short for `channel C1 confirm=0.10`."""
    words = list(args.settings)
    if args.channel:
        words = ["channel", args.channel, *words]
    if not words or "=" in words[0]:
        words = ["settings", *words]
    from bot import commands

    from .mentions import read_admin

    async def body(core: Core) -> int:
        try:
            tenant = Tenant.parse(args.tenant)
            if args.user:  # one person's own defaults, in the words of /imagine-settings
                person = Requester(tenant.platform, tenant.workspace, args.channel or "", args.user)
                print((await commands.my_settings(core, person, " ".join(args.settings))).text)
                return 0
            who = Requester(tenant.platform, tenant.workspace, args.channel or "", "cli")
            said = " ".join(settings_words(words, tenant.platform))
            request = read_admin(said, who.platform)
            reply = await commands.admin(core, who, request, platform_admin=True, operator=True)
        except UserError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(reply.text)
        return 0

    return asyncio.run(_with_core(_settings(), body, renders=False))


async def _show(ledger: Ledger, args: argparse.Namespace, tenant: Tenant) -> int:
    """The limits that apply to what is named: the tenant's own, plus the user's or the channel's."""
    from bot.policy import quota

    who = Requester(tenant.platform, tenant.workspace, args.channel or "", args.user or "")
    wanted = (
        {"workspace_month"}
        | ({"user_day", "user_month"} if args.user else set())
        | ({"channel_month"} if args.channel else set())
    )
    lines = [line for line in await ledger.quota_lines(who) if quota.LABELS.get(line.label) in wanted]
    if not lines:
        print("no limits apply")
    for line in lines:
        print(
            f"{line.label}: {line.used} used of {line.limit}, {line.left} left, resets {line.resets:%Y-%m-%d %H:%M %Z}"
        )
    return 0


async def _person(ledger: Ledger, args: argparse.Namespace, command: str) -> Requester:
    """Whose history or card: `--tenant` and `--user`, the tenant found from the user alone where the ledger
    makes it unambiguous; nothing named: the terminal's own (`imagebot imagine`'s cli:local, user cli)."""
    tenant = await _tenant(ledger, args, command) if (args.tenant or args.user) else None
    if tenant is None:
        tenant = Tenant("cli", "local")
    return Requester(tenant.platform, tenant.workspace, "", args.user or "cli")


def cmd_history(args: argparse.Namespace) -> int:
    """`imagebot history [--tenant T] [--user U] [-n N]`: a person's last N jobs, as /imagine-history shows
    them, with each one's cost (the terminal is an operator: anyone's, in any tenant)."""
    from bot.jobs import card, texts

    async def body(ledger: Ledger) -> int:
        try:
            who = await _person(ledger, args, "history")
            count = card.parse_count("" if args.n is None else str(args.n))  # none given: the default
            cards = await card.history(ledger, who, count)
        except UserError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(texts.history(cards, _cli_link))
        return 0

    return _ledger_only(body)


def cmd_info(args: argparse.Namespace) -> int:
    """`imagebot info JOB`: a job's card (any tenant's: the terminal is an operator); `JOB` may also be N, the
    Nth of `--user`'s history."""
    from bot.jobs import card, texts

    async def body(ledger: Ledger) -> int:
        try:
            if args.job.strip().isdigit():
                who = await _person(ledger, args, "info")
            else:
                owner, _context = await ledger.place(args.job.strip().lower())
                who = owner if owner.platform else Requester("cli", "local", "", "cli")
            found = await card.card(ledger, who, args.job, admin=True)
        except UserError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(texts.job_card(found, _cli_link))
        return 0

    return _ledger_only(body)


def _cli_link(where: dict[str, Any]) -> str | None:
    images = where.get("images") or []
    return str(images[0]["path"]) if images and images[0].get("path") else None


def cmd_slack_manifest(args: argparse.Namespace) -> int:
    from .manifests import slack_manifest

    print(json.dumps(slack_manifest(socket_mode=not args.http, request_url=args.url), indent=2))
    return 0


def cmd_discord_invite(args: argparse.Namespace) -> int:
    from .manifests import discord_invite_url

    print(discord_invite_url(args.client_id))
    return 0


def _examples(*lines: str) -> dict[str, Any]:
    """An `examples:` epilog; tests/e2e/test_cli.py runs every line of it."""
    return {
        "epilog": "examples:\n" + "\n".join(f"  {line}" for line in lines),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


IMAGINE_EXAMPLES = (
    'imagebot imagine "a poster for our launch" --size 2k --out poster.jpg',
    'imagebot imagine "a red fox, watercolour" --size 1536x1024 --quality low --format png --out fox.png',
)


def main(argv: Sequence[str] | None = None) -> int:
    """The `imagebot` command. A configuration error, wherever it is found (settings, the price table, the
    database), is one line on stderr and exit status 2."""
    try:
        return _main(argv)
    except ConfigError as exc:
        print(f"imagebot: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except DatabaseUnavailable as exc:  # a one-shot command does not wait: `imagebot run` does (service.py)
        print(f"imagebot: {exc}; try again when it is up", file=sys.stderr)
        raise SystemExit(1) from None


def _own_words(words: Sequence[str]) -> list[str]:
    """`settings --user`'s words as typed, without its own options (--tenant, --user, --channel and values)."""
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("--tenant", "--user", "--channel"):
            skip = True
        elif not word.startswith(("--tenant=", "--user=", "--channel=")):
            kept.append(word)
    return kept


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["imagine"]:
        raise SystemExit(cmd_imagine(argv[1:]))
    parser = argparse.ArgumentParser(
        prog="imagebot",
        description="Slack/Discord bot for gpt-image-2 with quotas "
        "and a cost ledger. Configure with environment variables (see README).",
        **_examples(IMAGINE_EXAMPLES[0], "imagebot report --days 7", "imagebot slack-manifest"),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "run",
        help="start every adapter whose tokens are set",
        description="Start the bot: every adapter whose tokens are set, and the HTTP port (IMAGEBOT_HTTP_PORT, "
        "default 3000: health, metrics, Slack's HTTP mode). Slack: SLACK_BOT_TOKEN with SLACK_APP_TOKEN "
        "(Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode). Discord: DISCORD_TOKEN. With no chat token set, "
        "the console adapter runs in this terminal (when it is one). Without OPENAI_API_KEY the offline image "
        "server answers, at no cost. Every setting: README, Configuration.",
    ).set_defaults(fn=cmd_run)
    p = sub.add_parser(
        "console",
        help="a local prompt loop on the same core",
        **_examples("imagebot console --out images --user alice"),
    )
    p.add_argument("--out", help="folder for images (default IMAGEBOT_OUT_DIR or ./out)")
    p.add_argument("--user", default="console")
    p.add_argument("--channel", default="console")
    p.set_defaults(fn=cmd_console)
    sub.add_parser("imagine", help='one job: imagebot imagine "<prompt>" [flags] --out FILE')
    p = sub.add_parser("redeliver", help="deliver a paid image that could not be posted (it is kept)")
    p.add_argument("job", help="the job id (in the message that said it could not be posted)")
    p.add_argument("--out", help="a terminal job's file or folder (default IMAGEBOT_OUT_DIR or ./out)")
    p.set_defaults(fn=cmd_redeliver)
    p = sub.add_parser("offline-server", help="run the offline OpenAI-compatible image server alone")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--latency", type=float, default=None)
    p.set_defaults(fn=cmd_offline_server)
    p = sub.add_parser(
        "report",
        help="usage report from the ledger (every tenant, or --tenant's)",
        **_examples(
            "imagebot report --days 7",
            "imagebot report --tenant slack:T123 --channel C123 --csv spend.csv --chart spend.png",
        ),
    )
    p.add_argument(
        "--tenant",
        help="PLATFORM:WORKSPACE, e.g. slack:T123 or discord:456 (default: every tenant, "
        "or the only one --channel/--user is in)",
    )
    p.add_argument("--channel")
    p.add_argument("--user")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--csv", help="also export the ledger rows to this CSV file")
    p.add_argument("--chart", help="also write the PNG chart to this file")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser(
        "settings",
        help="a tenant's access rules, in /imagine-admin's words (no words: show them)",
        description="A tenant's access rules, in the words of /imagine-admin; ids go bare (C012AB, "
        "U02ABC; for allow/deny a Slack user group id or a Discord role id). No words: show them.",
        **_examples(
            "imagebot settings --tenant slack:T123",
            "imagebot settings --tenant slack:T123 channel C012AB max_size=2k",
            "imagebot settings --tenant slack:T123 channel C012AB off",
            "imagebot settings --tenant slack:T123 --channel C012AB confirm=0.10",
            "imagebot settings --tenant slack:T123 block U02ABC",
            "imagebot settings --tenant slack:T123 unblock U02ABC",
            "imagebot settings --tenant slack:T123 allow S0DESIGN",
            "imagebot settings --tenant discord:456 deny 789",
            "imagebot settings --tenant slack:T123 settings cooldown=30 max_jobs=2",
        ),
    )
    p.add_argument("--tenant", required=True, help="PLATFORM:WORKSPACE (slack:T123, discord:456)")
    p.add_argument(
        "--channel", help="a channel id: the words are that channel's settings (confirm=0.10, off)"
    )
    p.add_argument(
        "--user", help="a user id: the words are that person's own defaults, as /imagine-settings takes them"
    )
    p.add_argument("settings", nargs="*", help="the /imagine-admin words (see the examples)")
    p.set_defaults(fn=cmd_settings)
    p = sub.add_parser(
        "history",
        help="a person's last jobs with their cost (default: the terminal's own)",
        **_examples("imagebot history", "imagebot history --tenant slack:T123 --user U123 -n 20"),
    )
    p.add_argument(
        "--tenant", help="PLATFORM:WORKSPACE (default: the only tenant --user is in, else cli:local)"
    )
    p.add_argument("--user", help="a user id (default: cli, as imagebot imagine uses)")
    p.add_argument("-n", type=int, help="how many jobs (1-50, default 10)")
    p.set_defaults(fn=cmd_history)
    p = sub.add_parser(
        "info",
        help="a job's card: prompt, settings, cost reserved and charged, request ids, who and when",
        **_examples("imagebot info 0123456789abcdef", "imagebot info 1 --tenant slack:T123 --user U123"),
    )
    p.add_argument("job", help="the job id (from imagebot history), or N: the Nth of --user's history")
    p.add_argument("--tenant", help="PLATFORM:WORKSPACE, with N")
    p.add_argument("--user", help="a user id, with N")
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser(
        "quota",
        help="show or set quota limits of a tenant, or of its users and channels",
        **_examples(
            "imagebot quota set --tenant slack:T123 --user U123 daily_usd=2 monthly_images=100",
            "imagebot quota set --tenant discord:456 monthly_usd=50",
            "imagebot quota show --tenant slack:T123 --user U123",
        ),
    )
    p.add_argument("action", choices=["show", "set"])
    p.add_argument(
        "--tenant",
        help="PLATFORM:WORKSPACE, e.g. slack:T123 or discord:456; alone: the tenant's own "
        "limit (default: the only tenant the id is in)",
    )
    p.add_argument("--user")
    p.add_argument("--channel")
    p.add_argument("--workspace", help="a workspace id; names the tenant where that is unambiguous")
    p.add_argument(
        "limits",
        nargs="*",
        help="daily_usd=N daily_images=N monthly_usd=N monthly_images=N (N, unlimited or default)",
    )
    p.set_defaults(fn=cmd_quota)
    p = sub.add_parser(
        "slack-manifest",
        help="print a Slack app manifest",
        **_examples(
            "imagebot slack-manifest",
            "imagebot slack-manifest --http --url https://bot.example.com/slack/events",
        ),
    )
    p.add_argument("--http", action="store_true", help="HTTP mode instead of Socket Mode")
    p.add_argument(
        "--url", default="https://YOUR-HOST/slack/events", help="public URL of /slack/events (HTTP mode)"
    )
    p.set_defaults(fn=cmd_slack_manifest)
    p = sub.add_parser(
        "discord-invite",
        help="print the OAuth2 URL to add the bot to a server",
        **_examples("imagebot discord-invite 123456789012345678"),
    )
    p.add_argument("client_id", nargs="?", default="YOUR_APPLICATION_ID")
    p.set_defaults(fn=cmd_discord_invite)
    p = sub.add_parser(
        "discord-sync", help="sync the Discord commands now (a start syncs only when they changed)"
    )
    p.set_defaults(fn=cmd_discord_sync)
    # Limits may come before or after --user/--channel (`quota set --user U1 daily_images=5`):
    # argparse would match the empty positional list early, so leftovers are gathered here.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "quota":
        args.limits = [*args.limits, *extra]
    elif args.command == "settings" and args.user:  # /imagine-settings words may be flags: keep them in order
        args.settings = _own_words(argv[argv.index("settings") + 1 :])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
