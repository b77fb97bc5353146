"""The `Supervisor` actor: OTP's ``supervisor`` behaviour on actorq actors.

A supervisor starts its children in list order, watches them, restarts them
by its strategy, and stops them in reverse start order::

    start_supervisor(system, SupFlags("rest_for_one", intensity=3, period=5), [a, b, c])

    child b exits ──▶ restart type says "restart"? ──no──▶ forget it (temporary) / keep the spec
                        │ yes
                        ▼
                 more than 3 restarts in the last 5 s? ──yes──▶ terminate c, b?, a (reverse order),
                        │ no                                     exit Exit("shutdown",
                        ▼                                        "reached_max_restart_intensity ...")
                 one_for_one:  start b                           (the parent restarts us or gives up)
                 one_for_all:  stop c, a; start a, b, c
                 rest_for_one: stop c; start b, c
                        │ a start fails
                        ▼
                 one_for_all: stop the ones just started; the whole group shows "restarting"
                 rest_for_one: b and those after it show "restarting" (a keeps running)
                 retry through the mailbox; each retry counts against intensity

Restart types: ``permanent`` always restarts, ``transient`` only after an
abnormal exit (``killed`` or ``error``), ``temporary`` never, and its spec is
dropped. A temporary sibling stopped by a group restart is not restarted and
does not count against intensity. As in OTP, a group restart starts every
non-temporary member of the group, including one stopped earlier with
`terminate_child` or one whose start returned IGNORE. Intensity is a sliding window on the clock
given to `start_supervisor` (`RestartIntensity`); a restart older than
``period`` seconds no longer counts. An OS process child whose spec names a
``replace_exit`` code and exits with it asked to be replaced: it is started again
at once, outside intensity and backoff (not an OTP notion: OTP has no processes
that cannot be stopped from inside; a worker thread stuck in a task is one).

Stopping a child: ask it to stop, wait its ``shutdown`` seconds, then kill it
(``brutal_kill``: kill at once; ``"infinity"``: wait for ever). A child that
exits by itself meanwhile keeps its own exit reason. A pool
(``simple_one_for_one``) asks all its children at once, then kills those that
overrun.

Concurrency: every change goes through the mailbox and the operation queue
(`actorq.supervisors._ops`): operations on one child run in mailbox order, a
slow stop delays only operations on that child and group operations, and
queries are answered at once. Restart backoff is a timer, never a sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import itertools
import logging
import time
from typing import Any, Awaitable, Callable, Hashable, Iterable, Sequence

import psutil

from actorq._kernel.actor import Actor
from actorq._kernel.ref import ActorRef
from actorq._kernel.system import ActorSystem, notify, owned_by, request_exit
from actorq.supervisors._ops import ALL, Keys, OpQueue
from actorq.supervisors.child import ActorChild, _is_child, current_system
from actorq.supervisors.errors import (
    AlreadyPresent,
    AlreadyStarted,
    NotFound,
    NotSupported,
    Restarting,
    Running,
    StartFailed,
)
from actorq.supervisors.exits import Exit
from actorq.supervisors.intensity import RestartIntensity
from actorq.supervisors.ref import Call, ChildInfo, Counts, SupervisorRef
from actorq.supervisors.spec import IGNORE, Child, ChildSpec, Ignore, SupFlags, check_spec, check_specs

logger = logging.getLogger(__name__)

__all__ = ["ChildExitHook", "Supervisor", "start_supervisor", "supervisor_spec"]

ChildExitHook = Callable[[str, Child, Exit], None]
"""``on_child_exit(child_id, child, exit)``: called on the loop for every child exit,
before any restart is attempted. It must not block; an exception is logged and ignored."""


class _StartError(Exception):
    """A child start failed; `reason` is what the start function raised or returned."""

    def __init__(self, reason: object) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class _ChildDown:
    key: Hashable
    child: Child
    exit: Exit


@dataclasses.dataclass(frozen=True, slots=True)
class _Retry:
    key: Hashable
    token: object
    counted: bool  # intensity already counted this restart (a backoff delay)


class _Slot:
    """One child: a static spec, or one member of a pool."""

    __slots__ = ("key", "spec", "args", "child", "pending", "restarts", "started_at", "streak", "last_pid",
                 "last_error")

    def __init__(self, key: Hashable, spec: ChildSpec, args: tuple[Any, ...]) -> None:
        temporary = spec.restart == "temporary"
        self.key = key
        # A temporary child is never restarted, so neither its spec nor the slot keeps its args (A26).
        self.spec = dataclasses.replace(spec, args=()) if temporary and spec.args else spec
        self.args = () if temporary else args
        self.child: Child | None = None
        self.pending: object | None = None  # token of a pending restart: the child shows as restarting
        self.restarts = 0
        self.started_at = 0.0
        self.streak = 0  # consecutive restarts, for backoff
        self.last_pid: Any = None
        self.last_error: object = None


def _kill_started(task: "asyncio.Future[Any]") -> None:
    # The start outlived whoever awaited it (that one was cancelled): kill what it started.
    if not task.cancelled() and task.exception() is None and _is_child(task.result()):
        task.result().kill()


class Supervisor(Actor):
    """The supervisor actor. Start one with `start_supervisor`; talk to it through `SupervisorRef`.

    Args:
        flags: the `SupFlags`.
        specs: the validated child specs (a pool: its single template).
        on_child_exit: an optional `ChildExitHook`.
        clock: the monotonic clock for intensity and backoff.
    """

    def __init__(self, flags: SupFlags, specs: Sequence[ChildSpec], on_child_exit: ChildExitHook | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.flags = flags
        self._initial: Sequence[ChildSpec] = specs
        self._hook = on_child_exit
        self._clock = clock
        self._intensity = RestartIntensity(flags.intensity, flags.period, clock)
        self._simple = flags.strategy == "simple_one_for_one"
        self._template: ChildSpec | None = specs[0] if self._simple else None
        self._slots: dict[Hashable, _Slot] = {}  # insertion order is start order
        self._pool_keys = itertools.count(1)
        self._ops = OpQueue(self._bug)
        self._timers: set[asyncio.TimerHandle] = set()
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def on_start(self) -> None:
        """Start the static children in order; on a failure stop them in reverse and raise `StartFailed`."""
        specs, self._initial = self._initial, ()
        if self._simple:
            return
        try:
            for spec in specs:
                slot = _Slot(spec.id, spec, spec.args)
                try:
                    child = await self._start(slot, spec.args)
                except _StartError as err:
                    logger.error("supervisor %s: child %r failed to start: %r", self.ref.name, spec.id, err.reason)
                    raise StartFailed(spec.id, err.reason) from None
                if child is not None or spec.restart != "temporary":
                    self._slots[spec.id] = slot
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                self._kill_all_now()
            else:
                await self._terminate_all()
            raise

    async def on_stop(self) -> None:
        """Terminate every child: gracefully in reverse start order, or kill them all if killed."""
        killed = self.ref.exit_reason == "killed"
        self._stopping = True
        self._ops.close()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        try:
            if killed:
                self._ops.cancel_running()
                self._kill_all_now()
                await self._await_all_exits()
            else:
                logger.info("supervisor %s shutting down (%s)", self.ref.name, Exit.from_actor(self.ref.exit_reason))
                await self._ops.drain()
                await self._terminate_all()
        except asyncio.CancelledError:  # killed while shutting down: no more waiting
            self._ops.cancel_running()
            self._kill_all_now()
            raise

    def _bug(self, exc: BaseException) -> None:
        logger.error("supervisor %s: internal error; crashing", self.ref.name, exc_info=exc)
        request_exit(self.ref, exc)

    # -- messages ----------------------------------------------------------------------------
    def on_receive(self, message: Any) -> None:
        """Dispatch one message: answer queries now, queue everything else as an operation."""
        if isinstance(message, Call):
            self._dispatch_call(message)
        elif isinstance(message, _ChildDown):
            self._ops.submit(self._strategy_keys(message.key), functools.partial(self._child_down, message))
        elif isinstance(message, _Retry):
            self._ops.submit(self._strategy_keys(message.key), functools.partial(self._retry, message))
        else:
            logger.warning("supervisor %s: unexpected message %r", self.ref.name, message)

    def _dispatch_call(self, call: Call) -> None:
        reply = call.reply
        if reply.done():
            return
        if call.op == "which_children":
            reply.set_result(self._which_children())
        elif call.op == "count_children":
            reply.set_result(self._count_children())
        elif call.op == "start_child":
            (what,) = call.args
            if self._simple:
                if not isinstance(what, tuple):
                    reply.set_exception(TypeError(f"a simple_one_for_one pool starts a child from a tuple of "
                                                  f"extra args, got {what!r}"))
                    return
                key = next(self._pool_keys)
                self._ops.submit(frozenset({key}), functools.partial(self._start_pool_child, key, what), reply)
            elif isinstance(what, ChildSpec):
                self._ops.submit(frozenset({what.id}), functools.partial(self._start_child, what), reply)
            else:
                reply.set_exception(TypeError(f"start_child expects a ChildSpec, got {what!r}"))
        elif call.op in ("terminate_child", "restart_child", "delete_child"):
            (target,) = call.args
            handler = getattr(self, "_" + call.op)
            self._ops.submit(self._target_keys(target), functools.partial(handler, target), reply)
        else:
            reply.set_exception(ValueError(f"unknown supervisor call {call.op!r}"))

    def _strategy_keys(self, key: Hashable) -> Keys:
        if self.flags.strategy in ("one_for_one", "simple_one_for_one"):
            return frozenset({key})
        return ALL

    def _target_keys(self, target: Any) -> Keys:
        if isinstance(target, str):
            return frozenset() if self._simple else frozenset({target})
        slot = self._slot_by_pid(target)
        return frozenset({slot.key}) if slot is not None else frozenset()

    def _post(self, message: Any, delay: float = 0.0) -> None:
        if delay <= 0:
            notify(self.ref, message)
            return
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            notify(self.ref, message)

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    # -- starting and stopping one child ---------------------------------------------------------
    def _label(self, slot: _Slot) -> str:
        if self._simple and slot.last_pid is not None:
            return f"{slot.spec.id!r} (pid {slot.last_pid})"
        return repr(slot.spec.id)

    async def _start(self, slot: _Slot, args: tuple[Any, ...]) -> Child | None:
        """Run the start function; return the child (attached to `slot`) or None for IGNORE."""
        with owned_by(self.ref):  # actors it spawns are ours; actor_start finds our system
            try:
                started = slot.spec.start(*args)
            except Exception as exc:
                raise _StartError(exc) from exc
            task = asyncio.ensure_future(started) if inspect.isawaitable(started) else None
        if task is None:
            result: object = started
        else:
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                task.add_done_callback(_kill_started)
                raise
            except Exception as exc:
                raise _StartError(exc) from exc
        if isinstance(result, Ignore):
            return None
        if not _is_child(result):
            raise _StartError(f"the start function returned {result!r}; expected a started Child or IGNORE")
        child: Child = result  # type: ignore[assignment]
        slot.child = child
        slot.pending = None
        slot.last_pid = child.pid
        slot.started_at = self._clock()
        child_id, key = slot.spec.id, slot.key
        child.exited.add_done_callback(lambda fut: self._exited(child_id, key, child, fut))
        return child

    def _exited(self, child_id: str, key: Hashable, child: Child, fut: "asyncio.Future[Exit]") -> None:
        exit = fut.result()
        if self._hook is not None:
            try:
                self._hook(child_id, child, exit)
            except Exception:
                logger.exception("supervisor %s: on_child_exit hook failed", self.ref.name)
        notify(self.ref, _ChildDown(key, child, exit))

    async def _terminate(self, slot: _Slot) -> Exit | None:
        """Stop the slot's child (graceful, then kill after `shutdown`); return its exit."""
        child = slot.child
        if child is None:
            return None
        shutdown = slot.spec.shutdown
        if not child.exited.done():
            if shutdown == "brutal_kill":
                child.kill()
            else:
                child.stop()
                if shutdown != "infinity":
                    done, _ = await asyncio.wait((child.exited,), timeout=shutdown)  # type: ignore[arg-type]
                    if not done:
                        logger.warning("supervisor %s: child %s did not stop within %s s; killing it",
                                       self.ref.name, self._label(slot), shutdown)
                        child.kill()
        exit = await asyncio.shield(child.exited)
        if slot.child is child:
            slot.child = None
        expected = "killed" if shutdown == "brutal_kill" else "shutdown"
        if exit.kind != expected:  # its own reason is kept and reported, never overwritten (A9)
            logger.info("supervisor %s: child %s exited with %s while being stopped",
                        self.ref.name, self._label(slot), exit)
        return exit

    async def _terminate_all(self) -> None:
        """Stop every child: in reverse start order, or a pool's all at once."""
        slots = list(self._slots.values())
        if self._simple:
            await asyncio.gather(*(self._terminate(s) for s in slots if s.child is not None))
        else:
            for slot in reversed(slots):
                await self._terminate(slot)
        for slot in slots:
            slot.pending = None

    def _kill_all_now(self) -> None:
        for slot in reversed(list(self._slots.values())):
            slot.pending = None
            if slot.child is not None:
                slot.child.kill()

    async def _await_all_exits(self) -> None:
        children = [s.child for s in self._slots.values() if s.child is not None]
        if children:
            await asyncio.wait([c.exited for c in children])  # type: ignore[misc]
        for slot in self._slots.values():
            slot.child = None

    # -- exits and restarts ------------------------------------------------------------------------
    async def _child_down(self, down: _ChildDown) -> None:
        slot = self._slots.get(down.key)
        if slot is None or slot.child is not down.child or self._stopping:
            return  # stale: whoever stopped it has handled it
        slot.child = None
        spec, exit = slot.spec, down.exit
        restart = spec.restart == "permanent" or (spec.restart == "transient" and exit.abnormal)
        level = logging.WARNING if exit.abnormal else logging.INFO
        if not restart:
            logger.log(level, "supervisor %s: %s child %s exited (%s); not restarted",
                       self.ref.name, spec.restart, self._label(slot), exit)
            if spec.restart == "temporary" or self._simple:
                del self._slots[slot.key]
            self._auto_shutdown(slot)
            return
        if spec.replace_exit is not None and exit.code == spec.replace_exit:
            # the child asked for a fresh copy of itself: not a crash, so not counted
            logger.info("supervisor %s: child %s asked to be replaced (%s)", self.ref.name, self._label(slot), exit)
            await self._attempt(slot)
            return
        logger.log(level, "supervisor %s: child %s exited (%s)", self.ref.name, self._label(slot), exit)
        if self._clock() - slot.started_at >= self.flags.period:
            slot.streak = 0  # it ran long enough: backoff starts over
        slot.streak += 1
        await self._restart(slot, f"exited with {exit}")

    async def _restart(self, slot: _Slot, cause: str) -> None:
        if not self._intensity.allow():
            self._give_up(slot, cause)
            return
        backoff = self.flags.backoff
        delay = backoff.delay(slot.streak) if backoff is not None else 0.0
        if delay > 0:  # stop the group now, start it when the delay is over
            token = await self._stop_group(slot)
            logger.info("supervisor %s: restarting child %s in %.3g s", self.ref.name, self._label(slot), delay)
            self._post(_Retry(slot.key, token, counted=True), delay)
            return
        await self._attempt(slot)

    async def _retry(self, retry: _Retry) -> None:
        if self._stopping:
            return
        slot = self._slots.get(retry.key)
        if slot is None or slot.pending is not retry.token:
            # Cancelled (terminate_child); members that waited with it are simply stopped now.
            for other in self._slots.values():
                if other.pending is retry.token:
                    other.pending = None
            return
        if not retry.counted and not self._intensity.allow():
            self._give_up(slot, f"failed to restart: {slot.last_error!r}")
            return
        await self._attempt(slot)

    def _group(self, slot: _Slot) -> list[_Slot]:
        strategy = self.flags.strategy
        if strategy == "one_for_all":
            return list(self._slots.values())
        if strategy == "rest_for_one":
            slots = list(self._slots.values())
            return slots[slots.index(slot):]
        return [slot]

    async def _stop_group(self, slot: _Slot) -> object:
        """Mark `slot`'s group restarting and stop its running members in reverse order.

        Temporary members are stopped and forgotten: not restarted, not counted (A15).
        Returns the token that marks the group's pending restart.
        """
        token = object()
        group = self._group(slot)
        for member in group:
            member.pending = token  # shows as restarting once stopped
        for member in reversed(group):
            await self._terminate(member)
            if member.spec.restart == "temporary":
                self._slots.pop(member.key, None)
        return token

    async def _attempt(self, slot: _Slot) -> None:
        """Restart `slot` (with its group): stop the group in reverse, start it in order."""
        await self._stop_group(slot)
        members = [m for m in self._group(slot) if m.pending is not None]
        for index, member in enumerate(members):
            try:
                child = await self._start(member, member.args)  # clears member.pending
            except _StartError as err:
                await self._restart_failed(member, members, index, err)
                return
            if child is None:
                logger.info("supervisor %s: child %s ignored its restart", self.ref.name, self._label(member))
                member.pending = None
                if self._simple:
                    del self._slots[member.key]
                continue
            member.restarts += 1
            logger.info("supervisor %s: restarted child %s", self.ref.name, self._label(member))

    async def _restart_failed(self, failed: _Slot, members: list[_Slot], index: int, err: _StartError) -> None:
        logger.warning("supervisor %s: child %s failed to restart: %r",
                       self.ref.name, self._label(failed), err.reason)
        if self.flags.strategy == "one_for_all":
            for member in reversed(members[:index]):  # never a half-restarted group (A20)
                await self._terminate(member)
            waiting = members
        else:  # rest_for_one: the ones before `failed` do not depend on it and keep running
            waiting = members[index:]
        token = object()
        for member in waiting:
            member.pending = token
        failed.last_error = err.reason
        failed.streak += 1
        backoff = self.flags.backoff
        delay = backoff.delay(failed.streak) if backoff is not None else 0.0
        self._post(_Retry(failed.key, token, counted=False), delay)

    def _give_up(self, slot: _Slot, cause: str) -> None:
        detail = (f"reached_max_restart_intensity: more than {self.flags.intensity} restart(s) in "
                  f"{self.flags.period:g} s; last: child {slot.spec.id!r} {cause}")
        logger.error("supervisor %s: %s; terminating its children", self.ref.name, detail)
        self._stopping = True
        request_exit(self.ref, Exit("shutdown", detail))

    def _auto_shutdown(self, slot: _Slot) -> None:
        mode = self.flags.auto_shutdown
        if mode == "never" or not slot.spec.significant:
            return
        if mode == "all_significant" and any(
            s.spec.significant and (s.child is not None or s.pending is not None) for s in self._slots.values()
        ):
            return
        logger.info("supervisor %s: significant child %r exited; auto_shutdown=%s", self.ref.name,
                    slot.spec.id, mode)
        self._stopping = True
        request_exit(self.ref, Exit("shutdown", f"auto_shutdown: significant child {slot.spec.id!r} exited"))

    # -- admin calls ---------------------------------------------------------------------------------
    async def _start_child(self, spec: ChildSpec) -> Any:
        check_spec(self.flags, spec)
        existing = self._slots.get(spec.id)
        if existing is not None:
            if existing.child is not None:
                raise AlreadyStarted(spec.id, existing.child.pid)
            raise AlreadyPresent(spec.id)
        slot = _Slot(spec.id, spec, spec.args)
        try:
            child = await self._start(slot, spec.args)
        except _StartError as err:
            raise StartFailed(spec.id, err.reason) from None
        if child is not None or spec.restart != "temporary":
            self._slots[spec.id] = slot
        return None if child is None else child.pid

    async def _start_pool_child(self, key: int, extra: tuple[Any, ...]) -> Any:
        template = self._template
        assert template is not None
        args = template.args + extra
        slot = _Slot(key, template, args)
        try:
            child = await self._start(slot, args)
        except _StartError as err:
            raise StartFailed(template.id, err.reason) from None
        if child is None:
            return None
        self._slots[key] = slot
        return child.pid

    def _slot_by_pid(self, pid: Any) -> _Slot | None:
        for slot in self._slots.values():
            if slot.child is not None and slot.child.pid == pid:
                return slot
            if slot.pending is not None and slot.last_pid == pid:
                return slot
        return None

    def _find(self, child_id: str) -> _Slot:
        if self._simple:
            raise NotSupported(f"a simple_one_for_one pool has no child ids (got {child_id!r}); use a pid")
        slot = self._slots.get(child_id)
        if slot is None:
            raise NotFound(child_id)
        return slot

    async def _terminate_child(self, target: Any) -> None:
        if isinstance(target, str):
            slot = self._find(target)
        else:
            found = self._slot_by_pid(target)
            if found is None:
                if _gone(target):
                    return  # already stopped and forgotten
                raise NotFound(target)
            slot = found
        slot.pending = None  # cancels a pending restart
        await self._terminate(slot)
        if slot.spec.restart == "temporary" or self._simple:
            self._slots.pop(slot.key, None)

    async def _restart_child(self, child_id: str) -> Any:
        slot = self._find(child_id)
        if slot.child is not None:
            raise Running(child_id)
        if slot.pending is not None:
            raise Restarting(child_id)
        try:
            child = await self._start(slot, slot.args)
        except _StartError as err:
            raise StartFailed(child_id, err.reason) from None
        if child is None:
            return None
        slot.restarts += 1
        return child.pid

    async def _delete_child(self, child_id: str) -> None:
        slot = self._find(child_id)
        if slot.child is not None:
            raise Running(child_id)
        if slot.pending is not None:
            raise Restarting(child_id)
        del self._slots[child_id]

    # -- queries ------------------------------------------------------------------------------------
    def _which_children(self) -> list[ChildInfo]:
        infos = []
        for slot in self._slots.values():
            child = slot.child
            if child is not None:
                pid, state = child.pid, "running"
            elif slot.pending is not None:
                pid, state = "restarting", "restarting"
            else:
                pid, state = None, "stopped"
            infos.append(ChildInfo(slot.spec.id, pid, slot.spec.type, slot.spec.restart, slot.restarts, state,
                                   None if child is None else child.ref, getattr(child, "supervisor", None)))
        return infos

    def _count_children(self) -> Counts:
        slots = list(self._slots.values())
        active = sum(1 for s in slots if s.child is not None and not s.child.exited.done())
        supervisors = sum(1 for s in slots if s.spec.type == "supervisor")
        specs = 1 if self._simple else len(slots)
        return Counts(specs, active, supervisors, len(slots) - supervisors)


def _gone(pid: Any) -> bool:
    if isinstance(pid, ActorRef):
        return not pid.is_alive
    if isinstance(pid, int) and not isinstance(pid, bool):
        return not psutil.pid_exists(pid)
    return False


async def start_supervisor(
    system: ActorSystem,
    flags: SupFlags,
    specs: Iterable[ChildSpec],
    *,
    name: str | None = None,
    init: Callable[[], Any] | None = None,
    on_child_exit: ChildExitHook | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SupervisorRef | Ignore:
    """Start a supervisor actor on `system` and its children, in list order.

    Args:
        system: a running `ActorSystem`; the supervisor and its actor children run on it.
        flags: strategy, intensity, period, auto_shutdown, backoff.
        specs: the child specs (a ``simple_one_for_one`` pool: exactly one template).
        name: a registered name for the supervisor actor (`ActorSystem.whereis`).
        init: called first, on the loop (may be async): return None to go on
            with `flags` and `specs`, a ``(SupFlags, specs)`` pair to use those
            instead, or `IGNORE` to start nothing (this function then returns
            `IGNORE`).
        on_child_exit: a `ChildExitHook`, called for every child exit before any restart.
        clock: the monotonic clock for restart intensity and backoff (injectable for tests).

    Returns:
        A `SupervisorRef`, or `IGNORE`.

    Raises:
        InvalidSupFlags, InvalidChildSpec: bad flags or specs (nothing was started).
        StartFailed: `init` raised or returned something else (``child_id`` None),
            or a child failed to start (the ones started before it were stopped,
            in reverse order).
    """
    loop = system.loop
    if asyncio.get_running_loop() is not loop:
        future = asyncio.run_coroutine_threadsafe(
            start_supervisor(system, flags, specs, name=name, init=init, on_child_exit=on_child_exit, clock=clock),
            loop)
        return await asyncio.wrap_future(future)
    if init is not None:
        try:
            result = init()
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise StartFailed(None, exc) from exc
        if isinstance(result, Ignore):
            return IGNORE
        if isinstance(result, tuple) and len(result) == 2:
            flags, specs = result
            try:
                checked = check_specs(flags, specs)
            except ValueError as exc:
                raise StartFailed(None, exc) from exc
        elif result is None:
            checked = check_specs(flags, specs)
        else:
            raise StartFailed(None, f"init returned {result!r}; expected None, IGNORE or (SupFlags, specs)")
    else:
        checked = check_specs(flags, specs)
    supervisor = Supervisor(flags, checked, on_child_exit, clock)
    ref = await system.spawn(supervisor, name=name)
    return SupervisorRef(system, ref)


def supervisor_spec(
    id: str,
    flags: SupFlags,
    specs: Iterable[ChildSpec],
    restart: str = "permanent",
    shutdown: float | str | None = None,
    *,
    significant: bool = False,
    name: str | None = None,
    init: Callable[[], Any] | None = None,
    on_child_exit: ChildExitHook | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ChildSpec:
    """A `ChildSpec` of type supervisor that runs `start_supervisor` as a child, so supervisors nest.

    Each (re)start starts a fresh supervisor with `specs`: its static children
    come back, children added later with `start_child` do not (A23).
    ``shutdown`` defaults to ``"infinity"`` (let it stop its own children).
    The child's `ChildInfo.supervisor` is the nested `SupervisorRef`.
    The other arguments are those of `ChildSpec` and `start_supervisor`.

    Raises:
        InvalidSupFlags, InvalidChildSpec: bad flags or specs (checked now).
    """
    checked = check_specs(flags, specs)

    async def start() -> ActorChild | Ignore:
        system = current_system()
        sup = await start_supervisor(system, flags, checked, name=name, init=init, on_child_exit=on_child_exit,
                                     clock=clock)
        if isinstance(sup, Ignore):
            return IGNORE
        return ActorChild(system, sup.ref, supervisor=sup)

    start.__qualname__ = f"supervisor_spec({id!r})"
    return ChildSpec(id, start, restart=restart, shutdown=shutdown, type="supervisor", significant=significant)
