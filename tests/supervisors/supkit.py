"""Helpers for the supervisor suite: one test body, two kinds of children.

A `Kit` makes start functions for children that behave alike in both kinds
and drives them (make one exit normally, with an error, killed...).
`ActorKit` uses `TestActor`; `ProcessKit` runs `CHILD_PROGRAM`, a small
``python -I -S`` program told what to do through files in the test's
temporary directory, so there is no race with Python's start-up. `FakeClock`
drives restart intensity windows; `Exits` records the ``on_child_exit`` hook;
`eventually` polls an outcome under a bound (never asserting a timing).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from actorq import Actor, ActorRef
from actorq._kernel.system import system_of
from actorq.supervisors import IGNORE, Child, Exit, StartFn, SupervisorRef, actor_start, process_start

# A child process. argv: <dir> <mode>. Modes: "worker" (SIGTERM kills it), "stubborn"
# (ignores SIGTERM, leaves the process group), "term_exit:<code>" (exits with <code>
# on SIGTERM). It writes <dir>/ready-<pid> once set up, and exits with the code
# written to <dir>/exit-<pid> when that file appears.
CHILD_PROGRAM = r'''
import os, signal, sys, time
folder, mode = sys.argv[1], sys.argv[2]
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.setsid()
elif mode.startswith("term_exit:"):
    code = int(mode.split(":")[1])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(code))
pid = os.getpid()
with open(os.path.join(folder, "ready-%d" % pid), "w"):
    pass
trigger = os.path.join(folder, "exit-%d" % pid)
while True:
    try:
        with open(trigger) as f:
            os._exit(int(f.read() or 0))
    except FileNotFoundError:
        time.sleep(0.01)
'''


async def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; return that.

    Fails naming `what` after `timeout` seconds (a bound on a hang, not a timing assertion).
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def pids(sup: SupervisorRef) -> dict[str, Any]:
    """``{child id: pid}`` of a static supervisor's children."""
    return {info.id: info.pid for info in await sup.which_children()}


async def running(sup: SupervisorRef, count: int | None = None) -> bool:
    """True when every child runs (and, if given, there are `count` of them)."""
    infos = await sup.which_children()
    return all(i.state == "running" for i in infos) and (count is None or len(infos) == count)


class FakeClock:
    """A monotonic clock the test moves by hand (for restart intensity windows)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Exits:
    """An ``on_child_exit`` hook that records ``(child id, pid, Exit)`` in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Exit]] = []

    def __call__(self, child_id: str, child: Child, exit: Exit) -> None:
        self.events.append((child_id, child.pid, exit))

    def of(self, pid: Any) -> Exit | None:
        """The recorded exit of the child with this pid."""
        return next((e for _, p, e in self.events if p == pid), None)

    async def wait(self, pid: Any) -> Exit:
        """Wait for the exit of the child with this pid."""
        return await eventually(lambda: self.of(pid), f"the exit of {pid}")  # type: ignore[no-any-return]


class Gate:
    """Start-function wrapper whose outcome the test decides: each call takes the next
    planned outcome ("ok", "fail", "ignore"); when the plan runs out, `default` applies."""

    def __init__(self, start: StartFn, plan: list[str] | None = None, default: str = "ok") -> None:
        self.start = start
        self.plan = list(plan or [])
        self.default = default
        self.calls = 0

    async def __call__(self, *args: Any) -> Any:
        self.calls += 1
        outcome = self.plan.pop(0) if self.plan else self.default
        if outcome == "fail":
            await asyncio.sleep(0.001)
            raise RuntimeError(f"planned start failure #{self.calls}")
        if outcome == "ignore":
            return IGNORE
        return await self.start(*args)


def recording(start: StartFn, label: str, log: list[Any]) -> StartFn:
    """Wrap `start` so that each call appends ``("start", label)`` to `log`."""

    async def wrapped(*args: Any) -> Any:
        log.append(("start", label))
        return await start(*args)

    return wrapped


class TestActor(Actor):
    """An actor child. Modes: "worker"; "stubborn" (its on_stop never returns, so a
    stop request is ignored). Told ``("exit", how)`` it exits by itself: "normal",
    "shutdown", ("shutdown", term) or "error" (raises). Told ``("exit_when", how, gate)``
    it starts exiting with `how` at once but finishes only when `gate` is set."""

    __test__ = False

    def __init__(self, mode: str = "worker") -> None:
        self.mode = mode

    async def on_receive(self, message: Any) -> None:
        what = message[0]
        if what == "exit":
            self._exit(message[1])
        elif what == "exit_when":
            how, gate = message[1], message[2]
            if how != "error":
                self._exit(how)  # the first reason wins: a later stop request is ignored
            await gate.wait()
            if how == "error":
                raise RuntimeError("exited with its own error")

    def _exit(self, how: Any) -> None:
        if how == "error":
            raise RuntimeError("boom")
        self.system.exit(self.ref, how)

    def on_ask(self, message: Any) -> Any:
        return message

    async def on_stop(self) -> None:
        if self.mode == "stubborn":
            await asyncio.Event().wait()


class Kit:
    """Children of one kind, and the means to drive them. See the module docstring."""

    kind = ""

    def start(self, mode: str = "worker") -> StartFn:
        """A start function for a child in `mode` ("worker" or "stubborn")."""
        raise NotImplementedError

    def pool(self) -> StartFn:
        """A template start function: the mode comes as the first start arg."""
        raise NotImplementedError

    def failing(self) -> StartFn:
        """A start function that always fails for real (actor: on_start raises; process: no such program)."""
        raise NotImplementedError

    async def ready(self, pid: Any) -> None:
        """Wait until the child has set itself up (a process has installed its signal handlers)."""

    def make_exit(self, pid: Any, how: str) -> None:
        """Make a child exit by itself: "normal", "error", "killed" (and "shutdown" for actors)."""
        raise NotImplementedError

    def alive(self, pid: Any) -> bool:
        """True while the child runs."""
        raise NotImplementedError


class BadStart(Actor):
    def on_start(self) -> None:
        raise RuntimeError("on_start refused")


class ActorKit(Kit):
    kind = "actor"

    def start(self, mode: str = "worker") -> StartFn:
        return actor_start(TestActor, mode)

    def pool(self) -> StartFn:
        return actor_start(TestActor)

    def failing(self) -> StartFn:
        return actor_start(BadStart)

    def make_exit(self, pid: Any, how: str) -> None:
        assert isinstance(pid, ActorRef), pid
        if how == "killed":
            system_of(pid).exit(pid, "kill")
        else:
            pid.tell(("exit", how))

    def alive(self, pid: Any) -> bool:
        return isinstance(pid, ActorRef) and pid.is_alive


class ProcessKit(Kit):
    kind = "process"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.program = folder / "child_program.py"
        self.program.write_text(CHILD_PROGRAM)

    def argv(self, mode: str) -> list[str]:
        return [sys.executable, "-I", "-S", str(self.program), str(self.folder), mode]

    def start(self, mode: str = "worker") -> StartFn:
        return process_start(self.argv(mode))

    def pool(self) -> StartFn:
        return process_start(lambda mode="worker", *, incarnation: self.argv(mode))

    def failing(self) -> StartFn:
        return process_start([str(self.folder / "no-such-program")])

    async def ready(self, pid: Any) -> None:
        await eventually(lambda: (self.folder / f"ready-{pid}").exists(), f"process {pid} to be ready")

    def make_exit(self, pid: Any, how: str) -> None:
        assert isinstance(pid, int), pid
        if how == "killed":
            os.kill(pid, signal.SIGKILL)
            return
        assert how in ("normal", "error"), f"a process child cannot exit with {how!r} by itself"
        code = "0" if how == "normal" else "3"
        trigger = self.folder / f"exit-{pid}"
        trigger.with_suffix(".tmp").write_text(code)
        trigger.with_suffix(".tmp").rename(trigger)  # atomic: the child never reads a half-written file

    def alive(self, pid: Any) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


