"""Pools and trees (ACCEPTANCE A22, A23, A26, A27, A28).

A22 (the dynamic pool's shutdown), A23 (nested supervisors) and A28
(significant children) run on actor and process children. A26 (temporary
children's start args are not kept) measures the supervisor's own state with
tracemalloc, so its children are actors that drop their args: the kind of
child does not change what the supervisor keeps. A27 is about actor names
and refs; OS pids are never reused by a supervisor, so it has no process form.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest
from supkit import Exits, FakeClock, Gate, Kit, TestActor, eventually, pids, running

from actorq import ActorSystem
from actorq.supervisors import (
    KILLED,
    SHUTDOWN,
    ChildSpec,
    Counts,
    SupFlags,
    actor_start,
    start_supervisor,
    supervisor_spec,
)

pytestmark = pytest.mark.timeout(60)


# -- A22: the dynamic pool ---------------------------------------------------------------------------------------


async def test_a22_pool_shutdown_stops_all_then_kills_the_overrunners(kit: Kit, exits: Exits) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags("simple_one_for_one"),
                                     [ChildSpec("pool", kit.pool(), shutdown=0.3)], on_child_exit=exits)
        modes = ["worker", "stubborn", "worker", "stubborn", "worker"]
        members = [await sup.start_child((mode,)) for mode in modes]
        for pid in members:
            await kit.ready(pid)
        assert await sup.count_children() == Counts(specs=1, active=5, supervisors=0, workers=5)
        await sup.stop()
        assert [exits.of(pid) for pid in members] == [SHUTDOWN, KILLED, SHUTDOWN, KILLED, SHUTDOWN]
        assert not any(kit.alive(pid) for pid in members)


async def test_a22_pool_restarts_a_failed_member_with_its_own_args(kit: Kit) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags("simple_one_for_one", intensity=3),
                                     [ChildSpec("pool", kit.pool())])
        first = await sup.start_child(("worker",))
        second = await sup.start_child(("worker",))
        kit.make_exit(first, "killed")

        async def replaced() -> bool:
            now = [i.pid for i in await sup.which_children()]
            return len(now) == 2 and first not in now and second in now and await running(sup)

        await eventually(replaced, "the failed member to be replaced")
        await sup.stop()


# -- A23: a tree ----------------------------------------------------------------------------------------------------


async def test_a23_tree(kit: Kit, clock: FakeClock) -> None:
    async with ActorSystem() as system:
        sup1 = supervisor_spec("sup1", SupFlags("one_for_one", intensity=4, period=3600),
                               [ChildSpec("c1", kit.start()), ChildSpec("c2", kit.start())], clock=clock)
        sup2 = supervisor_spec("sup2", SupFlags("one_for_one", intensity=1, period=3600), [], clock=clock)
        top = await start_supervisor(system, SupFlags("one_for_all", intensity=4, period=3600), [sup1, sup2],
                                     clock=clock)
        assert await top.count_children() == Counts(specs=2, active=2, supervisors=2, workers=0)
        infos = await top.which_children()
        s1, s2 = (info.supervisor for info in infos)
        assert s1 is not None and s2 is not None and [i.type for i in infos] == ["supervisor", "supervisor"]
        c1c2 = await pids(s1)
        c3 = await s2.start_child(ChildSpec("c3", Gate(kit.start(), ["ok"], default="fail")))
        c4 = await s2.start_child(ChildSpec("c4", kit.start()))
        # A failure inside sup2 restarts only there.
        kit.make_exit(c4, "error")
        await eventually(lambda: _changed(s2, "c4", c4), "c4 to be restarted inside sup2")
        assert (await pids(s2))["c3"] == c3 and await pids(s1) == c1c2
        assert [i.pid for i in await top.which_children()] == [s1.ref, s2.ref]
        # c3 cannot restart: sup2 gives up, and the top (one_for_all) restarts the tree.
        kit.make_exit(c3, "error")
        await s2.wait()
        await eventually(lambda: _new_supervisors(top, (s1, s2)), "the top to restart both supervisors")
        new1, new2 = (info.supervisor for info in await top.which_children())
        assert new1 is not None and new2 is not None
        assert await top.count_children() == Counts(specs=2, active=2, supervisors=2, workers=0)
        # Static children come back; dynamically added ones do not.
        assert [i.id for i in await new1.which_children()] == ["c1", "c2"] and await running(new1, 2)
        assert await new2.which_children() == []
        assert not any(kit.alive(p) for p in (*c1c2.values(), c3, c4))
        await top.stop()


async def _changed(sup: Any, child_id: str, old: Any) -> bool:
    info = {i.id: i for i in await sup.which_children()}.get(child_id)
    return info is not None and info.state == "running" and info.pid != old


async def _new_supervisors(top: Any, old: tuple[Any, ...]) -> bool:
    infos = await top.which_children()
    return all(i.state == "running" and i.supervisor not in old for i in infos)


# -- A26: temporary children's args are not kept ---------------------------------------------------------------------


class Idle(TestActor):
    """Keeps nothing of its start args."""

    def __init__(self, *args: Any) -> None:
        super().__init__()


async def _retained_by_supervisor(system: ActorSystem, strategy: str, restart: str) -> int:
    """Bytes still allocated after starting 100 children with 20 kB of unique args each."""
    gc.collect()
    baseline = tracemalloc.get_traced_memory()[0]
    if strategy == "simple_one_for_one":
        sup = await start_supervisor(system, SupFlags(strategy), [ChildSpec("pool", actor_start(Idle),
                                                                            restart=restart)])
        for n in range(100):
            await sup.start_child((bytes(20_000) + n.to_bytes(2, "big"),))
    else:
        sup = await start_supervisor(system, SupFlags(strategy), [])
        for n in range(100):
            await sup.start_child(ChildSpec(f"c{n}", actor_start(Idle), args=(bytes(20_000) + n.to_bytes(2, "big"),),
                                            restart=restart))
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - baseline
    assert (await sup.count_children()).active == 100
    await sup.stop()
    return retained


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"])
async def test_a26_do_not_save_start_parameters_for_temporary_children(strategy: str) -> None:
    tracemalloc.start()
    try:
        async with ActorSystem() as system:
            sizes = {restart: await _retained_by_supervisor(system, strategy, restart)
                     for restart in ("permanent", "transient", "temporary")}
    finally:
        tracemalloc.stop()
    args_total = 100 * 20_000
    assert sizes["temporary"] < sizes["permanent"] and sizes["temporary"] < sizes["transient"], sizes
    # The permanent and transient supervisors hold every child's args; the temporary one none
    # (what it does hold is the children themselves: actors, tasks, mailboxes).
    assert sizes["permanent"] - sizes["temporary"] > 0.9 * args_total, sizes
    assert sizes["transient"] - sizes["temporary"] > 0.9 * args_total, sizes


# -- A27: names resolve to the restarted incarnations ----------------------------------------------------------------


async def test_a27_simple_global_supervisor_names_resolve_after_restart() -> None:
    async with ActorSystem() as system:
        mid = supervisor_spec("mid", SupFlags("one_for_one"), [ChildSpec("w", actor_start(TestActor, name="worker"))],
                              name="mid")
        top = await start_supervisor(system, SupFlags("one_for_one", intensity=2), [mid], name="top")
        assert system.whereis("top") == top.ref
        old_mid, old_worker = system.whereis("mid"), system.whereis("worker")
        assert old_mid is not None and old_worker is not None
        system.exit(old_mid, "kill")  # killing a mid-level supervisor

        def restarted() -> bool:
            new_mid, new_worker = system.whereis("mid"), system.whereis("worker")
            return new_mid not in (None, old_mid) and new_worker not in (None, old_worker)

        await eventually(restarted, "mid and its worker to come back under the same names")
        assert not old_mid.is_alive and not old_worker.is_alive
        [info] = await top.which_children()
        assert info.pid == info.ref == system.whereis("mid") and info.restarts == 1
        assert info.supervisor is not None and (await pids(info.supervisor))["w"] == system.whereis("worker")
        assert await system.whereis("worker").ask("ping") == "ping"  # type: ignore[union-attr]
        await top.stop()


# -- A28: significant children ---------------------------------------------------------------------------------------


async def test_a28_any_significant_normal_exit_stops_the_supervisor(kit: Kit, exits: Exits) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(auto_shutdown="any_significant", intensity=3),
                                     [ChildSpec("other", kit.start()),
                                      ChildSpec("sig", kit.start(), restart="transient", significant=True)],
                                     on_child_exit=exits)
        before = await pids(sup)
        kit.make_exit(before["sig"], "error")  # abnormal: restarted, no auto shutdown
        await eventually(lambda: _changed(sup, "sig", before["sig"]), "the significant child to be restarted")
        await sup.terminate_child("sig")  # stopped by the supervisor itself: no auto shutdown either
        assert sup.ref.is_alive
        sig = await sup.restart_child("sig")
        kit.make_exit(sig, "normal")
        exit = await sup.wait()
        assert exit.kind == "shutdown" and "auto_shutdown" in str(exit.detail)
        assert exits.of(before["other"]) == SHUTDOWN


async def test_a28_all_significant_waits_for_the_last_one(kit: Kit) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(auto_shutdown="all_significant"),
                                     [ChildSpec("s1", kit.start(), restart="transient", significant=True),
                                      ChildSpec("s2", kit.start(), restart="temporary", significant=True),
                                      ChildSpec("other", kit.start())])
        before = await pids(sup)
        kit.make_exit(before["s1"], "normal")
        await eventually(lambda: _state(sup, "s1", "stopped"), "s1 to be stopped")
        assert sup.ref.is_alive
        kit.make_exit(before["s2"], "error")  # temporary: any exit counts
        assert (await sup.wait()).kind == "shutdown"
        assert not kit.alive(before["other"])


async def _state(sup: Any, child_id: str, state: str) -> bool:
    return any(i.id == child_id and i.state == state for i in await sup.which_children())
