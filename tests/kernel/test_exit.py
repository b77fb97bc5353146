"""Kernel additions that supervision needs: exit signals, `whereis`, monitors, owned actors.

`ActorSystem.exit` is OTP's ``exit/2`` (``"kill"`` cancels, ``"normal"`` is ignored
unless self-sent, any other reason stops the actor with it); `whereis` resolves a
name to the running incarnation (A27 relies on it); actors spawned inside
`owned_by` are left to their owner when the system stops. Nothing here asserts a
timing: waits are on futures or events, under pytest-timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actorq import Actor, ActorStopped, ActorSystem
from actorq._kernel.system import current_owner, owned_by

pytestmark = pytest.mark.timeout(30)


class Recorder(Actor):
    def __init__(self, log: list[Any], label: str = "") -> None:
        self.log = log
        self.label = label

    def on_receive(self, message: Any) -> None:
        self.log.append((self.label, message))

    def on_ask(self, message: Any) -> Any:
        return message

    def on_stop(self) -> None:
        self.log.append((self.label, "on_stop", self.ref.exit_reason))


class Blocked(Actor):
    """Its handler waits on `gate`, so it does not see stop requests meanwhile."""

    def __init__(self, gate: asyncio.Event, log: list[Any]) -> None:
        self.gate = gate
        self.log = log

    async def on_receive(self, message: Any) -> None:
        self.log.append(("got", message))
        await self.gate.wait()
        self.log.append(("done", message))

    def on_stop(self) -> None:
        self.log.append(("on_stop", self.ref.exit_reason))


async def until(predicate: Any, what: str, deadline: float = 10.0) -> None:
    """Yield to the loop until `predicate()` holds; fail naming `what` after `deadline` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        if loop.time() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class HangingStop(Actor):
    async def on_stop(self) -> None:
        await asyncio.Event().wait()  # never returns unless cancelled


async def test_exit_kill_cancels_at_once_and_runs_on_stop() -> None:
    async with ActorSystem() as system:
        gate = asyncio.Event()
        log: list[Any] = []
        ref = await system.spawn(Blocked, gate, log)
        ref.tell("stuck")
        await until(lambda: log == [("got", "stuck")], "the handler to start")
        system.exit(ref, "kill")
        assert await ref.wait_stopped() == "killed"
        assert ("done", "stuck") not in log
        assert log[-1] == ("on_stop", "killed")


async def test_exit_normal_from_outside_is_ignored_but_self_sent_stops_normally() -> None:
    class SelfExit(Actor):
        def on_receive(self, message: Any) -> None:
            if message == "exit":
                self.system.exit(self.ref, "normal")

        def on_ask(self, message: Any) -> Any:
            return message

    async with ActorSystem() as system:
        ref = await system.spawn(SelfExit)
        system.exit(ref, "normal")
        assert await ref.ask("still here") == "still here"
        ref.tell("exit")
        assert await ref.wait_stopped() == "normal"


async def test_exit_with_a_reason_jumps_the_queue_drops_messages_and_fails_asks() -> None:
    async with ActorSystem() as system:
        gate = asyncio.Event()
        log: list[Any] = []
        ref = await system.spawn(Blocked, gate, log)
        ref.tell("first")
        await until(lambda: log == [("got", "first")], "the first message to be handled")
        ref.tell("queued")
        pending_ask = asyncio.ensure_future(ref.ask("queued ask"))
        await asyncio.sleep(0)
        reason = ("shutdown", "maintenance")
        system.exit(ref, reason)
        with pytest.raises(ActorStopped):
            ref.tell("after exit")
        gate.set()
        assert await ref.wait_stopped() == reason
        assert log == [("got", "first"), ("done", "first"), ("on_stop", reason)]
        with pytest.raises(ActorStopped):
            await pending_ask


async def test_first_reason_wins_but_kill_overrides_a_hanging_on_stop() -> None:
    async with ActorSystem() as system:
        ref = await system.spawn(HangingStop)
        system.exit(ref, "first")
        system.exit(ref, "second")  # already stopping: ignored
        await until(lambda: ref.exit_reason is not None, "the actor to reach on_stop")
        assert ref.is_alive and ref.exit_reason == "first"  # in on_stop, reason decided
        system.exit(ref, "kill")
        assert await ref.wait_stopped() == "killed"


async def test_kill_before_the_actor_ran_still_finishes_it() -> None:
    async with ActorSystem() as system:
        ref = await system.spawn(Recorder, [])
        cell = ref._cell
        system.exit(ref, "kill")
        system.exit(ref, "kill")
        assert await ref.wait_stopped() == "killed"
        assert cell.stopped.done()
        assert system.whereis(ref.name) is None


async def test_exit_from_another_thread() -> None:
    async with ActorSystem() as system:
        ref = await system.spawn(Recorder, [])
        await asyncio.to_thread(system.exit, ref, "boom")
        assert await ref.wait_stopped() == "boom"


async def test_whereis_resolves_names_to_the_running_incarnation() -> None:
    async with ActorSystem() as system:
        assert system.whereis("svc") is None
        first = await system.spawn(Recorder, [], name="svc")
        assert system.whereis("svc") == first
        system.exit(first, "kill")
        await first.wait_stopped()
        assert system.whereis("svc") is None
        second = await system.spawn(Recorder, [], name="svc")
        assert system.whereis("svc") == second != first


async def test_monitor_reports_the_exit_reason_even_after_the_fact() -> None:
    async with ActorSystem() as system:
        seen: list[object] = []
        ref = await system.spawn(Recorder, [])
        ref.monitor(seen.append)
        system.exit(ref, "gone")
        await ref.wait_stopped()
        ref.monitor(seen.append)  # already stopped: still called
        for _ in range(3):
            await asyncio.sleep(0)
        assert seen == ["gone", "gone"]


async def test_system_stop_leaves_owned_actors_to_their_owner() -> None:
    """The owner stops first and stops what it owns; the system does not stop those first."""

    class Owner(Actor):
        def __init__(self, log: list[Any]) -> None:
            self.log = log
            self.children: list[Any] = []

        async def on_ask(self, message: Any) -> Any:
            with owned_by(self.ref):
                assert current_owner() == self.ref
                for label in ("c1", "c2"):
                    self.children.append(await self.system.spawn(Recorder, self.log, label))
            assert current_owner() is None
            return len(self.children)

        async def on_stop(self) -> None:
            self.log.append(("owner", "on_stop", self.ref.exit_reason))
            for child in reversed(self.children):
                self.system.exit(child, "shutdown")
                await child.wait_stopped()

    log: list[Any] = []
    async with ActorSystem() as system:
        await system.spawn(Recorder, log, "before")
        owner = await system.spawn(Owner, log)
        assert await owner.ask("start") == 2
        await system.spawn(Recorder, log, "after")
    assert log == [
        ("after", "on_stop", "shutdown"),
        ("owner", "on_stop", "shutdown"),
        ("c2", "on_stop", "shutdown"),
        ("c1", "on_stop", "shutdown"),
        ("before", "on_stop", "shutdown"),
    ]


async def test_actors_spawned_by_an_owned_actor_are_not_owned() -> None:
    class Spawner(Actor):
        async def on_ask(self, message: Any) -> Any:
            ref = await self.system.spawn(Recorder, [])
            return ref._cell.owner

    async with ActorSystem() as system:
        top = await system.spawn(Recorder, [])
        with owned_by(top):
            spawner = await system.spawn(Spawner)
        assert spawner._cell.owner is top._cell
        assert await spawner.ask("go") is None
