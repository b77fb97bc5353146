"""Starting, stopping and administering supervisors (ACCEPTANCE A1-A5, A8-A11).

Each test runs once with actor children and once with OS-process children
(the ``kit`` fixture), except A2 and A3, whose outcome is decided before any
child exists or by the start function itself. OTP's ``extra_return`` (A11:
``{ok, Pid, Extra}``) has no counterpart: a start function returns a child or
IGNORE, nothing else. Outcomes are asserted (pids, exit reasons, counts,
which_children), never timings.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from actorq import ActorStopped, ActorSystem
from actorq.supervisors import (
    IGNORE,
    KILLED,
    SHUTDOWN,
    AlreadyPresent,
    AlreadyStarted,
    ChildSpec,
    Counts,
    Exit,
    NotFound,
    NotSupported,
    Running,
    StartFailed,
    SupFlags,
    start_supervisor,
)

from supkit import Exits, Gate, Kit, eventually, pids, recording

from actorq.testing import live_children

pytestmark = pytest.mark.timeout(60)


# -- A1-A5: starting ---------------------------------------------------------------------------------


async def test_a1_sup_start_normal_and_stop_cleanly(kit: Kit) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(), [ChildSpec("a", kit.start()), ChildSpec("b", kit.start())])
        infos = await sup.which_children()
        assert [(i.id, i.state, i.restarts) for i in infos] == [("a", "running", 0), ("b", "running", 0)]
        assert await sup.count_children() == Counts(specs=2, active=2, supervisors=0, workers=2)
        children = [i.pid for i in infos]
        assert all(kit.alive(p) for p in children)
        await sup.stop()
        assert await sup.wait() == SHUTDOWN
        assert not any(kit.alive(p) for p in children)
        assert system.actors() == []
        with pytest.raises(ActorStopped):
            await sup.which_children()
    assert live_children() == []


async def test_a2_sup_start_ignore_init(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    started: list[Any] = []

    async def never(*args: Any) -> Any:
        started.append(args)
        return IGNORE

    async def async_init() -> Any:
        return IGNORE

    async with ActorSystem() as system:
        for init in (lambda: IGNORE, async_init):
            result = await start_supervisor(system, SupFlags(), [ChildSpec("a", never)], init=init)
            assert result is IGNORE
        assert system.actors() == [] and started == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a3_sup_start_ignore_child_permanent_kept_temporary_dropped(kit: Kit) -> None:
    async with ActorSystem() as system:
        specs = [
            ChildSpec("ignored", Gate(kit.start(), ["ignore"])),
            ChildSpec("ignored_temp", Gate(kit.start(), ["ignore"]), restart="temporary"),
            ChildSpec("runs", kit.start()),
        ]
        sup = await start_supervisor(system, SupFlags(), specs)
        assert [(i.id, i.pid, i.state) for i in await sup.which_children()][0] == ("ignored", None, "stopped")
        assert [i.id for i in await sup.which_children()] == ["ignored", "runs"]
        assert await sup.count_children() == Counts(specs=2, active=1, supervisors=0, workers=2)
        # The same through start_child.
        assert await sup.start_child(ChildSpec("later", Gate(kit.start(), ["ignore"]))) is None
        assert await sup.start_child(ChildSpec("later_temp", Gate(kit.start(), ["ignore"]), restart="temporary")) \
            is None
        assert [i.id for i in await sup.which_children()] == ["ignored", "runs", "later"]
        with pytest.raises(AlreadyPresent):
            await sup.start_child(ChildSpec("later", kit.start()))
        await sup.stop()


async def test_a4_sup_start_error_return_and_fail_carry_the_reason() -> None:
    async def start(*args: Any) -> Any:
        return IGNORE

    async with ActorSystem() as system:
        with pytest.raises(StartFailed) as info:
            await start_supervisor(system, SupFlags(), [ChildSpec("a", start)], init=lambda: "nonsense")
        assert info.value.child_id is None and "nonsense" in str(info.value.reason)

        def bad_init() -> Any:
            raise LookupError("no config")

        with pytest.raises(StartFailed) as info:
            await start_supervisor(system, SupFlags(), [], init=bad_init)
        assert isinstance(info.value.reason, LookupError) and info.value.__cause__ is info.value.reason

        with pytest.raises(StartFailed) as info:
            await start_supervisor(system, SupFlags(), [], init=lambda: (SupFlags(), [ChildSpec("x", start)] * 2))
        assert "duplicate" in str(info.value.reason)

        async def returns_junk(*args: Any) -> Any:
            return 42

        with pytest.raises(StartFailed) as info:
            await start_supervisor(system, SupFlags(), [ChildSpec("junk", returns_junk)])
        assert info.value.child_id == "junk" and "42" in str(info.value.reason)
        assert system.actors() == []


async def test_a4_a_failing_child_start_stops_the_started_ones_nothing_leaks(kit: Kit, exits: Exits) -> None:
    async with ActorSystem() as system:
        specs = [ChildSpec("a", kit.start()), ChildSpec("b", kit.start()), ChildSpec("bad", kit.failing()),
                 ChildSpec("never", kit.start())]
        with pytest.raises(StartFailed) as info:
            await start_supervisor(system, SupFlags(), specs, on_child_exit=exits)
        assert info.value.child_id == "bad"
        assert isinstance(info.value.reason, (RuntimeError, OSError))
        # a and b were started, then stopped in reverse order; "never" was never started.
        assert [e[0] for e in exits.events] == ["b", "a"]
        assert all(e[2] == SHUTDOWN for e in exits.events)
        assert system.actors() == []
    assert live_children() == []


async def test_a5_start_child_and_restart_child_return_the_error(kit: Kit) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(), [])
        with pytest.raises(StartFailed) as info:
            await sup.start_child(ChildSpec("bad", kit.failing()))
        assert info.value.child_id == "bad"
        assert await sup.which_children() == []  # the spec was not added
        flaky = Gate(kit.start(), ["ok"], default="fail")
        pid = await sup.start_child(ChildSpec("flaky", flaky))
        assert kit.alive(pid)
        await sup.terminate_child("flaky")
        with pytest.raises(StartFailed) as info:
            await sup.restart_child("flaky")
        assert isinstance(info.value.reason, RuntimeError)
        [child] = await sup.which_children()
        assert (child.id, child.pid, child.state) == ("flaky", None, "stopped")
        await sup.stop()


# -- A8, A9: shutdown ----------------------------------------------------------------------------------


async def test_a8_stop_timeout_kills_stubborn_child_brutal_kill_kills_at_once(kit: Kit, exits: Exits) -> None:
    async with ActorSystem() as system:
        specs = [
            ChildSpec("graceful", kit.start(), shutdown=30),
            ChildSpec("stubborn", kit.start("stubborn"), shutdown=0.2),
            ChildSpec("brutal", kit.start(), shutdown="brutal_kill"),
        ]
        sup = await start_supervisor(system, SupFlags(), specs, on_child_exit=exits)
        for pid in (await pids(sup)).values():
            await kit.ready(pid)
        await sup.stop()
        # Reverse start order; each keeps the reason it really exited with.
        assert [(child_id, exit) for child_id, _, exit in exits.events] == [
            ("brutal", KILLED), ("stubborn", KILLED), ("graceful", SHUTDOWN)]


async def test_a8_stop_infinity_waits_for_the_child(kit: Kit, exits: Exits) -> None:
    async with ActorSystem() as system:
        specs = [ChildSpec("patient", kit.start("stubborn"), shutdown="infinity"), ChildSpec("other", kit.start())]
        sup = await start_supervisor(system, SupFlags(), specs, on_child_exit=exits)
        children = await pids(sup)
        await kit.ready(children["patient"])
        stopping = asyncio.ensure_future(sup.stop())
        assert await exits.wait(children["other"]) == SHUTDOWN
        # Nothing but the child's own death can end an infinite wait.
        assert kit.alive(children["patient"]) and not stopping.done()
        kit.make_exit(children["patient"], "killed")
        await stopping
        assert exits.of(children["patient"]) == KILLED
        assert await sup.wait() == SHUTDOWN


@pytest.mark.parametrize("strategy", ["one_for_one", "simple_one_for_one"])
async def test_a9_sup_stop_race_children_keep_their_own_exit_reasons(kit: Kit, exits: Exits, strategy: str) -> None:
    """Children that exit by themselves while the supervisor shuts down: each exit is
    reported with its own reason, and the shutdown completes."""
    async with ActorSystem() as system:
        gate = asyncio.Event()
        if kit.kind == "actor":
            plan = {"n": "normal", "s": ("shutdown", "own"), "e": "error"}
            expected = {"n": Exit("normal"), "s": Exit("shutdown", "own")}
        else:  # a process exits on SIGTERM with a code of its own choosing
            plan = {"n": "term_exit:0", "s": "term_exit:7", "e": "term_exit:3"}
            expected = {"n": SHUTDOWN, "s": Exit("error", "exit code 7"), "e": Exit("error", "exit code 3")}
        flags = SupFlags(strategy)
        if strategy == "one_for_one":
            mode = "worker" if kit.kind == "actor" else None
            specs = [ChildSpec(key, kit.start(mode or how), shutdown=30) for key, how in plan.items()]
            sup = await start_supervisor(system, flags, specs, on_child_exit=exits)
            by_key = await pids(sup)
        else:
            sup = await start_supervisor(system, flags, [ChildSpec("pool", kit.pool(), shutdown=30)],
                                         on_child_exit=exits)
            by_key = {}
            for key, how in plan.items():
                by_key[key] = await sup.start_child(("worker",) if kit.kind == "actor" else (how,))
        for key, pid in by_key.items():
            await kit.ready(pid)
            if kit.kind == "actor":
                pid.tell(("exit_when", plan[key], gate))
        stopping = asyncio.ensure_future(sup.stop())
        await eventually(lambda: sup.ref.exit_reason is not None, "the supervisor to start its shutdown")
        gate.set()
        await stopping
        got = {key: exits.of(pid) for key, pid in by_key.items()}
        assert got["n"] == expected["n"] and got["s"] == expected["s"]
        assert got["e"] is not None and got["e"].kind == "error", got
        assert await sup.wait() == SHUTDOWN


# -- A10: order ------------------------------------------------------------------------------------------


async def test_a10_order_of_children(kit: Kit, exits: Exits) -> None:
    async with ActorSystem() as system:
        log: list[Any] = []
        specs = [ChildSpec(key, recording(kit.start(), key, log)) for key in ("a", "b", "c", "d")]
        sup = await start_supervisor(system, SupFlags("rest_for_one", intensity=5), specs, on_child_exit=exits)
        assert log == [("start", k) for k in "abcd"]
        before = await pids(sup)
        log.clear()
        kit.make_exit(before["b"], "killed")
        await eventually(lambda: _all_new(sup, before, "bcd"), "b, c and d to be restarted")
        # The tail is stopped newest first, then restarted in order.
        assert [e[0] for e in exits.events] == ["b", "d", "c"]
        assert log == [("start", k) for k in "bcd"]
        exits.events.clear()
        await sup.stop()
        assert [e[0] for e in exits.events] == ["d", "c", "b", "a"]


async def _all_new(sup: Any, before: dict[str, Any], keys: str) -> bool:
    now = await pids(sup)
    infos = await sup.which_children()
    return all(now[k] not in (before[k], None, "restarting") for k in keys) and \
        all(i.state == "running" for i in infos)


# -- A11: admin calls ----------------------------------------------------------------------------------------


async def test_a11_child_adm(kit: Kit) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(), [ChildSpec("a", kit.start())])
        spec = ChildSpec("c", kit.start())
        pid = await sup.start_child(spec)
        with pytest.raises(AlreadyStarted) as started:
            await sup.start_child(spec)
        assert started.value.pid == pid
        await sup.terminate_child("c")
        assert not kit.alive(pid)
        await sup.terminate_child("c")  # idempotent
        with pytest.raises(AlreadyPresent):
            await sup.start_child(spec)
        infos = {i.id: i for i in await sup.which_children()}
        assert (infos["c"].pid, infos["c"].state) == (None, "stopped")
        assert await sup.count_children() == Counts(specs=2, active=1, supervisors=0, workers=2)
        new_pid = await sup.restart_child("c")
        assert new_pid != pid and kit.alive(new_pid)
        assert {i.id: i.restarts for i in await sup.which_children()} == {"a": 0, "c": 1}
        with pytest.raises(Running):
            await sup.restart_child("c")
        with pytest.raises(Running):
            await sup.delete_child("c")
        await sup.terminate_child("c")
        await sup.delete_child("c")
        for call in (sup.terminate_child, sup.restart_child, sup.delete_child):
            with pytest.raises(NotFound):
                await call("c")
        # A temporary child's spec goes away with terminate_child.
        await sup.start_child(ChildSpec("t", kit.start(), restart="temporary"))
        await sup.terminate_child("t")
        assert [i.id for i in await sup.which_children()] == ["a"]
        with pytest.raises(TypeError):
            await sup.start_child(("extra",))
        await sup.stop()


async def test_a11_child_adm_simple(kit: Kit, exits: Exits) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags("simple_one_for_one"), [ChildSpec("pool", kit.pool())],
                                     on_child_exit=exits)
        assert await sup.count_children() == Counts(specs=1, active=0, supervisors=0, workers=0)
        first = await sup.start_child(("worker",))
        second = await sup.start_child(("worker",))
        assert first != second
        assert [(i.id, i.pid) for i in await sup.which_children()] == [("pool", first), ("pool", second)]
        assert await sup.count_children() == Counts(specs=1, active=2, supervisors=0, workers=2)
        await sup.terminate_child(first)
        assert exits.of(first) == SHUTDOWN
        assert [i.pid for i in await sup.which_children()] == [second]  # forgotten, not restarted
        await sup.terminate_child(first)  # already gone: a no-op
        with pytest.raises(NotSupported):
            await sup.terminate_child("pool")
        with pytest.raises(NotSupported):
            await sup.restart_child("pool")
        with pytest.raises(NotSupported):
            await sup.delete_child("pool")
        with pytest.raises(TypeError):
            await sup.start_child(ChildSpec("x", kit.start()))
        await sup.stop()
        assert exits.of(second) == SHUTDOWN
