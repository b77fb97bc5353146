"""A real `Worker` on the test's loop, talking to a ROUTER socket the test holds as its dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Iterator

import zmq

from actorq import TaskRegistry
from actorq.jobs import wire
from actorq.jobs.worker import Worker, WorkerSpec

MAX_FRAME = 1 << 20


@contextlib.contextmanager
def worker_on_router(tmp_path: Path, registry: TaskRegistry, *, owner: str = "n/1/x", concurrency: int = 1,
                     prefetch: int = 1) -> Iterator[tuple[Worker, zmq.Socket]]:
    """A started `Worker` (frames of at most `MAX_FRAME`) and the bound ROUTER it connects to.

    Call it inside the test's coroutine: the worker runs on the running loop.
    """
    endpoint = f"ipc://{tmp_path}/dispatcher"
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send past the worker's high-water mark waits, not drops
    router.bind(endpoint)
    spec = WorkerSpec(endpoint=endpoint, owner=owner, concurrency=concurrency, prefetch=prefetch,
                      queues=["default"], tasks=[], sys_path=[], log_level="info", max_frame_bytes=MAX_FRAME,
                      heartbeat_interval=60.0)
    worker = Worker(spec, registry, asyncio.get_running_loop())
    worker.start()
    try:
        yield worker, router
    finally:
        worker.close()
        router.close(linger=0)


def acks_received(router: zmq.Socket, items: int, wait_ms: int = 5000) -> list[wire.Ack]:
    """The ACK messages on `router` until they answer `items` jobs, or none comes for `wait_ms`.

    It blocks: call it in an executor while the worker's loop runs, or once the worker is done.
    """
    acks: list[wire.Ack] = []
    while sum(len(a.succeeded) + len(a.released) + len(a.ended) for a in acks) < items and router.poll(wait_ms):
        ident, frame = router.recv_multipart()
        message = wire.from_worker(frame, ident, MAX_FRAME)
        if isinstance(message, wire.Ack):
            acks.append(message)
    return acks
