"""Fake peers on the job sockets, and the frames they send.

A flooding peer sends from its own thread with blocking sends, as fast as the
other end takes them: the node under test runs on the test's loop, which must
stay free to read them (a send blocked on the high-water mark from the loop's
own thread would never return).
"""

from __future__ import annotations

import asyncio
import random
from typing import Callable, Iterable

import zmq

DEEP = 1000  # ACCEPTANCE G10: nested 1,000 deep


def nested(depth: int = DEEP) -> bytes:
    """msgpack for ``[[[...[nil]...]]]``, `depth` arrays deep (msgpack's packer stops at 512)."""
    return b"\x91" * depth + b"\xc0"


def deep_frames(kind: bytes) -> list[bytes]:
    """Envelopes of `kind` (msgpack-encoded) nested 1,000 deep in the version, the kind and the body."""
    return [b"\x93" + nested() + kind + b"\xc0",  # version
            b"\x93\x01" + nested() + b"\xc0",  # kind
            b"\x93\x01" + kind + nested()]  # body


def huge_header_frames(kind: bytes) -> list[bytes]:
    """Envelopes of `kind` whose body declares 2^31 items or bytes, and carries none."""
    return [b"\x93\x01" + kind + b"\xdd\x80\x00\x00\x00",  # array32
            b"\x93\x01" + kind + b"\xdf\x80\x00\x00\x00",  # map32
            b"\x93\x01" + kind + b"\xdb\x80\x00\x00\x00",  # str32
            b"\x93\x01" + kind + b"\xc6\x80\x00\x00\x00"]  # bin32


def mutator(rng: random.Random) -> Callable[[bytes], bytes]:
    """Flip, insert, truncate or repeat bytes of a frame, 1 to 4 times."""

    def mutate(frame: bytes) -> bytes:
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            if op == 0 and data:  # flip a byte
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1:  # insert a byte
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
            elif op == 2 and data:  # truncate
                del data[rng.randrange(len(data)):]
            else:  # repeat a slice
                i = rng.randrange(len(data) + 1)
                data[i:i] = data[i:i + rng.randint(1, 8)]
        return bytes(data)

    return mutate


def send_all(sock: zmq.Socket, messages: Iterable[list[bytes]], timeout_ms: int = 120_000) -> int:
    """Send every message on `sock`, blocking on its high-water mark; return how many.

    Run it in a thread (`flood`): `sock` must not be used by anyone else meanwhile.
    Keep `sock` referenced, and open, until the other end has read everything (a
    sentinel): closed (or collected) before, what it still queues is lost.
    """
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
    sent = 0
    for parts in messages:
        sock.send_multipart(parts)
        sent += 1
    return sent


async def flood(sock: zmq.Socket, messages: Iterable[list[bytes]]) -> int:
    """`send_all` in a thread, so the loop of the node under test goes on reading."""
    return await asyncio.to_thread(send_all, sock, messages)


def dealer(ctx: zmq.Context, endpoint: str, identity: bytes) -> zmq.Socket:
    """A DEALER with routing id `identity`, connected to `endpoint`."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def restarts_in(tree: dict) -> int:  # type: ignore[type-arg]
    """Restarts of every child in a supervision tree (`Node.tree`)."""
    return int(tree.get("restarts", 0)) + sum(restarts_in(child) for child in tree.get("children", []))
