"""`SupervisorRef`: the admin interface of a running supervisor, and what it reports.

Every call is a message to the supervisor actor, so calls and child exits are
handled in mailbox order (see `actorq.supervisors._ops`). Calls wait for the
outcome without a timeout, as OTP's do: `terminate_child` returns once the
child has exited, which may take its whole ``shutdown`` time. If the
supervisor stops first, the call raises `ActorStopped`. Calls are safe from
any thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from actorq._kernel.ref import ActorRef
from actorq._kernel.system import ActorSystem, is_loop_thread, request_exit, stopped_future
from actorq.errors import ActorStopped
from actorq.supervisors.exits import Exit

if TYPE_CHECKING:
    from actorq.supervisors.spec import ChildSpec

__all__ = ["ChildInfo", "Counts", "SupervisorRef"]

ChildState = Literal["running", "stopped", "restarting"]


@dataclass(frozen=True)
class ChildInfo:
    """One child as `which_children` reports it.

    Attributes:
        id: the spec id (in a ``simple_one_for_one`` pool, the template's id).
        pid: the running child's pid (an int for a process, an `ActorRef` for an
            actor), None when stopped, ``"restarting"`` while a restart is
            pending or failing.
        type: ``"worker"`` or ``"supervisor"``.
        restart: ``"permanent"``, ``"transient"`` or ``"temporary"``.
        restarts: how many times the supervisor started this child again after
            its first start (restarts and `restart_child`).
        state: ``"running"``, ``"stopped"`` or ``"restarting"``.
        ref: the child's `ActorRef` (actors), else None.
        supervisor: for a child that is a supervisor actor, its `SupervisorRef`,
            so a caller can walk the live tree; else None.
    """

    id: str
    pid: Any
    type: str
    restart: str
    restarts: int
    state: ChildState
    ref: ActorRef | None = None
    supervisor: "SupervisorRef | None" = None


@dataclass(frozen=True)
class Counts:
    """`count_children`, as OTP counts them.

    Attributes:
        specs: child specs (1 for a ``simple_one_for_one`` pool: its template).
        active: children running now.
        supervisors: children (specs, or pool members) of type supervisor, running or not.
        workers: the same for workers.
    """

    specs: int
    active: int
    supervisors: int
    workers: int


@dataclass(frozen=True, slots=True)
class Call:
    """A request to the supervisor actor; `reply` receives the outcome."""

    op: str
    args: tuple[Any, ...]
    reply: "asyncio.Future[Any]"


class SupervisorRef:
    """A handle on a running supervisor (returned by `start_supervisor`).

    Attributes:
        ref: the supervisor actor's `ActorRef`.
        name: its registered name.
    """

    def __init__(self, system: ActorSystem, ref: ActorRef) -> None:
        self._system = system
        self.ref = ref
        self.name = ref.name

    def __repr__(self) -> str:
        return f"<SupervisorRef {self.name}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SupervisorRef):
            return NotImplemented
        return self.ref == other.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    async def _call(self, op: str, *args: Any) -> Any:
        if not is_loop_thread(self.ref):
            future = asyncio.run_coroutine_threadsafe(self._call(op, *args), self._system.loop)
            return await asyncio.wrap_future(future)
        reply: asyncio.Future[Any] = self._system.loop.create_future()
        self.ref.tell(Call(op, args, reply))
        stopped = stopped_future(self.ref)
        await asyncio.wait((reply, stopped), return_when=asyncio.FIRST_COMPLETED)
        if reply.done():
            return reply.result()
        raise ActorStopped(f"supervisor {self.name} stopped")

    async def which_children(self) -> list[ChildInfo]:
        """Every child, in start order (OTP lists newest first), as `ChildInfo`."""
        return await self._call("which_children")  # type: ignore[no-any-return]

    async def count_children(self) -> Counts:
        """The `Counts` of this supervisor's children."""
        return await self._call("count_children")  # type: ignore[no-any-return]

    async def start_child(self, spec_or_extra_args: "ChildSpec | tuple[Any, ...]") -> Any:
        """Start a new child and return its pid (None if its start returned IGNORE).

        Args:
            spec_or_extra_args: a `ChildSpec`; or, for a ``simple_one_for_one``
                pool, a tuple of extra args appended to the template's args.

        Raises:
            AlreadyStarted: a child with that id is running (``.pid`` is its pid).
            AlreadyPresent: a child with that id exists but is not running.
            StartFailed: the start function raised or returned something else;
                the spec is not added.
            InvalidChildSpec: the spec does not fit this supervisor.
            TypeError: a spec given to a pool, or extra args to a static supervisor.
        """
        return await self._call("start_child", spec_or_extra_args)

    async def terminate_child(self, id_or_pid: Any) -> None:
        """Stop a child (graceful stop, then kill after its ``shutdown``); return once it has exited.

        The spec is kept (a pool forgets the child; a temporary spec is
        dropped). A pending restart of the child is cancelled. Terminating a
        stopped child is a no-op.

        Args:
            id_or_pid: a child id, or a pid (the only form a pool accepts).

        Raises:
            NotFound: no such child.
            NotSupported: an id given to a ``simple_one_for_one`` pool.
        """
        await self._call("terminate_child", id_or_pid)

    async def restart_child(self, child_id: str) -> Any:
        """Start a stopped child again from its spec; return its pid (None on IGNORE).

        Raises:
            Running: it is running.
            Restarting: its restart is pending.
            NotFound: no such child.
            StartFailed: the start failed; the child stays stopped.
            NotSupported: on a ``simple_one_for_one`` pool.
        """
        return await self._call("restart_child", child_id)

    async def delete_child(self, child_id: str) -> None:
        """Forget a stopped child's spec.

        Raises:
            Running: it is running.
            Restarting: its restart is pending.
            NotFound: no such child.
            NotSupported: on a ``simple_one_for_one`` pool.
        """
        await self._call("delete_child", child_id)

    async def stop(self, reason: object = "shutdown") -> None:
        """Stop the supervisor: it terminates its children in reverse start order
        (a pool: all at once), then exits with `reason`. Returns once it has.

        A no-op if it has stopped already.
        """
        if not is_loop_thread(self.ref):
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.stop(reason), self._system.loop))
            return
        request_exit(self.ref, reason)
        await self.ref.wait_stopped()

    async def wait(self) -> Exit:
        """Wait until the supervisor has exited; return its `Exit`.

        ``shutdown`` after `stop`, ``Exit("shutdown", "reached_max_restart_intensity ...")``
        when it gave up, ``killed`` when it was killed.
        """
        if not is_loop_thread(self.ref):
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.wait(), self._system.loop))
        return Exit.from_actor(await self.ref.wait_stopped())
