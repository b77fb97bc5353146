"""Actors in their own OS process behind a ref of the same kind as a local one.

A supervisor runs the actor in a child process through `actor_process`; the
child's ref is an `ActorRef` (a `RemoteRef`), so tell / ask / ask_sync work
as for a local actor. Real processes, real ZeroMQ sockets.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest

from actorq import ActorRef, ActorStopped, ActorSystem, AskTimeout
from actorq.supervisors import ChildSpec, RemoteError, RemoteRef, SupFlags, actor_process, start_supervisor

ACTORS = '''
import asyncio, os
import actorq


class Counter(actorq.Actor):
    def __init__(self, start):
        self.total = start

    def on_receive(self, message):
        self.total += message

    async def on_ask(self, message):
        if message == "pid":
            return os.getpid()
        if message == "boom":
            raise ValueError("boom in the child")
        if message == "slow":
            await asyncio.sleep(3600)
        return self.total


class FailsToStart(actorq.Actor):
    def on_start(self):
        raise RuntimeError("cannot start")
'''


@pytest.fixture
def actors_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "remote_actors.py").write_text(ACTORS)
    monkeypatch.syspath_prepend(str(tmp_path))  # the child's sys.path is the parent's
    return "remote_actors"


def _ref(infos, child_id):  # noqa: ANN001, ANN202
    return next(info for info in infos if info.id == child_id).ref


async def test_a_process_childs_ref_is_an_actor_ref(actors_module: str) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags("one_for_one", intensity=3, period=60), [
            ChildSpec("counter", actor_process(f"{actors_module}:Counter", 10), shutdown=5.0),
        ])
        ref = _ref(await sup.which_children(), "counter")
        assert isinstance(ref, ActorRef) and isinstance(ref, RemoteRef) and ref.is_alive
        pid = await ref.ask("pid")
        assert pid == ref.pid != os.getpid() and psutil.Process(pid).ppid() == os.getpid()
        for n in (1, 2, 3):
            ref.tell(n)
        assert await ref.ask("total") == 16  # tells arrive before the ask, in order
        assert await asyncio.to_thread(ref.ask_sync, "total") == 16
        with pytest.raises(AskTimeout):
            await ref.ask("slow", timeout=0.2)

        # SIGKILL: the supervisor restarts it (permanent) with a new pid and a new ref
        os.kill(pid, signal.SIGKILL)
        assert await ref.wait_stopped() == "killed"
        with pytest.raises(ActorStopped):
            ref.tell(1)
        infos = await _restarted(sup, ref)
        new = _ref(infos, "counter")
        assert new != ref and await new.ask("total") == 10 and await new.ask("pid") != pid

        # an ask whose handler raises: the caller gets the error, the actor crashes and restarts
        with pytest.raises(RemoteError, match="ValueError: boom in the child"):
            await new.ask("boom")
        assert await new.wait_stopped() == "exit code 1"
        latest = _ref(await _restarted(sup, new), "counter")
        assert await latest.ask("total") == 10
        child_pid = latest.pid
        await sup.stop()
        assert await latest.wait_stopped() == "shutdown"  # asked to stop: SIGTERM, exit 0
        assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE


async def _restarted(sup, old):  # noqa: ANN001, ANN202
    for _ in range(600):  # bounded poll (60 s)
        infos = await sup.which_children()
        ref = _ref(infos, "counter")
        if ref is not None and ref != old and ref.is_alive:
            return infos
        await asyncio.sleep(0.1)
    raise AssertionError("the remote actor was not restarted")


async def test_a_remote_actor_that_fails_to_start_fails_the_start(actors_module: str) -> None:
    from actorq.supervisors import StartFailed

    async with ActorSystem() as system:
        with pytest.raises(StartFailed, match="failed to start: its process exited"):
            await start_supervisor(system, SupFlags(), [
                ChildSpec("bad", actor_process(f"{actors_module}:FailsToStart")),
            ])


def test_bad_targets_and_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="expected 'module:Class'"):
        actor_process("no_colon_here")
    with pytest.raises(ValueError, match="JSON values"):
        actor_process("m:C", object())


async def test_a_monitor_on_a_remote_ref_fires_with_the_exit_reason(actors_module: str) -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags("one_for_one", intensity=3, period=60), [
            ChildSpec("counter", actor_process(f"{actors_module}:Counter", 0), restart="temporary"),
        ])
        ref = _ref(await sup.which_children(), "counter")
        loop = asyncio.get_running_loop()
        while_alive: asyncio.Future[object] = loop.create_future()
        ref.monitor(while_alive.set_result)
        assert not while_alive.done()
        os.kill(ref.pid, signal.SIGKILL)
        assert await asyncio.wait_for(while_alive, 30) == "killed" == ref.exit_reason
        # a monitor set after the exit fires at once, with the same reason
        after_exit: asyncio.Future[object] = loop.create_future()
        ref.monitor(after_exit.set_result)
        assert await asyncio.wait_for(after_exit, 30) == "killed"
        await sup.stop()
