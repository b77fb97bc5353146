"""Tests for the actor kernel (`actorq._kernel`): refs, mailboxes, the actor system.

ACCEPTANCE ids covered here: D7 (`ask` to a dead actor fails fast, an `ask` with
no reply times out instead of hanging) and A30 (start/stop stress: no deadlock,
no leaked threads or fds). Nothing here asserts a timing: waits are on futures,
events, or a bounded poll, and pytest-timeout bounds every test.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, Callable

import pytest

from actorq import Actor, ActorStopped, ActorSystem, AskTimeout, MailboxFull
from actorq._kernel.loop import run

pytestmark = pytest.mark.timeout(30)


def eventually(predicate: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Poll `predicate` until it is true; fail naming `what` after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


async def eventually_async(predicate: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """`eventually` for coroutines: yields to the loop between polls."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Recorder(Actor):
    """Records every message it is told; `ask("log")` returns the record."""

    def __init__(self, log: list[Any] | None = None, label: str = "") -> None:
        self.log = log if log is not None else []
        self.label = label

    def on_receive(self, message: Any) -> None:
        self.log.append(message)

    def on_ask(self, message: Any) -> Any:
        if message == "log":
            return list(self.log)
        return message

    def on_stop(self) -> None:
        self.log.append(("on_stop", self.label))


class Echo(Actor):
    def on_ask(self, message: Any) -> Any:
        return message


class Gated(Actor):
    """Blocks in every hook call until `gate` is set (a stuck handler)."""

    def __init__(self, gate: asyncio.Event) -> None:
        self.gate = gate
        self.handled: list[Any] = []

    async def on_receive(self, message: Any) -> None:
        await self.gate.wait()
        self.handled.append(message)

    async def on_ask(self, message: Any) -> Any:
        await self.gate.wait()
        self.handled.append(message)
        return message


class Boom(Exception):
    pass


class Crashy(Actor):
    def __init__(self) -> None:
        self.stopped = False

    def on_ask(self, message: Any) -> Any:
        if message == "boom":
            raise Boom("asked to crash")
        return message

    def on_receive(self, message: Any) -> None:
        if message == "boom":
            raise Boom("told to crash")

    def on_stop(self) -> None:
        self.stopped = True


# -- tell and ask -------------------------------------------------------------------------


def test_tell_is_delivered_in_order() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            ref = await system.spawn(Recorder)
            for n in range(500):
                ref.tell(n)
            # The ask is queued behind the 500 tells, so it sees all of them.
            assert await ref.ask("log") == list(range(500))

    run(main())


def test_ask_returns_the_reply_sync_and_async_hooks() -> None:
    class AsyncEcho(Actor):
        async def on_ask(self, message: Any) -> Any:
            await asyncio.sleep(0)
            return ("async", message)

    async def main() -> None:
        async with ActorSystem() as system:
            echo = await system.spawn(Echo)
            async_echo = await system.spawn(AsyncEcho)
            assert await echo.ask({"a": 1}) == {"a": 1}
            assert await async_echo.ask(7) == ("async", 7)

    run(main())


def test_d7_ask_timeout_raises_ask_timeout_and_actor_survives() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            gate = asyncio.Event()
            actor = Gated(gate)
            ref = await system.spawn(actor)
            with pytest.raises(AskTimeout) as info:
                await ref.ask("stuck", timeout=0.05)
            assert isinstance(info.value, TimeoutError)  # AskTimeout is a TimeoutError too
            assert ref.is_alive
            gate.set()
            # The timed-out request is still handled (the ask only stopped waiting),
            # and a late reply to the abandoned future does not break the actor.
            assert await ref.ask("next") == "next"
            assert actor.handled == ["stuck", "next"]

    run(main())


def test_d7_ask_to_stopped_actor_raises_actor_stopped() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            ref = await system.spawn(Echo)
            assert await system.stop_actor(ref) == "shutdown"
            assert not ref.is_alive
            with pytest.raises(ActorStopped):
                await ref.ask("anyone?")
            with pytest.raises(ActorStopped):
                ref.tell("anyone?")

    run(main())


def test_exception_in_on_ask_reaches_asker_and_crashes_actor() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            actor = Crashy()
            ref = await system.spawn(actor)
            with pytest.raises(Boom) as info:
                await ref.ask("boom")
            reason = await ref.wait_stopped()
            assert reason is info.value
            assert ref.exit_reason is info.value
            assert not ref.is_alive
            assert actor.stopped, "on_stop runs after a crash too"
            assert ref not in system.actors()
            with pytest.raises(ActorStopped):
                await ref.ask("again")

    run(main())


def test_refs_to_the_same_actor_compare_equal() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            a = await system.spawn(Echo, name="a")
            b = await system.spawn(Echo, name="b")
            assert system.actors() == [a, b]
            assert a in system.actors() and hash(system.actors()[0]) == hash(a)
            assert a != b
            await system.stop_actor(a)
            assert system.actors() == [b]

    run(main())


def test_asks_queued_behind_a_crash_get_actor_stopped() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            ref = await system.spawn(Crashy)
            ref.tell("boom")  # crashes the actor when handled
            pending = [asyncio.ensure_future(ref.ask(n)) for n in range(3)]
            results = await asyncio.gather(*pending, return_exceptions=True)
            assert all(isinstance(r, ActorStopped) for r in results), results
            assert isinstance(ref.exit_reason, Boom)

    run(main())


def test_on_start_failure_makes_spawn_raise() -> None:
    class BadStart(Actor):
        def on_start(self) -> None:
            raise Boom("no start")

    class AsyncBadStart(Actor):
        async def on_start(self) -> None:
            await asyncio.sleep(0)
            raise Boom("no async start")

    async def main() -> None:
        async with ActorSystem() as system:
            with pytest.raises(Boom, match="no start"):
                await system.spawn(BadStart, name="worker")
            with pytest.raises(Boom, match="no async start"):
                await system.spawn(AsyncBadStart, name="worker")
            assert system.actors() == []
            # The name is free again: the failed actor left nothing behind.
            ref = await system.spawn(Echo, name="worker")
            assert await ref.ask(1) == 1

    run(main())


def test_spawn_sync_on_start_failure_raises_in_caller() -> None:
    class BadStart(Actor):
        def on_start(self) -> None:
            raise Boom("no start")

    with ActorSystem() as system:
        with pytest.raises(Boom):
            system.spawn_sync(BadStart)
        assert system.actors() == []


def test_duplicate_name_is_refused() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            await system.spawn(Echo, name="one")
            with pytest.raises(ValueError, match="one"):
                await system.spawn(Echo, name="one")

    run(main())


# -- mailboxes ------------------------------------------------------------------------------


def test_bounded_mailbox_raises_mailbox_full_on_loop_thread() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            log: list[Any] = []
            ref = await system.spawn(Recorder, log, mailbox_size=3)
            # No await between the tells, so the actor cannot take any of them yet.
            ref.tell(1)
            ref.tell(2)
            ref.tell(3)
            with pytest.raises(MailboxFull):
                ref.tell(4)
            with pytest.raises(MailboxFull):
                await ref.ask("log")
            await eventually_async(lambda: len(log) == 3, "the actor to drain its mailbox")
            # The refused messages were not queued; the accepted ones all arrive.
            assert await ref.ask("log") == [1, 2, 3]
            assert ref.is_alive

    run(main())


def test_bounded_mailbox_full_reaches_ask_sync_from_another_thread() -> None:
    with ActorSystem() as system:
        release = threading.Event()

        class Blocker(Actor):
            async def on_receive(self, message: Any) -> None:
                while not release.is_set():  # polls, so the loop stays free
                    await asyncio.sleep(0.005)

            def on_ask(self, message: Any) -> Any:
                return message

        ref = system.spawn_sync(Blocker, mailbox_size=2)
        ref.tell("hold")  # taken out of the mailbox and blocks the actor

        def queued() -> int:
            return system.call(_mailbox_len(ref))

        eventually(lambda: queued() == 0, "the actor to take the first message")
        ref.tell("a")
        ref.tell("b")
        eventually(lambda: queued() == 2, "two messages in the mailbox")
        with pytest.raises(MailboxFull):
            ref.ask_sync("c")
        release.set()
        eventually(lambda: queued() == 0, "the mailbox to drain")
        assert ref.ask_sync("done") == "done"


async def _mailbox_len(ref: Any) -> int:
    return len(ref._cell.mailbox)


# -- stopping -------------------------------------------------------------------------------


def test_stop_runs_queued_messages_then_on_stop() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            log: list[Any] = []
            ref = await system.spawn(Recorder, log, "r")
            for n in range(5):
                ref.tell(n)
            stop = asyncio.ensure_future(system.stop_actor(ref))
            await asyncio.sleep(0)  # let stop_actor queue its stop marker
            with pytest.raises(ActorStopped):
                ref.tell("after stop")
            assert await stop == "shutdown"
            assert log == [0, 1, 2, 3, 4, ("on_stop", "r")]
            # Stopping again is a no-op that returns the same reason.
            assert await system.stop_actor(ref) == "shutdown"
            assert log.count(("on_stop", "r")) == 1

    run(main())


def test_stop_actor_kills_a_stuck_actor_after_its_timeout() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            gate = asyncio.Event()  # never set: the handler never returns
            ref = await system.spawn(Gated, gate)
            ref.tell("stuck")
            assert await system.stop_actor(ref, timeout=0.05) == "killed"
            assert not ref.is_alive

    run(main())


def test_on_stop_failure_is_logged_not_fatal() -> None:
    class BadStop(Actor):
        def on_stop(self) -> None:
            raise Boom("stop failed")

    async def main() -> None:
        async with ActorSystem() as system:
            ref = await system.spawn(BadStop)
            assert await system.stop_actor(ref) == "shutdown"

    run(main())


def test_system_stop_is_idempotent_and_safe_before_start() -> None:
    async def main() -> None:
        system = ActorSystem()
        await system.stop()  # before start: a no-op
        await system.stop()
        await system.start()
        await system.start()  # idempotent
        assert system.running
        ref = await system.spawn(Echo)
        assert await ref.ask("still usable") == "still usable"
        await system.stop()
        await system.stop()
        assert not system.running
        assert not ref.is_alive
        assert ref.exit_reason == "shutdown"

    run(main())


def test_sync_shutdown_is_idempotent_and_safe_before_start() -> None:
    system = ActorSystem()
    system.shutdown()  # never started: nothing to do
    system.start_in_thread()
    system.start_in_thread()  # idempotent
    ref = system.spawn_sync(Echo)
    assert ref.ask_sync(1) == 1
    system.shutdown()
    system.shutdown()
    assert not system.running
    assert not ref.is_alive


def test_system_stop_stops_actors_newest_first() -> None:
    async def main() -> None:
        log: list[Any] = []
        async with ActorSystem() as system:
            for label in ("a", "b", "c", "d"):
                await system.spawn(Recorder, log, label, name=label)
            # "b" stops early, so only the others are left for the system to stop.
            await system.stop_actor(system.actors()[1])
        assert log == [("on_stop", "b"), ("on_stop", "d"), ("on_stop", "c"), ("on_stop", "a")]

    run(main())


def test_system_stop_in_sync_mode_stops_newest_first() -> None:
    log: list[Any] = []
    with ActorSystem() as system:
        for label in ("a", "b", "c"):
            system.spawn_sync(Recorder, log, label, name=label)
    assert log == [("on_stop", "c"), ("on_stop", "b"), ("on_stop", "a")]


# -- synchronous use ----------------------------------------------------------------------


def test_sync_usage_and_tell_from_other_threads() -> None:
    with ActorSystem() as system:
        ref = system.spawn_sync(Recorder)
        assert ref.ask_sync("ping") == "ping"
        ref.tell("main-0")

        def producer(tag: str) -> None:
            for n in range(100):
                ref.tell((tag, n))

        threads = [threading.Thread(target=producer, args=(f"t{i}",)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ref.tell("main-1")
        log = ref.ask_sync("log")
    assert log[0] == "main-0" and log[-1] == "main-1"
    for i in range(3):
        # Messages from one thread arrive in the order that thread sent them.
        assert [m for m in log if isinstance(m, tuple) and m[0] == f"t{i}"] == [(f"t{i}", n) for n in range(100)]
    assert len(log) == 302


def test_sync_ask_timeout_and_exception() -> None:
    with ActorSystem() as system:
        never = threading.Event()

        class Slow(Actor):
            async def on_ask(self, message: Any) -> Any:
                while not never.is_set():
                    await asyncio.sleep(0.005)

        slow = system.spawn_sync(Slow)
        with pytest.raises(AskTimeout):
            slow.ask_sync("x", timeout=0.05)
        crashy = system.spawn_sync(Crashy)
        with pytest.raises(Boom):
            crashy.ask_sync("boom")
        assert isinstance(system.call(crashy.wait_stopped()), Boom)
        never.set()


def test_ask_sync_on_the_loop_thread_raises_runtime_error() -> None:
    async def main() -> None:
        async with ActorSystem() as system:
            ref = await system.spawn(Echo)
            with pytest.raises(RuntimeError, match="loop thread"):
                ref.ask_sync("deadlock?")
            assert await ref.ask("fine") == "fine"

    run(main())


def test_ask_sync_inside_a_hook_raises_runtime_error() -> None:
    class Caller(Actor):
        def __init__(self, target: Any) -> None:
            self.target = target

        def on_ask(self, message: Any) -> Any:
            return self.target.ask_sync(message)  # on the loop thread: refused

    with ActorSystem() as system:
        echo = system.spawn_sync(Echo)
        caller = system.spawn_sync(Caller, echo)
        with pytest.raises(RuntimeError, match="loop thread"):
            caller.ask_sync("hi")
        assert echo.ask_sync("still alive") == "still alive"


# -- A30: start/stop stress ----------------------------------------------------------------


def test_a30_start_stop_stress_threads_no_deadlock_no_leak() -> None:
    """A30 (CI size): 4 threads x 10 start/stop cycles of a sync ActorSystem."""
    threads_before = threading.active_count()
    fds_before = open_fds()
    errors: list[BaseException] = []

    def cycles(worker: int) -> None:
        try:
            for cycle in range(10):
                with ActorSystem(name=f"stress-{worker}-{cycle}") as system:
                    refs = [system.spawn_sync(Recorder) for _ in range(3)]
                    for ref in refs:
                        ref.tell(cycle)
                    assert [ref.ask_sync("log") for ref in refs] == [[cycle]] * 3
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=cycles, args=(i,)) for i in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    eventually(lambda: threading.active_count() <= threads_before,
               f"thread count back to {threads_before} (now {threading.active_count()})")
    eventually(lambda: open_fds() <= fds_before, f"fd count back to {fds_before} (now {open_fds()})")


def _at_once(n: int, fn: Callable[[], object]) -> list[BaseException]:
    """Call `fn` from `n` threads released together by a barrier; return what they raised."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            barrier.wait()
            fn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_a30_concurrent_start_and_shutdown_of_one_system() -> None:
    """A30: start and stop the *same* system from 4 threads at once.

    Exactly one loop thread may be created; every call returns without error.
    """
    threads_before = threading.active_count()
    for _ in range(10):
        system = ActorSystem()
        assert _at_once(4, system.start_in_thread) == []
        loop_threads = [t for t in threading.enumerate() if t.name == f"{system.name}-loop"]
        assert len(loop_threads) == 1, loop_threads
        assert system.spawn_sync(Echo).ask_sync("ok") == "ok"
        assert _at_once(4, system.shutdown) == []
        assert not system.running
    eventually(lambda: threading.active_count() <= threads_before,
               f"thread count back to {threads_before} (now {threading.active_count()})")
