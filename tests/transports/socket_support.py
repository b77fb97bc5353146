"""Helpers for the tests that attack actorq's sockets (control, remote actors, listeners).

Bad frames (`pk`, `nested`, `mutate`, `batch`), a peer that sends from a thread
(`Peer`), an RSS sampler (`RssSampler`), and reading a node's tree and status
(`restarts`, `processes`, `wait_for_node`, `ask_tree`, `ask_node_status`). Test modules outside this
directory put it on ``sys.path`` first, as ``tests/conftest.py`` does for
``journal_support``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import psutil
import zmq

from actorq.node.control import TREE, NodeNotRunning, query, read_node_file
from actorq.node.status import ask_status

MB = 1 << 20
RSS_GROWTH_BOUND = 50 * MB  # generous: a shared CI machine is noisy


def pk(obj: object) -> bytes:
    """msgpack of `obj`, as a peer that skips the codec would send it."""
    return msgpack.packb(obj, use_bin_type=True)


def nested(depth: int, leaf: bytes = b"\xc0") -> bytes:
    """`depth` one-item arrays around `leaf`: 1,000 levels cost 1,001 bytes."""
    return b"\x91" * depth + leaf


def batch(cases: list[tuple[str, list[bytes]]], times: int) -> tuple[list[list[bytes]], Counter[str]]:
    """Every case's parts `times` over, and how many drops of each reason they must cause."""
    messages = [parts for _ in range(times) for _, parts in cases]
    expected: Counter[str] = Counter(reason for _ in range(times) for reason, _ in cases)
    return messages, expected


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One to four random edits of `frame`: a byte, an insertion, a cut, a repeat, a huge header."""
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 4))
        elif op == 2 and data:
            del data[rng.randrange(len(data)):]
        elif op == 3:
            i = rng.randrange(len(data) + 1)
            data[i:i] = data[i:i + rng.randint(1, 16)]
        else:
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes([rng.choice([0xDC, 0xDD, 0xDE, 0xDF, 0xDB, 0xC6])]) + rng.randbytes(4)
    return bytes(data)


class Peer:
    """A DEALER that sends from a thread, so the loop under test keeps draining meanwhile.

    It stays connected until closed: libzmq may discard what a closed peer left unread
    behind a full RCVHWM, and every frame sent must arrive to be counted.
    """

    def __init__(self, endpoint: str, identity: bytes | None = None) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        if identity is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, 30_000)
        self.sock.connect(endpoint)

    async def send_all(self, messages: list[list[bytes]]) -> None:
        """Send every message (each a list of parts), blocking a worker thread, not the loop."""
        def send() -> None:
            for parts in messages:
                self.sock.send_multipart(parts)

        await asyncio.to_thread(send)

    def close(self) -> None:
        self.sock.close()


class RssSampler:
    """Samples a process's RSS every 20 ms on a thread until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> tuple[int, int, int]:
        """``(baseline, peak, now)``."""
        self._stop.set()
        self._thread.join()
        now = self.process.memory_info().rss
        return self.baseline, max(self.peak, now), now


def restarts(tree: dict[str, Any]) -> dict[str, int]:
    """``{path: restarts}`` of every node of a tree as `Node.tree` returns it."""
    found: dict[str, int] = {}
    stack = [("", tree)]
    while stack:
        prefix, item = stack.pop()
        path = f"{prefix}/{item['id']}"
        found[path] = item["restarts"]
        stack.extend((path, child) for child in item.get("children", []))
    return found


def processes(tree: dict[str, Any]) -> int:
    """How many children of the tree are OS processes (the workers)."""
    count = 0
    stack = [tree]
    while stack:
        item = stack.pop()
        count += item.get("kind") == "process"
        stack.extend(item.get("children", []))
    return count


def ask_tree(endpoint: str, timeout: float = 60.0) -> dict[str, Any]:
    """The node's tree, asked again while the node answers busy or not at all (bounded)."""
    return _ask_until_answered(lambda: query(endpoint, TREE, None, timeout=5.0), timeout)


def ask_node_status(endpoint: str, timeout: float = 60.0) -> dict[str, Any]:
    """The node's checked STATUS reply, asked again while it answers busy or not at all (bounded)."""
    return _ask_until_answered(lambda: ask_status(endpoint, 5.0), timeout)


def _ask_until_answered(ask: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply: dict[str, Any] = ask()
            return reply
        except NodeNotRunning:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_for_node(node_file: Path, workers: int, output: Any, timeout: float = 60.0) -> str:
    """Wait (bounded) until the node of `node_file` answers ``tree`` with `workers` running.

    Returns its control endpoint; `output()` gives the node's log for the failure message.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            endpoint = str(read_node_file(node_file)["control"])
            if processes(query(endpoint, TREE, None, timeout=5.0)) == workers:
                return endpoint
        except NodeNotRunning:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the node did not start: {output()[-2000:]}")
