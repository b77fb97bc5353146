"""Restarts (ACCEPTANCE A12-A21, A24, A25) and restart backoff, on actor and process children.

Restart types by exit reason (A12-A14), the temporary bystander (A15), the
three static strategies and their intensity (A16-A18), escalation (A19),
group restarts where another child fails to start (A20), the sliding window
(A21, on an injected clock), restart loops that must not hang the supervisor
(A24) and a child that ignores its stop (A25).

Not applicable to process children: exiting with reason ``shutdown`` by
itself (A12-A14 "shutdown" cases). A process's shutdown is always the
supervisor's request; a SIGTERM from anyone else is an abnormal exit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from supkit import Exits, FakeClock, Gate, Kit, eventually, pids, recording, running

from actorq import ActorSystem
from actorq.supervisors import (
    KILLED,
    SHUTDOWN,
    Backoff,
    ChildSpec,
    Counts,
    Restarting,
    SupFlags,
    start_supervisor,
)

pytestmark = pytest.mark.timeout(60)

EXIT_KINDS = ["normal", "shutdown", ("shutdown", "moved"), "error", "killed"]
# a process child exits with shutdown only when its supervisor asks (SIGTERM), never by itself
KIT_EXITS = [("actor", how) for how in EXIT_KINDS] + [("process", how) for how in ("normal", "error", "killed")]


def expected_kind(how: Any) -> str:
    return {"normal": "normal", "error": "error", "killed": "killed"}.get(how, "shutdown")  # type: ignore[arg-type]


async def changed(sup: Any, child_id: str, old: Any) -> bool:
    infos = {i.id: i for i in await sup.which_children()}
    info = infos.get(child_id)
    return info is not None and info.state == "running" and info.pid != old


async def state_of(sup: Any, child_id: str) -> str | None:
    infos = {i.id: i for i in await sup.which_children()}
    return infos[child_id].state if child_id in infos else None


async def state_is(sup: Any, child_id: str, state: str | None) -> bool:
    return await state_of(sup, child_id) == state


# -- A12-A14: restart types -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kit", "how"), KIT_EXITS, indirect=["kit"])
async def test_a12_permanent_child_is_always_restarted(kit: Kit, exits: Exits, how: Any) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(intensity=5), [ChildSpec("p", kit.start())],
                                     on_child_exit=exits)
        old = (await pids(sup))["p"]
        kit.make_exit(old, how)
        assert (await exits.wait(old)).kind == expected_kind(how)
        await eventually(lambda: changed(sup, "p", old), "a new pid for the permanent child")
        [info] = await sup.which_children()
        assert kit.alive(info.pid) and info.restarts == 1
        await sup.stop()


async def test_a12_hook_runs_before_the_restart_and_log_levels(kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="actorq.supervisors.supervisor")
    events: list[Any] = []

    def hook(child_id: str, child: Any, exit: Any) -> None:
        events.append(("exit", child_id, exit.kind))

    async with ActorSystem() as system:
        spec = ChildSpec("p", recording(kit.start(), "p", events))
        sup = await start_supervisor(system, SupFlags(intensity=5), [spec], on_child_exit=hook)
        old = (await pids(sup))["p"]
        kit.make_exit(old, "error")
        await eventually(lambda: changed(sup, "p", old), "the restart")
        assert events == [("start", "p"), ("exit", "p", "error"), ("start", "p")]
        levels = {r.levelno for r in caplog.records if "child 'p' exited" in r.getMessage()}
        assert levels == {logging.WARNING}
        assert any(r.levelno == logging.INFO and "restarted child 'p'" in r.getMessage() for r in caplog.records)
        await sup.stop()


@pytest.mark.parametrize(("kit", "how"), KIT_EXITS, indirect=["kit"])
async def test_a13_transient_child_restarted_only_after_abnormal_exit(kit: Kit, exits: Exits, how: Any) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(intensity=5),
                                     [ChildSpec("t", kit.start(), restart="transient"), ChildSpec("x", kit.start())],
                                     on_child_exit=exits)
        old = (await pids(sup))["t"]
        kit.make_exit(old, how)
        exit = await exits.wait(old)
        assert exit.kind == expected_kind(how)
        if exit.abnormal:
            await eventually(lambda: changed(sup, "t", old), "the transient child to be restarted")
        else:
            await eventually(lambda: state_is(sup, "t", "stopped"), "the transient child to be stopped")
            infos = {i.id: i for i in await sup.which_children()}
            assert (infos["t"].pid, infos["t"].restarts) == (None, 0)  # spec kept, not restarted
            assert await sup.count_children() == Counts(specs=2, active=1, supervisors=0, workers=2)
        await sup.stop()


@pytest.mark.parametrize(("kit", "how"), KIT_EXITS, indirect=["kit"])
async def test_a14_temporary_child_never_restarted_and_forgotten(kit: Kit, exits: Exits, how: Any) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(intensity=5),
                                     [ChildSpec("tmp", kit.start(), restart="temporary")], on_child_exit=exits)
        old = (await pids(sup))["tmp"]
        kit.make_exit(old, how)
        assert (await exits.wait(old)).kind == expected_kind(how)
        await eventually(lambda: state_is(sup, "tmp", None), "the temporary spec to be dropped")
        assert await sup.count_children() == Counts(specs=0, active=0, supervisors=0, workers=0)
        await sup.stop()


# -- A15: temporary bystander ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_a15_temporary_bystander_not_restarted_and_not_counted(kit: Kit, exits: Exits, clock: FakeClock,
                                                                      strategy: str) -> None:
    async with ActorSystem() as system:
        specs = [ChildSpec("perm", kit.start()), ChildSpec("temp1", kit.start(), restart="temporary"),
                 ChildSpec("temp2", kit.start(), restart="temporary")]
        # Intensity 1: had the two temporaries counted, this one crash would exceed it.
        sup = await start_supervisor(system, SupFlags(strategy, intensity=1, period=3600), specs,
                                     on_child_exit=exits, clock=clock)
        before = await pids(sup)
        kit.make_exit(before["perm"], "killed")
        await eventually(lambda: changed(sup, "perm", before["perm"]), "perm to be restarted")
        assert [i.id for i in await sup.which_children()] == ["perm"]
        assert exits.of(before["temp1"]) == SHUTDOWN and exits.of(before["temp2"]) == SHUTDOWN
        assert sup.ref.is_alive
        await sup.stop()
        assert await sup.wait() == SHUTDOWN


# -- A16-A18: strategies ---------------------------------------------------------------------------------------


async def test_a16_one_for_one_intensity(kit: Kit, exits: Exits, clock: FakeClock,
                                         caplog: pytest.LogCaptureFixture) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags("one_for_one", intensity=2, period=3600),
                                     [ChildSpec("a", kit.start()), ChildSpec("b", kit.start())],
                                     on_child_exit=exits, clock=clock)
        b = (await pids(sup))["b"]
        for failure in (1, 2):
            a = (await pids(sup))["a"]
            kit.make_exit(a, "error")
            await eventually(lambda: changed(sup, "a", a), f"restart after failure {failure}")
            assert (await pids(sup))["b"] == b  # only the failed child restarts
        a = (await pids(sup))["a"]
        kit.make_exit(a, "error")  # the 3rd failure inside the period
        exit = await sup.wait()
        assert exit.kind == "shutdown" and "reached_max_restart_intensity" in str(exit.detail)
        assert "child 'a'" in str(exit.detail)
        assert exits.of(b) == SHUTDOWN and not kit.alive(b)
        assert any(r.levelno == logging.ERROR and "reached_max_restart_intensity" in r.getMessage()
                   for r in caplog.records)


async def test_a17_one_for_all(kit: Kit, exits: Exits) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags("one_for_all", intensity=3),
                                     [ChildSpec(k, kit.start()) for k in "abc"], on_child_exit=exits)
        before = await pids(sup)
        kit.make_exit(before["b"], "killed")
        await eventually(lambda: all_changed(sup, before, "abc"), "all children to be restarted")
        assert not any(kit.alive(p) for p in before.values())
        assert exits.of(before["a"]) == SHUTDOWN and exits.of(before["c"]) == SHUTDOWN
        await sup.stop()


async def test_a17_one_for_all_restart_also_starts_a_member_stopped_by_terminate_child(kit: Kit) -> None:
    """As OTP's restart_multiple_children: the group is every non-temporary member."""
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags("one_for_all", intensity=3),
                                     [ChildSpec("a", kit.start()), ChildSpec("b", kit.start())])
        await sup.terminate_child("b")
        a = (await pids(sup))["a"]
        kit.make_exit(a, "error")
        await eventually(lambda: running(sup, 2), "a and b to run again")
        assert [i.restarts for i in await sup.which_children()] == [1, 1]
        await sup.stop()


async def test_a18_rest_for_one(kit: Kit) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags("rest_for_one", intensity=3),
                                     [ChildSpec(k, kit.start()) for k in "abc"])
        before = await pids(sup)
        kit.make_exit(before["b"], "error")
        await eventually(lambda: all_changed(sup, before, "bc"), "b and c to be restarted")
        after = await pids(sup)
        assert after["a"] == before["a"] and kit.alive(after["a"])
        await sup.stop()


async def all_changed(sup: Any, before: dict[str, Any], keys: str) -> bool:
    infos = {i.id: i for i in await sup.which_children()}
    return all(i.state == "running" for i in infos.values()) and \
        all(infos[k].pid != before[k] for k in keys)


# -- A19: escalation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"])
async def test_a19_escalation(kit: Kit, exits: Exits, clock: FakeClock, strategy: str) -> None:
    """A child whose restarts all fail: the supervisor retries until intensity is spent,
    then terminates its other children and exits."""
    async with ActorSystem() as system:
        flags = SupFlags(strategy, intensity=3, period=3600)
        if strategy == "simple_one_for_one":
            template = Gate(kit.pool(), ["ok", "ok"], default="fail")
            sup = await start_supervisor(system, flags, [ChildSpec("pool", template)], on_child_exit=exits,
                                         clock=clock)
            other = await sup.start_child(("worker",))
            flaky = await sup.start_child(("worker",))
        else:
            template = Gate(kit.start(), ["ok"], default="fail")
            sup = await start_supervisor(system, flags, [ChildSpec("other", kit.start()), ChildSpec("flaky", template)],
                                         on_child_exit=exits, clock=clock)
            other, flaky = (await pids(sup)).values()
        kit.make_exit(flaky, "error")
        exit = await sup.wait()
        assert exit.kind == "shutdown" and "reached_max_restart_intensity" in str(exit.detail)
        first_starts = 2 if strategy == "simple_one_for_one" else 1
        assert template.calls == first_starts + 3  # intensity 3: three failed restarts, then it gives up
        assert not kit.alive(other) and exits.of(other) is not None
        assert exits.of(other) == SHUTDOWN


async def test_a19_escalation_reaches_the_parent(kit: Kit, exits: Exits, clock: FakeClock) -> None:
    """The parent sees the child supervisor's exit and applies its own strategy: it
    restarts it, the restart fails too, and the parent gives up in turn."""
    from actorq.supervisors import supervisor_spec

    async with ActorSystem() as system:
        flaky = Gate(kit.start(), ["ok"], default="fail")
        mid = supervisor_spec("mid", SupFlags("one_for_one", intensity=1, period=3600),
                              [ChildSpec("ok", kit.start()), ChildSpec("flaky", flaky)], clock=clock)
        top = await start_supervisor(system, SupFlags("one_for_one", intensity=1, period=3600),
                                     [mid, ChildSpec("sibling", kit.start())], on_child_exit=exits, clock=clock)
        [mid_info, sibling] = await top.which_children()
        assert mid_info.supervisor is not None
        inner = await pids(mid_info.supervisor)
        kit.make_exit(inner["flaky"], "error")
        mid_exit = await exits.wait(mid_info.pid)
        assert mid_exit.kind == "shutdown" and "reached_max_restart_intensity" in str(mid_exit.detail)
        top_exit = await top.wait()
        assert top_exit.kind == "shutdown" and "child 'mid' failed to restart" in str(top_exit.detail)
        assert not kit.alive(inner["ok"]) and not kit.alive(sibling.pid)
        assert system.actors() == []


# -- A20: another child fails during a group restart -------------------------------------------------------------


async def test_a20_one_for_all_other_child_fails_restart(kit: Kit, exits: Exits) -> None:
    async with ActorSystem() as system:
        log: list[Any] = []
        b_start = Gate(recording(kit.start(), "b", log), ["ok", "fail"], default="ok")
        sup = await start_supervisor(system, SupFlags("one_for_all", intensity=3),
                                     [ChildSpec("a", recording(kit.start(), "a", log)), ChildSpec("b", b_start)],
                                     on_child_exit=exits)
        before = await pids(sup)
        kit.make_exit(before["a"], "killed")
        await eventually(lambda: all_changed(sup, before, "ab"), "the group restart to be retried")
        # a was started three times: the second incarnation was stopped (shutdown)
        # when b failed, never left running beside a missing b.
        assert log == [("start", "a"), ("start", "b"), ("start", "a"), ("start", "a"), ("start", "b")]
        second_a = [p for _, p, e in exits.events if p not in before.values()]
        assert len(second_a) == 1 and exits.of(second_a[0]) == SHUTDOWN
        after = await pids(sup)
        assert after["a"] != second_a[0] and kit.alive(after["a"]) and kit.alive(after["b"])
        await sup.stop()


async def test_a20_rest_for_one_other_child_fails_restart(kit: Kit, exits: Exits) -> None:
    """As OTP: the retry restarts the child that failed and those after it; the
    children before it (already restarted) do not depend on it and keep running."""
    async with ActorSystem() as system:
        log: list[Any] = []
        b_start = Gate(recording(kit.start(), "b", log), ["ok", "fail"], default="ok")
        sup = await start_supervisor(system, SupFlags("rest_for_one", intensity=3),
                                     [ChildSpec("a", recording(kit.start(), "a", log)), ChildSpec("b", b_start),
                                      ChildSpec("c", recording(kit.start(), "c", log))], on_child_exit=exits)
        before = await pids(sup)
        kit.make_exit(before["a"], "killed")
        await eventually(lambda: all_changed(sup, before, "abc"), "the restart to be retried")
        # a restarted once; b failed once (the gate raised before starting anything), then came back with c.
        assert log[3:] == [("start", "a"), ("start", "b"), ("start", "c")] and b_start.calls == 3
        after = await pids(sup)
        assert exits.of(after["a"]) is None and kit.alive(after["a"])  # restarted once, kept
        assert {p for _, p, _ in exits.events} == {before["a"], before["b"], before["c"]}
        await sup.stop()


# -- A21: sliding window ------------------------------------------------------------------------------------------


async def test_a21_multiple_restarts_spaced_beyond_the_period(kit: Kit, clock: FakeClock) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(intensity=1, period=1), [ChildSpec("a", kit.start())],
                                     clock=clock)
        for _ in range(5):
            old = (await pids(sup))["a"]
            kit.make_exit(old, "error")
            await eventually(lambda: changed(sup, "a", old), "the restart")
            clock.advance(1.5)  # the previous restart leaves the window
        assert sup.ref.is_alive
        assert [i.restarts for i in await sup.which_children()] == [5]
        await sup.stop()


# -- A24: restart loops never hang the supervisor -------------------------------------------------------------------


async def test_a24_hanging_restart_loop(kit: Kit, clock: FakeClock) -> None:
    async with ActorSystem() as system:
        flaky = Gate(kit.start(), ["ok"], default="fail")
        sup = await start_supervisor(system, SupFlags(intensity=100_000, period=3600),
                                     [ChildSpec("a", flaky), ChildSpec("b", kit.start())], clock=clock)
        kit.make_exit((await pids(sup))["a"], "error")
        await eventually(lambda: state_is(sup, "a", "restarting"), "a to show as restarting")
        infos = {i.id: i for i in await sup.which_children()}
        assert infos["a"].pid == "restarting"
        assert await sup.count_children() == Counts(specs=2, active=1, supervisors=0, workers=2)
        with pytest.raises(Restarting):
            await sup.restart_child("a")
        with pytest.raises(Restarting):
            await sup.delete_child("a")
        await sup.terminate_child("a")  # cancels the restart loop
        calls = flaky.calls
        assert await state_of(sup, "a") == "stopped"
        for _ in range(20):  # the loop is over: more messages, no more attempts
            assert await state_of(sup, "a") == "stopped"
        assert flaky.calls == calls
        flaky.default = "ok"
        assert kit.alive(await sup.restart_child("a"))
        flaky.default = "fail"
        kit.make_exit((await pids(sup))["a"], "killed")
        await eventually(lambda: state_is(sup, "a", "restarting"), "a to be restarting again")
        await sup.stop()  # shutdown completes while a restart is failing
        assert await sup.wait() == SHUTDOWN


async def test_a24_count_restarting_children_in_a_pool(kit: Kit, clock: FakeClock) -> None:
    async with ActorSystem() as system:
        template = Gate(kit.pool(), default="ok")
        sup = await start_supervisor(system, SupFlags("simple_one_for_one", intensity=100_000, period=3600),
                                     [ChildSpec("pool", template, shutdown="brutal_kill")], clock=clock)
        first, second, third = [await sup.start_child(("worker",)) for _ in range(3)]
        assert await sup.count_children() == Counts(specs=1, active=3, supervisors=0, workers=3)
        template.default = "fail"
        kit.make_exit(first, "killed")
        kit.make_exit(second, "killed")

        async def restarting() -> int:
            return sum(1 for i in await sup.which_children() if i.pid == "restarting")

        await eventually(lambda: _eq(restarting(), 2), "two pool members restarting")
        assert await sup.count_children() == Counts(specs=1, active=1, supervisors=0, workers=3)
        await sup.terminate_child(first)  # by its last pid
        assert await sup.count_children() == Counts(specs=1, active=1, supervisors=0, workers=2)
        template.default = "ok"
        await eventually(lambda: running(sup, 2), "the last restarting member to come back")
        assert await sup.count_children() == Counts(specs=1, active=2, supervisors=0, workers=2)
        assert third in {i.pid for i in await sup.which_children()}
        await sup.stop()


async def _eq(value: Any, expected: Any) -> bool:
    return await value == expected


# -- A25: a child that ignores its stop ----------------------------------------------------------------------------


async def test_a25_child_unlink_mailbox_keeps_draining(kit: Kit, exits: Exits) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(intensity=5),
                                     [ChildSpec("naughty", kit.start("stubborn"), shutdown="infinity"),
                                      ChildSpec("w", kit.start())], on_child_exit=exits)
        before = await pids(sup)
        await kit.ready(before["naughty"])
        terminating = asyncio.ensure_future(sup.terminate_child("naughty"))
        # While that stop is pending, the supervisor answers and restarts other children.
        assert (await state_of(sup, "naughty")) == "running"
        assert (await sup.count_children()).active == 2
        kit.make_exit(before["w"], "killed")
        await eventually(lambda: changed(sup, "w", before["w"]), "w to be restarted meanwhile")
        assert not terminating.done() and kit.alive(before["naughty"])
        kit.make_exit(before["naughty"], "killed")
        await terminating
        assert exits.of(before["naughty"]) == KILLED
        assert await state_of(sup, "naughty") == "stopped"
        await sup.stop()


# -- backoff --------------------------------------------------------------------------------------------------------


async def test_backoff_restart_is_scheduled_not_slept(kit: Kit) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(intensity=5, backoff=Backoff(3600, cap=3600)),
                                     [ChildSpec("a", kit.start()), ChildSpec("b", kit.start())])
        before = await pids(sup)
        kit.make_exit(before["a"], "error")
        await eventually(lambda: state_is(sup, "a", "restarting"), "a to wait for its delayed restart")
        # The supervisor still handles everything else.
        assert await sup.count_children() == Counts(specs=2, active=1, supervisors=0, workers=2)
        kit.make_exit(before["b"], "error")
        await eventually(lambda: state_is(sup, "b", "restarting"), "b to wait too")
        await sup.terminate_child("a")  # cancels a's pending restart
        assert await state_of(sup, "a") == "stopped"
        await sup.stop()  # pending timers do not hold the shutdown


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all"])
async def test_backoff_restart_happens_after_the_delay(kit: Kit, exits: Exits, strategy: str) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(strategy, intensity=5, backoff=Backoff(0.01)),
                                     [ChildSpec("a", kit.start()), ChildSpec("b", kit.start())], on_child_exit=exits)
        before = await pids(sup)
        kit.make_exit(before["a"], "error")
        keys = "ab" if strategy == "one_for_all" else "a"
        await eventually(lambda: all_changed(sup, before, keys), "the delayed restart")
        if strategy == "one_for_all":
            assert exits.of(before["b"]) == SHUTDOWN
        await sup.stop()


async def test_backoff_grows_per_consecutive_restart_and_resets_after_a_long_run(
        actor_kit: Kit, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="actorq.supervisors.supervisor")
    kit = actor_kit
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(intensity=100, period=10, backoff=Backoff(100, 2, 1000)),
                                     [ChildSpec("a", kit.start())], clock=clock)
        delays = []
        for run_for in (0, 0, 10, 0):
            clock.advance(run_for)
            kit.make_exit((await pids(sup))["a"], "error")
            await eventually(lambda: state_is(sup, "a", "restarting"), "the delayed restart")
            delays.append([r.getMessage() for r in caplog.records if " in " in r.getMessage()][-1].split()[-2])
            await sup.terminate_child("a")
            await sup.restart_child("a")
        assert delays == ["100", "200", "100", "200"]
        await sup.stop()
