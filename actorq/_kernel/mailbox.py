"""Bounded mailboxes.

A mailbox is a FIFO of envelopes owned by one actor and touched only on the
actor system's loop thread. It is bounded: a `tell` into a full mailbox raises
`MailboxFull` at the call site instead of letting memory grow without limit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, NamedTuple

from actorq.errors import MailboxFull


class Envelope(NamedTuple):
    """One message and, for `ask`, the future that receives the reply."""

    message: Any
    reply: asyncio.Future[Any] | None


class Mailbox:
    """A bounded FIFO of `Envelope`s with an awaitable `get`."""

    __slots__ = ("capacity", "_items", "_waiter")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[Envelope] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, envelope: Envelope) -> None:
        """Append `envelope`. Raises `MailboxFull` when the mailbox is at capacity."""
        if len(self._items) >= self.capacity:
            raise MailboxFull(f"mailbox full ({self.capacity} messages)")
        self._items.append(envelope)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def put_control(self, envelope: Envelope) -> None:
        """Append a kernel control envelope (such as stop), ignoring the capacity bound."""
        self._items.append(envelope)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def put_urgent(self, envelope: Envelope) -> None:
        """Put a kernel control envelope (an exit signal) at the head, ahead of queued messages."""
        self._items.appendleft(envelope)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Envelope:
        """Remove and return the oldest envelope, waiting while the mailbox is empty."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def drain(self) -> list[Envelope]:
        """Remove and return every queued envelope."""
        items = list(self._items)
        self._items.clear()
        return items
