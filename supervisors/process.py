"""Supervising OS-process children: start, watch, restart, stop.

A child's death is seen through its pidfd (``os.pidfd_open``) registered with
the event loop, so the supervisor learns of a SIGKILL in the same loop
iteration as the kernel reaps it, not at the next poll. Where pidfds are not
available, psutil polls the children every 100 ms.

Exit reasons (OTP's vocabulary):

=================  =====================================================
``normal``         exit code 0
``shutdown``       stopped on request (SIGTERM from the supervisor)
``killed``         SIGKILL
``exit code N``    any other exit code
``signal NAME``    any other signal
=================  =====================================================

`ProcessPool` is the dynamic pool of identical children (OTP's
``simple_one_for_one``) used for worker processes: every child is permanent,
and more than `intensity` restarts within `period` seconds makes the pool
give up: it stops the other children and reports the failure to its owner.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Callable

import psutil

from actorq.supervisors.intensity import RestartIntensity

logger = logging.getLogger(__name__)

__all__ = ["ChildExit", "ProcessChild", "ProcessPool", "exit_reason"]


def exit_reason(returncode: int, requested_stop: bool = False) -> str:
    """Map a Popen return code to an OTP-style exit reason."""
    if returncode == 0:
        return "normal"
    if returncode < 0:
        sig = -returncode
        if requested_stop and sig == signal.SIGTERM:
            return "shutdown"
        if sig == signal.SIGKILL:
            return "killed"
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    return f"exit code {returncode}"


@dataclass(frozen=True)
class ChildExit:
    """One child's death, as reported to the pool's owner."""

    slot: int
    pid: int
    incarnation: str
    returncode: int
    reason: str


@dataclass(eq=False)
class ProcessChild:
    """A running child process."""

    slot: int
    incarnation: str
    proc: subprocess.Popen[bytes]
    pidfd: int | None = None
    stop_requested: bool = False
    exited: asyncio.Future[ChildExit] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid


class ProcessPool:
    """A pool of `size` identical, permanent child processes.

    Args:
        size: number of children.
        argv: builds a child's command line from its slot number and its incarnation
            (a fresh random id per start, never reused).
        on_start: called with each started child.
        on_exit: called with each `ChildExit`, before any restart.
        intensity, period: restart intensity (see `RestartIntensity`).
        env: environment for the children (default: inherit).
    """

    def __init__(
        self,
        size: int,
        argv: Callable[[int, str], list[str]],
        *,
        on_start: Callable[[ProcessChild], None] | None = None,
        on_exit: Callable[[ChildExit], None] | None = None,
        intensity: int = 10,
        period: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.size = size
        self._argv = argv
        self._on_start = on_start
        self._on_exit = on_exit
        self._env = env
        self.intensity = RestartIntensity(intensity, period)
        self.children: dict[int, ProcessChild] = {}
        self.restarts = 0
        self._stopping = False
        self._poll_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failed: asyncio.Future[str] | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Start every child. Idempotent."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.failed = self._loop.create_future()
        for slot in range(self.size):
            self._spawn(slot)

    async def stop(self, timeout: float) -> list[ChildExit]:
        """Stop every child: SIGTERM, wait up to `timeout` s, then SIGKILL. Idempotent.

        Returns the exits of the children that were still running.
        """
        self._stopping = True
        children = list(self.children.values())
        for child in children:
            self._signal(child, signal.SIGTERM, request=True)
        return await self._await_exits(children, timeout)

    async def wait_stopped(self, timeout: float) -> list[ChildExit]:
        """Mark the pool as stopping and wait up to `timeout` s for children to exit by themselves,
        then SIGKILL the rest. Used after the children were asked to stop over the wire."""
        self._stopping = True
        return await self._await_exits(list(self.children.values()), timeout)

    async def _await_exits(self, children: list[ProcessChild], timeout: float) -> list[ChildExit]:
        if not children:
            return []
        waits = [asyncio.shield(c.exited) for c in children]
        _, pending = await asyncio.wait(waits, timeout=timeout)
        if pending:
            for child in children:
                if not child.exited.done():
                    logger.warning("child %d did not stop within %.1f s; killing it", child.pid, timeout)
                    self._signal(child, signal.SIGKILL)
            await asyncio.wait(waits)
        return [c.exited.result() for c in children]

    # -- internals --------------------------------------------------------------------
    def _spawn(self, slot: int) -> ProcessChild:
        assert self._loop is not None
        incarnation = secrets.token_hex(8)
        proc = subprocess.Popen(self._argv(slot, incarnation), env=self._env, stdin=subprocess.DEVNULL)
        child = ProcessChild(slot, incarnation, proc)
        self.children[slot] = child
        try:
            child.pidfd = os.pidfd_open(proc.pid)
            self._loop.add_reader(child.pidfd, self._reap, child)
        except (AttributeError, OSError):  # no pidfd: fall back to polling with psutil
            child.pidfd = None
            self._schedule_poll()
        logger.info("started child %d (pid %d, incarnation %s)", slot, proc.pid, incarnation)
        if self._on_start is not None:
            self._on_start(child)
        return child

    def _schedule_poll(self) -> None:
        if self._poll_handle is None and self._loop is not None:
            self._poll_handle = self._loop.call_later(0.1, self._poll)

    def _poll(self) -> None:
        self._poll_handle = None
        for child in list(self.children.values()):
            if child.pidfd is None and (not psutil.pid_exists(child.pid) or child.proc.poll() is not None):
                self._reap(child)
        if any(c.pidfd is None for c in self.children.values()):
            self._schedule_poll()

    def _reap(self, child: ProcessChild) -> None:
        if child.exited.done():
            return
        returncode = child.proc.poll()
        if returncode is None:
            return  # spurious wake-up
        if child.pidfd is not None and self._loop is not None:
            self._loop.remove_reader(child.pidfd)
            os.close(child.pidfd)
            child.pidfd = None
        event = ChildExit(child.slot, child.pid, child.incarnation, returncode,
                          exit_reason(returncode, child.stop_requested))
        if self.children.get(child.slot) is child:
            del self.children[child.slot]
        child.exited.set_result(event)
        level = logging.INFO if event.reason in ("normal", "shutdown") else logging.WARNING
        logger.log(level, "child %d (pid %d) exited: %s", child.slot, child.pid, event.reason)
        if self._on_exit is not None:
            self._on_exit(event)
        if self._stopping:
            return
        if not self.intensity.allow():
            message = (f"worker pool gave up: more than {self.intensity.intensity} restarts in "
                       f"{self.intensity.period:g} s (last exit: pid {child.pid}, {event.reason})")
            logger.error(message)
            self._stopping = True
            if self.failed is not None and not self.failed.done():
                self.failed.set_result(message)
            return
        self.restarts += 1
        self._spawn(child.slot)

    def _signal(self, child: ProcessChild, sig: int, request: bool = False) -> None:
        if child.exited.done():
            return
        if request:
            child.stop_requested = True
        try:
            child.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def pids(self) -> list[int]:
        """Pids of the running children."""
        return [c.pid for c in self.children.values()]
