"""A real `Dispatcher` and journal writer on an SQLite file, and a worker peer the test drives frame by frame.

The dispatcher, its writer thread and the journal are the node's own; only the
worker is the test's: a DEALER that says exactly what the test tells it to, so a
test can stay silent, hold or forget jobs, and answer WHO and RESET when it chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import zmq

from actorq.ids import new_id
from actorq.jobs import journal_writer as jw
from actorq.jobs import wire
from actorq.jobs.dispatcher import Dispatcher
from actorq.jobs.task import encode_payload
from actorq.journal import NewJob, open_journal
from actorq.journal.protocol import JobInfo
from actorq.testing import eventually

MAX_FRAME = 1 << 20
CAPACITY = 4


class Harness:
    """The journal writer, the current dispatcher and how to make the next one (a restart)."""

    def __init__(self, tmp_path: Path, writer: jw.JournalWriter, make: Callable[[], Dispatcher]) -> None:
        self.tmp_path = tmp_path
        self.writer = writer
        self._make = make
        self.dispatcher = make()
        self.dispatcher.start()
        self.dispatcher.take_over(None)

    @property
    def endpoint(self) -> str:
        """Where the dispatcher listens (the same across restarts)."""
        return self.dispatcher.endpoint

    def restart(self) -> Dispatcher:
        """Close the dispatcher and start another on the same endpoint, as the node's supervisor does."""
        previous = self.dispatcher
        previous.close()
        self.dispatcher = self._make()
        self.dispatcher.start()
        self.dispatcher.take_over(previous)
        return self.dispatcher

    async def enqueue(self, count: int) -> list[str]:
        """Commit `count` jobs of task ``t`` on queue ``default``; wake the dispatcher."""
        ids = [new_id() for _ in range(count)]
        for job_id in ids:
            await self.writer.call(jw.ENQUEUE, NewJob(job_id, "default", "t", encode_payload([], {})))
        self.dispatcher.wake(None)
        return ids

    async def info(self, job_id: str) -> JobInfo:
        """The job as the journal holds it, with its recorded errors."""
        info = await self.writer.call(jw.CALL, lambda journal: journal.get(job_id))
        assert info is not None, job_id
        return info


@contextlib.asynccontextmanager
async def dispatcher_on_sqlite(tmp_path: Path, *, lease_timeout: float = 300.0,
                               heartbeat_timeout: float = 60.0) -> AsyncIterator[Harness]:
    """A started `Harness`: call it inside the test's coroutine (everything runs on its loop)."""
    loop = asyncio.get_running_loop()
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    writer = jw.JournalWriter(lambda: open_journal(url), loop)
    await writer.start()
    endpoint = f"ipc://{tmp_path}/dispatcher"

    def make() -> Dispatcher:
        return Dispatcher(writer, loop, endpoint, lease_timeout=lease_timeout, heartbeat_timeout=heartbeat_timeout,
                          max_frame_bytes=MAX_FRAME, worker_capacity=CAPACITY)

    harness = Harness(tmp_path, writer, make)
    try:
        yield harness
    finally:
        harness.dispatcher.close()
        await writer.stop()


class Peer:
    """A worker's socket, driven by the test: it sends only what it is told to."""

    def __init__(self, endpoint: str, owner: str) -> None:
        self.owner = owner
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, owner.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def close(self) -> None:
        """Close the socket and its context."""
        self.ctx.destroy(linger=0)

    def hello(self, credits: int = CAPACITY, held: dict[str, int] | None = None, reset: bool = False) -> None:
        """Announce itself (with `held`: re-announce)."""
        self.sock.send(wire.Hello(self.owner, credits, ("default",), os.getpid(), held, reset).encode())

    def heartbeat(self) -> None:
        """Say it is alive."""
        self.sock.send(wire.Heartbeat.FRAME)

    async def receive(self, kind: type, *, timeout: float = 30.0,
                      between: Callable[[], None] | None = None) -> object:
        """The next message of `kind` from the dispatcher (others are skipped).

        `between` runs before each wait (e.g. a heartbeat, so that a dispatcher that does
        not know this peer answers it).
        """
        async def poll() -> object:
            if between is not None:
                between()
            while self.sock.poll(0):
                message = wire.from_dispatcher(self.sock.recv(), MAX_FRAME)
                if isinstance(message, kind):
                    return message
            return None

        return await eventually(poll, timeout=timeout, interval=0.1, message=f"{self.owner} got {kind.__name__}")


@contextlib.contextmanager
def peer(endpoint: str, owner: str = "n/1/peer") -> Iterator[Peer]:
    """A `Peer` connected to `endpoint`, closed at the end."""
    p = Peer(endpoint, owner)
    try:
        yield p
    finally:
        p.close()
