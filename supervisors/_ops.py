"""The supervisor's operation queue: mailbox order per child, no head-of-line blocking.

Every state change of a supervisor (an admin call, a child's exit, a due
restart) arrives as a message and becomes an *operation* that names the
children it touches: one child (``frozenset({key})``) or all of them (`ALL`).
Operations start in arrival order; one waits only while an earlier operation
that touches one of its children is queued or running::

    mailbox ─▶ on_receive ─▶ [op1 {a}] [op2 ALL] [op3 {b}] ...
                                 │ runs      │ waits for op1; op3 waits for op2

So a child that ignores its stop request delays only the operations on that
child (and group operations, which touch all), while the mailbox keeps
draining: queries are answered, other children are restarted. Between two
awaits an operation runs alone on the loop, so state changes never interleave
inside a step.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable, Hashable

from actorq.errors import ActorStopped
from actorq.supervisors.errors import InvalidChildSpec, SupervisorError

logger = logging.getLogger(__name__)

ALL: None = None  # an operation that touches every child
Keys = frozenset[Hashable] | None

# Outcomes that are answers to the caller, not supervisor bugs.
_EXPECTED = (SupervisorError, InvalidChildSpec, TypeError)


def _conflict(a: Keys, b: Keys) -> bool:
    return a is None or b is None or not a.isdisjoint(b)


class _Op:
    __slots__ = ("keys", "fn", "reply", "task")

    def __init__(self, keys: Keys, fn: Callable[[], Awaitable[Any]], reply: "asyncio.Future[Any] | None") -> None:
        self.keys = keys
        self.fn = fn
        self.reply = reply
        self.task: asyncio.Task[None] | None = None


class OpQueue:
    """Runs operations in arrival order, concurrently when they touch different children.

    Args:
        on_bug: called with an unexpected exception raised by an operation
            (the supervisor then crashes itself, OTP-style).
    """

    def __init__(self, on_bug: Callable[[BaseException], None]) -> None:
        self._on_bug = on_bug
        self._queue: deque[_Op] = deque()
        self._running: set[_Op] = set()
        self.closed = False

    def submit(self, keys: Keys, fn: Callable[[], Awaitable[Any]], reply: "asyncio.Future[Any] | None" = None) -> None:
        """Queue ``fn()``; its result or exception goes to `reply` when given."""
        if self.closed:
            if reply is not None and not reply.done():
                reply.set_exception(ActorStopped("the supervisor is stopping"))
            return
        self._queue.append(_Op(keys, fn, reply))
        self._pump()

    def _pump(self) -> None:
        if self.closed:
            return
        blocked: list[Keys] = []
        waiting: deque[_Op] = deque()
        queue = self._queue
        while queue:
            op = queue.popleft()
            if any(_conflict(op.keys, k) for k in blocked) or any(_conflict(op.keys, r.keys) for r in self._running):
                waiting.append(op)
                if op.keys is ALL:  # everything behind a waiting group operation waits too
                    waiting.extend(queue)
                    queue.clear()
                    break
                blocked.append(op.keys)
                continue
            self._running.add(op)
            op.task = asyncio.get_running_loop().create_task(self._run(op))
        self._queue = waiting

    async def _run(self, op: _Op) -> None:
        try:
            result = await op.fn()
        except asyncio.CancelledError:
            if op.reply is not None and not op.reply.done():
                op.reply.set_exception(ActorStopped("the supervisor stopped"))
            raise
        except BaseException as exc:
            if op.reply is not None and not op.reply.done():
                op.reply.set_exception(exc)
            if not isinstance(exc, _EXPECTED):
                self._on_bug(exc)
        else:
            if op.reply is not None and not op.reply.done():
                op.reply.set_result(result)
        finally:
            self._running.discard(op)
            self._pump()

    def close(self) -> None:
        """Start nothing more; fail the replies of the operations still queued."""
        self.closed = True
        queued, self._queue = self._queue, deque()
        for op in queued:
            if op.reply is not None and not op.reply.done():
                op.reply.set_exception(ActorStopped("the supervisor stopped"))

    async def drain(self) -> None:
        """Wait until the running operations have finished."""
        while self._running:
            tasks = [op.task for op in self._running if op.task is not None]
            await asyncio.wait(tasks)

    def cancel_running(self) -> None:
        """Cancel the running operations (when the supervisor is killed)."""
        for op in list(self._running):
            if op.task is not None:
                op.task.cancel()
