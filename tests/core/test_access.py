"""Access rules and fairness (docs/rules.md §10) through the real core: channels, who may render, blocks, ceilings,
pace, the fair queue, `/imagine-admin` settings. Against the offline image server and a real SQLite file;
a refusal is private, costs nothing and calls no API."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import commands
from bot.app import Core
from bot.concurrency import Gate
from bot.errors import UserError
from bot.model.pricing import load_prices
from bot.model.request import Requester
from bot.policy import access
from bot.policy.pace import Pace
from tests.support.clock import Clock
from tests.support.core import (
    ADMIN,
    ALICE,
    BOB,
    MakeCore,
    Store,
    admin_chat,
    assert_counters_match_ledger,
    offline_settings,
    rows,
)
from tests.support.core import AccessView as View

CAROL = Requester("slack", "W1", "C1", "U3")
OTHER_TENANT = Requester("slack", "W2", "C1", "U1")


async def admin(core: Core, text: str, who: Requester = ADMIN) -> str:
    return (await admin_chat(core, who, text, platform_admin=True)).text


async def imagine(core: Core, who: Requester, text: str = "a fox", view: View | None = None) -> View:
    view = view or View()
    await core.submit(core.parse(text), who, view)
    return view


def refused_for_nothing(core: Core, view: View, *words: str) -> None:
    """Refused privately, with these words in the text; nothing reserved, no API call."""
    assert len(view.refusals) == 1, view.refusals
    for word in words:
        assert word in view.refusals[0], view.refusals[0]
    assert "Nothing was charged" in view.refusals[0]
    assert not view.opened and not view.delivered


async def test_a_channel_turned_off_refuses_privately_and_calls_nothing(make_core: MakeCore) -> None:
    core = await make_core()
    assert "Channel <#C1> set: off" in await admin(core, "channel <#C1|general> off")
    view = await imagine(core, ALICE)
    refused_for_nothing(core, view, "turned off in this channel", "/imagine-admin channel")
    assert rows(core) == [] and core.offline_server is not None and core.offline_server.calls == []
    # Another channel, and another tenant's channel C1, are untouched.
    assert (await imagine(core, Requester("slack", "W1", "C2", "U1"))).delivered
    assert (await imagine(core, OTHER_TENANT)).delivered
    await admin(core, "channel <#C1> on")
    assert (await imagine(core, ALICE)).delivered


async def test_operators_pin_channels_with_imagebot_channels(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_CHANNELS="C7, discord:123")
    view = await imagine(core, ALICE)
    refused_for_nothing(core, view, "IMAGEBOT_CHANNELS")
    assert (await imagine(core, Requester("slack", "W1", "C7", "U1"))).delivered
    assert (await imagine(core, Requester("discord", "9", "123", "5"))).delivered
    refused_for_nothing(core, await imagine(core, Requester("slack", "W1", "123", "U1")), "IMAGEBOT_CHANNELS")
    # An admin cannot switch on a channel the operators left out.
    await admin(core, "channel <#C1> on")
    refused_for_nothing(core, await imagine(core, ALICE), "IMAGEBOT_CHANNELS")
    assert core.offline_server is not None and len(core.offline_server.calls) == 2


async def test_a_blocked_user_is_refused_on_commands_buttons_and_the_usage_report(
    make_core: MakeCore,
) -> None:
    core = await make_core()
    first = await imagine(core, ALICE)
    assert first.delivered
    store = Store()
    store.keep(first.delivered[0])
    assert "<@U1> blocked" in await admin(core, "block <@U1>")
    refused_for_nothing(core, await imagine(core, ALICE), "blocked")
    for button in first.delivered[0].buttons:  # Re-roll, Vary, Upscale, Delete, Info: none works
        clicked = View()
        await core.act(button.key, ALICE, clicked, store)
        assert clicked.refusals and "blocked" in clicked.refusals[0], button
    assert store.deleted == []
    with pytest.raises(commands.UserError, match="blocked"):
        await commands.usage(core, ALICE, "")
    # Others in the workspace, and the same user id in another workspace, are not blocked.
    assert (await imagine(core, BOB)).delivered
    assert (await imagine(core, OTHER_TENANT)).delivered
    assert len(rows(core)) == 3
    await admin(core, "unblock <@U1>")
    assert (await imagine(core, ALICE)).delivered


async def test_allow_lists_let_only_members_and_admins_render(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_ADMINS="slack:UOP")
    assert (await imagine(core, ALICE)).delivered  # no entry: everyone
    reply = await admin(core, "allow <!subteam^S1|@designers>")
    assert "allowed: <!subteam^S1> (and admins)" in reply
    outsider = await imagine(core, ALICE)
    refused_for_nothing(core, outsider, "Only members of <!subteam^S1>", "not in any of them")
    assert outsider.asked == [["S1"]]
    assert (await imagine(core, ALICE, view=View(groups={"S1"}))).delivered
    assert (await imagine(core, BOB, view=View(admin=True))).delivered  # a workspace admin
    assert (await imagine(core, Requester("slack", "W1", "C1", "UOP"))).delivered  # an operator
    # deny beats allow for a member of both; `deny everyone` leaves only the allowed groups and admins.
    await admin(core, "deny <!subteam^S2>")
    refused_for_nothing(core, await imagine(core, ALICE, view=View(groups={"S1", "S2"})), "may not render")
    await admin(core, "allow everyone")
    assert (await imagine(core, CAROL)).delivered
    await admin(core, "deny everyone")
    refused_for_nothing(core, await imagine(core, CAROL), "Only members of <!subteam^S1>")
    assert (await imagine(core, CAROL, view=View(groups={"S1"}))).delivered


async def test_allow_refuses_a_person_or_a_bare_name_with_the_forms_it_takes(make_core: MakeCore) -> None:
    core = await make_core()
    with pytest.raises(commands.UserError, match="not a user group"):
        await admin(core, "allow <@U2>")
    discord_admin = Requester("discord", "9", "1", "2")
    with pytest.raises(commands.UserError, match="not a role"):
        await admin(core, "allow designers", who=discord_admin)
    assert "<@&77>" in await admin(core, "allow <@&77>", who=discord_admin)


async def test_ceilings_refuse_naming_the_ceiling_and_clamp_auto(make_core: MakeCore) -> None:
    core = await make_core()
    server = core.offline_server
    assert server is not None
    await admin(core, "channel <#C1> max_size=2k max_quality=medium models=gpt-image-2")
    refused_for_nothing(
        core, await imagine(core, ALICE, "a fox --size 4k"), "max_size=2k (2048x2048", "--size"
    )
    refused_for_nothing(
        core, await imagine(core, ALICE, "a fox --quality high"), "max_quality=medium", "low or medium"
    )
    refused_for_nothing(
        core, await imagine(core, ALICE, "a fox --model gpt-image-1.5"), "models=gpt-image-2", "not allowed"
    )
    assert server.calls == [] and rows(core) == []
    # Within the ceilings: rendered as asked; `auto` quality becomes the ceiling (and says so).
    done = await imagine(core, ALICE, "a fox --size 2048x1152")
    assert [(i.width, i.height) for i in done.delivered[0].images] == [(2048, 1152)]
    assert server.calls[-1].quality == "medium"
    assert any("clamped to medium" in note for note in done.delivered[0].request.notes)
    # max_size=1k: --size auto (which may render 1536x1024) is clamped to 1024x1024.
    await admin(core, "channel <#C1> max_size=1k")
    done = await imagine(core, ALICE, "a fox --size auto")
    assert server.calls[-1].size == "1024x1024"
    assert [(i.width, i.height) for i in done.delivered[0].images] == [(1024, 1024)]
    assert rows(core)[-1]["size"] == "1024x1024"


async def test_moderation_is_sent_on_generations_only(make_core: MakeCore) -> None:
    core = await make_core()
    server = core.offline_server
    assert server is not None
    await admin(core, "channel <#C1> moderation=low")
    first = await imagine(core, ALICE)
    assert "moderation" in server.calls[-1].fields
    store = Store()
    store.keep(first.delivered[0])
    vary = next(b for b in first.delivered[0].buttons if b.kind == "vary")
    clicked = View()
    await core.act(vary.key, ALICE, clicked, store)
    assert clicked.delivered and server.calls[-1].endpoint.endswith("edits")
    assert "moderation" not in server.calls[-1].fields
    await admin(core, "channel <#C1> moderation=default")
    await imagine(core, ALICE)
    assert "moderation" not in server.calls[-1].fields


async def test_bad_channel_settings_name_the_rule_and_the_range(make_core: MakeCore) -> None:
    core = await make_core()
    for text, words in [
        ("channel <#C1> max_size=9k", "max_size=9k"),
        ("channel <#C1> max_size=auto", "not a ceiling"),
        ("channel <#C1> max_quality=ultra", "low, medium or high"),
        ("channel <#C1> models=dall-e-9", "not in the price table"),
        ("channel <#C1> moderation=none", "auto or low"),
        ("channel <#C1> loud=yes", "max_size=1k|2k|4k|WxH"),
        ("settings cooldown=-1", "0 to 86400"),
        ("settings max_jobs=0", "1 to 100"),
        ("settings speed=9", "cooldown=SECONDS"),
    ]:
        with pytest.raises(commands.UserError, match=words.replace("|", r"\|")):
            await admin(core, text)


async def test_max_jobs_refuses_the_job_past_the_limit_and_says_when(make_core: MakeCore) -> None:
    core = await make_core(IMAGEBOT_USER_MAX_JOBS="2", IMAGEBOT_OFFLINE_LATENCY="0.5")
    views = [View() for _ in range(3)]
    await asyncio.gather(*(imagine(core, ALICE, view=v) for v in views))
    refused = [v for v in views if v.refusals]
    assert len(refused) == 1 and "max_jobs=2" in refused[0].refusals[0]
    assert "as soon as one finishes" in refused[0].refusals[0]
    assert len({r["job_id"] for r in rows(core)}) == 2
    assert (await imagine(core, ALICE)).delivered  # the others finished: room again
    assert_counters_match_ledger(core)


async def test_a_tenant_sets_its_own_pace_and_a_cooldown_says_when_to_come_back(make_core: MakeCore) -> None:
    core = await make_core()
    # The cooldown is measured by the ledger's clock; moved by hand here, less than a lease (60 s) in all.
    clock = core.ledger.clock = Clock(core.ledger.clock())  # type: ignore[misc]
    reply = await admin(core, "settings cooldown=30 max_jobs=3")
    assert "cooldown: 30 s" in reply and "max_jobs: 3" in reply
    assert (await imagine(core, ALICE)).delivered
    again = await imagine(core, ALICE)
    refused_for_nothing(core, again, "cooldown", "next job in")
    assert "next job in 30 s" in again.refusals[0]
    clock.advance(seconds=14.2)  # 15.8 s left: said rounded up, never sooner than it is true
    assert "next job in 16 s" in (await imagine(core, ALICE)).refusals[0]
    clock.advance(seconds=15.79)  # 0.01 s left: still at least 1 s
    assert "next job in 1 s" in (await imagine(core, ALICE)).refusals[0]
    clock.advance(seconds=0.02)
    assert (await imagine(core, ALICE)).delivered  # 30 s have passed
    assert (await imagine(core, BOB)).delivered  # one user's cooldown is theirs alone
    assert (await imagine(core, OTHER_TENANT)).delivered  # another tenant keeps the default (0)
    await admin(core, "settings cooldown=default")
    assert (await imagine(core, ALICE)).delivered


@given(
    cooldown=st.floats(min_value=0.001, max_value=86_400, allow_nan=False),
    elapsed_ms=st.integers(min_value=0, max_value=86_400_000),
)
def test_a_cooldowns_seconds_left_are_rounded_up_and_never_say_too_soon(
    cooldown: float, elapsed_ms: int
) -> None:
    start = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    now = start + timedelta(milliseconds=elapsed_ms)
    left = cooldown - elapsed_ms / 1000
    said = Pace(cooldown=cooldown, max_jobs=1).seconds_left(start.isoformat(), now)
    assert said >= 1 and said >= left and (left <= 0 or said - 1 < left)


async def test_pace_holds_under_concurrent_submissions(make_core: MakeCore) -> None:
    """Twelve commands at once from one user with max_jobs=3: exactly three jobs, the rest refused."""
    core = await make_core(IMAGEBOT_OFFLINE_LATENCY="0.3")
    await admin(core, "settings max_jobs=3")
    views = [View() for _ in range(12)]
    await asyncio.gather(*(imagine(core, ALICE, view=v) for v in views))
    assert sum(bool(v.delivered) for v in views) == 3
    assert sum(bool(v.refusals) for v in views) == 9
    assert len(rows(core)) == 3
    assert_counters_match_ledger(core)


async def test_settings_survive_a_restart(make_core: MakeCore) -> None:
    core = await make_core()
    await admin(core, "channel <#C1> off")
    await admin(core, "block <@U2>")
    await admin(core, "settings max_jobs=1")
    await core.close()
    again = await make_core()
    shown = await admin(again, "settings")
    assert "<#C1>: off" in shown and "blocked: <@U2>" in shown and "max_jobs: 1" in shown
    refused_for_nothing(again, await imagine(again, ALICE), "turned off")
    refused_for_nothing(again, await imagine(again, Requester("slack", "W1", "C2", "U2")), "blocked")


async def test_help_lists_the_grammar(make_core: MakeCore) -> None:
    core = await make_core()
    text = await admin(core, "help")
    for verb in ("quota", "report", "channel", "allow", "deny", "block", "unblock", "settings", "help"):
        assert f"- {verb}" in text
    with pytest.raises(commands.UserError, match="unknown or incomplete"):
        await admin(core, "frobnicate")


async def test_only_admins_change_access_rules(make_core: MakeCore) -> None:
    core = await make_core()
    reply = await admin_chat(core, ALICE, "block <@U2>", platform_admin=False)
    assert "Only admins" in reply.text
    assert (await imagine(core, BOB)).delivered


# -- the fair queue ----------------------------------------------------------------------------------------


async def test_the_fair_queue_starts_everyones_first_image_before_anyones_second(make_core: MakeCore) -> None:
    """Three users submit 10, 1 and 1 jobs with one call in flight: the single jobs start within the first
    three calls, and each one's first progress shows its real place."""
    core = await make_core(
        IMAGEBOT_MAX_IN_FLIGHT="1",
        IMAGEBOT_OFFLINE_LATENCY="1",
        IMAGEBOT_USER_MAX_JOBS="20",
        IMAGEBOT_API_TIMEOUT="10",
    )
    gate = core.runner.gate

    async def waiting(n: int) -> None:  # until n calls wait in the queue (on any backend's speed)
        for _ in range(400):
            if gate.queued == n:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{gate.queued} waiting, not {n}")

    server = core.offline_server
    assert server is not None
    views: dict[str, View] = {}
    tasks = []
    for n in range(10):
        views[f"alice{n}"] = View()
        tasks.append(asyncio.create_task(imagine(core, ALICE, f"alice {n}", views[f"alice{n}"])))
        await asyncio.sleep(0)
    await waiting(9)  # Alice's first image is being rendered, her other nine wait
    for name, who, queued in (("bob", BOB, 10), ("carol", CAROL, 11)):
        views[name] = View()
        tasks.append(asyncio.create_task(imagine(core, who, name, views[name])))
        await waiting(queued)
    server.latency = 0.05  # the order is settled: finish quickly
    await asyncio.gather(*tasks)
    order = [call.prompt for call in server.calls]
    assert len(order) == 12
    assert order.index("bob") < 3 and order.index("carol") < 3, order
    # Alice is being served: Bob is next in line, and Carol right behind him; that is what they were shown.
    assert order[:3] == ["alice 0", "bob", "carol"], order
    assert views["bob"].opened[0].queue_position == 1 and views["carol"].opened[0].queue_position == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arrivals=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=30),
    limit=st.integers(min_value=1, max_value=3),
)
def test_the_gate_is_round_robin_and_positions_are_the_real_order(arrivals: list[int], limit: int) -> None:
    """Any arrival order of calls from five owners: calls start round-robin by owner (FIFO within one),
    and the position a waiter is shown is the order in which it really starts (nobody arriving later)."""

    async def scenario() -> None:
        gate = Gate(limit)
        started: list[tuple[int, int]] = []
        go = asyncio.Event()
        waiters: dict[tuple[int, int], asyncio.Future[None]] = {}

        async def call(owner: int, n: int) -> None:
            def on_wait(waiter: asyncio.Future[None]) -> None:
                waiters[(owner, n)] = waiter

            async with gate.slot(on_wait, owner=owner):
                started.append((owner, n))
                await go.wait()

        counts: dict[int, int] = {}
        tasks = []
        for owner in arrivals:
            counts[owner] = counts.get(owner, 0) + 1
            tasks.append(asyncio.create_task(call(owner, counts[owner])))
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        promised = {key: gate.position(w) for key, w in waiters.items()}
        queued = [key for key in waiters]
        go.set()
        await asyncio.gather(*tasks)
        order = started[limit:]  # the calls that had to wait, in the order they started
        assert sorted(order) == sorted(queued)
        assert [promised[key] for key in order] == list(range(1, len(order) + 1))
        # Round-robin: an owner's k-th waiting call starts only after every owner still waiting when it was
        # granted has had k-1 waiting calls started (so everyone's first before anyone's second).
        for i, (owner, n) in enumerate(order):
            mine = [key for key in order[: i + 1] if key[0] == owner]
            assert mine[-1] == (owner, n)
            assert [k[1] for k in mine] == sorted(k[1] for k in mine)  # FIFO within one owner
        firsts = {}
        for i, (owner, _) in enumerate(order):
            firsts.setdefault(owner, i)
        seconds = [i for i, key in enumerate(order) if sum(1 for k in order[: i + 1] if k[0] == key[0]) == 2]
        assert not seconds or max(firsts.values()) < min(seconds)

    asyncio.run(scenario())


async def test_a_cancelled_waiter_leaves_the_line_and_positions_close_up() -> None:
    gate = Gate(1)
    release = asyncio.Event()
    waiters: dict[str, asyncio.Future[None]] = {}

    async def call(owner: str, name: str) -> None:
        async with gate.slot(lambda w: waiters.__setitem__(name, w), owner=owner):
            await release.wait()

    running = asyncio.create_task(call("a", "a0"))
    await asyncio.sleep(0)
    tasks = {
        name: asyncio.create_task(call(owner, name))
        for owner, name in (("a", "a1"), ("b", "b1"), ("c", "c1"))
    }
    await asyncio.sleep(0)
    # a is being served, so b and c (never served) go first.
    assert [gate.position(waiters[n]) for n in ("a1", "b1", "c1")] == [3, 1, 2]
    tasks["b1"].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tasks["b1"]
    assert gate.queued == 2 and [gate.position(waiters[n]) for n in ("a1", "c1")] == [2, 1]
    release.set()
    await asyncio.gather(running, tasks["a1"], tasks["c1"])
    assert gate.active == 0 and gate.queued == 0


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    blocked=st.sets(st.sampled_from(["U1", "U2", "U3"]), max_size=2),
    off=st.booleans(),
    max_jobs=st.integers(min_value=1, max_value=3),
    submissions=st.lists(st.sampled_from(["U1", "U2", "U3"]), min_size=1, max_size=9),
)
def test_access_rules_hold_for_concurrent_users(
    tmp_path_factory: pytest.TempPathFactory,
    blocked: set[str],
    off: bool,
    max_jobs: int,
    submissions: list[str],
) -> None:
    """Any mix of blocked users, a channel switched off or not, and a max_jobs, with users submitting at once:
    no refused request leaves a ledger row, nobody blocked (or in an off channel) gets one, nobody ever has
    more than max_jobs jobs open, and every counter equals the ledger."""

    async def scenario() -> None:
        db = str(tmp_path_factory.mktemp("access") / "bot.sqlite3")
        core = await Core.start(
            offline_settings(
                db,
                IMAGEBOT_PROGRESS_INTERVAL="3",
                IMAGEBOT_API_TIMEOUT="5",
                IMAGEBOT_USER_MAX_JOBS=str(max_jobs),
            )
        )
        try:
            for user in blocked:
                await admin(core, f"block <@{user}>")
            if off:
                await admin(core, "channel <#C1> off")
            views = [(user, View()) for user in submissions]
            peak: dict[str, int] = {}

            async def watch() -> None:
                while True:
                    open_jobs: dict[str, set[str]] = {}
                    for r in rows(core, "status IN ('reserved','running')"):
                        open_jobs.setdefault(r["user"], set()).add(r["job_id"])
                    for user, jobs in open_jobs.items():
                        peak[user] = max(peak.get(user, 0), len(jobs))
                    await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch())
            await asyncio.gather(
                *(
                    core.submit(
                        core.parse("a fox --size 1024x1024 --quality low"),
                        Requester("slack", "W1", "C1", u),
                        v,
                    )
                    for u, v in views
                )
            )
            watcher.cancel()
            made = [r["user"] for r in rows(core)]
            for _, view in views:
                assert bool(view.refusals) != bool(view.delivered or view.failures)
            assert not set(made) & blocked and (not off or not made)
            assert sum(bool(v.delivered or v.failures) for _, v in views) == len(
                {r["job_id"] for r in rows(core)}
            )
            assert all(n <= max_jobs for n in peak.values()), peak
            assert_counters_match_ledger(core)
        finally:
            await core.close()

    asyncio.run(scenario())


class Partly:
    """A Standing that can read some groups and not others (as Slack answers usergroups.users.list for one group
    and errors for another): True if in a readable one, else MembershipUnknown if any asked one is unreadable."""

    def __init__(self, held: Collection[str], unreadable: Collection[str]) -> None:
        self.held, self.unreadable = set(held), set(unreadable)

    async def platform_admin(self) -> bool:
        return False

    async def member_of(self, groups: Collection[str]) -> bool:
        if not self.held.isdisjoint(groups):
            return True
        if not self.unreadable.isdisjoint(groups):
            raise access.MembershipUnknown()
        return False


GROUPS = ["S1", "S2", "S3"]


@settings(max_examples=200, deadline=None)
@given(
    verdicts=st.lists(st.sampled_from([None, "allow", "deny"]), min_size=4, max_size=4),
    held=st.sets(st.sampled_from(GROUPS)),
    unreadable=st.sets(st.sampled_from(GROUPS)),
)
def test_an_unreadable_group_never_lets_anyone_in_on_a_guess(
    verdicts: list[str | None], held: set[str], unreadable: set[str]
) -> None:
    """Any allow/deny entries (three groups and everyone), any membership, any groups unreadable: the answer is
    the one every possible membership of the unreadable groups agrees on, and where they disagree, a refusal
    saying access cannot be checked (never a guess either way)."""
    tenant = {f"who:group:{g}": v for g, v in zip(GROUPS, verdicts, strict=False) if v}
    if verdicts[3]:
        tenant["who:everyone"] = verdicts[3]
    rules = access.Rules({}, tenant)
    rule = access.Access(prices=load_prices())
    who = Requester("slack", "W1", "C1", "U1")
    known = held - unreadable  # what can be read of the person's groups

    async def admitted(standing: Any) -> bool | str:
        try:
            await rule.check_person(who, rules, standing)
        except UserError as exc:
            return str(exc)
        return True

    partly = asyncio.run(admitted(Partly(known, unreadable)))
    completions = [
        asyncio.run(
            admitted(Partly(known | {g for g, bit in zip(sorted(unreadable), bits, strict=True) if bit}, ()))
        )
        for bits in itertools.product([False, True], repeat=len(unreadable))
    ]
    admits = {c is True for c in completions}
    if partly == access.UNCHECKABLE:
        assert admits == {True, False} and "nothing was charged" in partly
    else:  # what the readable groups prove, whatever the rest hold
        assert admits == {partly is True}, (partly, completions)
    if not unreadable:
        assert partly == completions[0]
