"""Remote actors' sockets under bad input (ACCEPTANCE G1, G5, G10).

Two sockets: the hub (a ROUTER in the supervisor's process, here the test's)
and each child's DEALER. A stranger DEALER fuzzes the hub; the hub's own socket
fuzzes a child, as a parent gone wrong would. Every bad frame must be dropped
and counted by reason (the hub's ``dropped``; the child's through
``await ref.dropped()``), nothing may escape (no traceback, no error record,
about one log line a second), the child must stay alive (same pid) and the next
ask must be answered. A sender refuses what its peer would drop.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest

from actorq import ActorSystem, MailboxFull
from actorq.supervisors import ChildSpec, RemoteError, RemoteRef, SupFlags, actor_process, start_supervisor
from actorq.supervisors.remote import (
    AASK, ADROPS, AHELLO, AREPLY, ATELL, MAX_DEPTH, QUEUED_PER_CHILD, parse_to_child,
)
from actorq.testing import eventually
from actorq.transports.codec import FrameError, encode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "transports"))
from socket_support import Peer, batch, mutate, nested, pk  # noqa: E402

ACTORS = '''
import os
import actorq


class Sink(actorq.Actor):
    """Takes any message; answers "count", "pid", "deep", and echoes anything else."""

    def __init__(self):
        self.count = 0

    def on_receive(self, message):
        self.count += 1

    async def on_ask(self, message):
        if message == "count":
            return self.count
        if message == "pid":
            return os.getpid()
        if message == "deep":
            deep = None
            for _ in range(100):
                deep = [deep]
            return deep
        return message
'''


@pytest.fixture
def sink_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "remote_sink.py").write_text(ACTORS)
    monkeypatch.syspath_prepend(str(tmp_path))  # the child's sys.path is the parent's
    return "remote_sink"


def envelope(kind: str, body: bytes) -> bytes:
    return b"\x93\x01" + pk(kind) + body


async def _sink(system: ActorSystem, module: str, warm_up: int = 0) -> RemoteRef:
    """A supervised Sink in its own process, asked `warm_up` times (for a steady RSS)."""
    sup = await start_supervisor(system, SupFlags("one_for_one", intensity=3, period=60), [
        ChildSpec("sink", actor_process(f"{module}:Sink"), shutdown=10.0),
    ])
    [info] = await sup.which_children()
    assert isinstance(info.ref, RemoteRef)
    for _ in range(warm_up):
        await info.ref.ask("count")
    return info.ref


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def _drop_lines(caplog: pytest.LogCaptureFixture) -> int:
    return sum("dropped a frame" in r.getMessage() for r in caplog.records)


# -- the hub: frames from a stranger ------------------------------------------------------

NUMBER = 2**40  # an ask number no test ask uses

TO_HUB_BAD: list[tuple[str, list[bytes]]] = [
    # G10: nested 1,000 deep as version, kind and reply value; and just past MAX_DEPTH
    ("bad_version", [b"\x93" + nested(1000) + pk(AREPLY) + b"\xc0"]),
    ("unknown_kind", [b"\x93\x01" + nested(1000) + b"\xc0"]),
    ("too_deep", [envelope(AREPLY, b"\x93" + pk(NUMBER) + b"\xc3" + nested(1000))]),
    ("too_deep", [envelope(AREPLY, b"\x93" + pk(NUMBER) + b"\xc3" + nested(MAX_DEPTH + 1))]),
    ("bad_body", [envelope(AHELLO, nested(1000))]),
    # shapes
    ("bad_body", [encode(AHELLO, 1)]),
    ("bad_body", [encode(AREPLY, None)]),
    ("bad_body", [encode(AREPLY, [NUMBER, True])]),
    ("bad_body", [encode(AREPLY, [True, True, 1])]),
    ("bad_body", [encode(AREPLY, [0, True, 1])]),
    ("bad_body", [encode(AREPLY, [2**64 - 1, True, 1])]),
    ("bad_body", [encode(AREPLY, ["1", True, 1])]),
    ("bad_body", [encode(AREPLY, [NUMBER, 1, 1])]),
    ("bad_body", [encode(AREPLY, [NUMBER, False, ["not", "text"]])]),
    ("bad_body", [encode(AREPLY, [NUMBER, True, 1, 2])]),
    # valid shapes nobody waits for
    ("unexpected_hello", [encode(AHELLO, None)]),
    ("unexpected_reply", [encode(AREPLY, [NUMBER, True, {"a": [1]}])]),
    ("unexpected_reply", [envelope(AREPLY, b"\x93" + pk(NUMBER) + b"\xc3" + nested(MAX_DEPTH))]),
    ("unexpected_reply", [encode(AREPLY, [NUMBER, False, "ValueError: x"])]),
    # kinds of the other direction, and of no one
    ("unknown_kind", [encode(ATELL, 1)]),
    ("unknown_kind", [encode(AASK, [NUMBER, 1])]),
    ("unknown_kind", [encode(ADROPS, NUMBER)]),
    ("unknown_kind", [encode("tree", None)]),
    # G1/G3: the envelope
    ("not_msgpack", [b""]),
    ("not_msgpack", [b"\xc1"]),
    ("not_msgpack", [encode(AREPLY, [NUMBER, True, 1])[:-1]]),
    ("not_msgpack", [envelope(AREPLY, b"\xdd\xff\xff\xff\xff")]),
    ("not_msgpack", [envelope(AREPLY, b"\xdf\x80\x00\x00\x00")]),
    ("not_msgpack", [pk([1, AREPLY, [NUMBER, True, {1: 2}]])]),
    ("not_msgpack", [pk([1, AREPLY, [NUMBER, True, msgpack.ExtType(1, b"x")]])]),
    ("trailing_bytes", [encode(AHELLO, None) + b"\x00"]),
    ("bad_envelope", [pk([1, AHELLO])]),
    ("bad_version", [pk([2, AHELLO, None])]),
    ("part_count", [encode(AHELLO, None), b""]),
]


async def test_g1_g5_g10_hub_fuzz_drops_and_counts_every_frame_of_a_stranger(sink_module, rng, caplog) -> None:
    caplog.set_level(logging.WARNING)
    frames = 3000
    async with ActorSystem() as system:
        ref = await _sink(system, sink_module)
        pid = ref.pid
        hub = ref._hub  # the supervisor's process's one ROUTER for its remote actors
        started = time.monotonic()

        messages, expected = batch(TO_HUB_BAD, 10)
        stranger = Peer(hub.endpoint)  # not a child
        await stranger.send_all(messages)
        await eventually(lambda: hub.dropped.total >= len(messages), timeout=60,
                         message="the bad frames were counted")
        assert dict(hub.dropped.by_reason) == dict(expected)

        corpus = [parts[0] for _, parts in TO_HUB_BAD if len(parts) == 1 and parts[0]]
        fuzz = [[mutate(rng, rng.choice(corpus))] for _ in range(frames)]
        await stranger.send_all(fuzz)
        total = len(messages) + frames  # nothing a stranger sends can be used: every frame is dropped
        await eventually(lambda: hub.dropped.total == total, timeout=60, message="the fuzzed frames were counted")
        stranger.close()
        print(f"hub fuzz: {frames} frames; dropped {dict(hub.dropped.by_reason)}")
        elapsed = time.monotonic() - started

        assert ref.is_alive and ref.pid == pid
        assert await ref.ask("pid") == pid  # the next ask is answered
    assert _problems(caplog) == []
    assert 1 <= _drop_lines(caplog) <= elapsed + 2


# -- the child: frames from a parent gone wrong -------------------------------------------

TO_CHILD_BAD: list[tuple[str, list[bytes]]] = [
    ("bad_version", [b"\x93" + nested(1000) + pk(ATELL) + b"\xc0"]),
    ("unknown_kind", [b"\x93\x01" + nested(1000) + b"\xc0"]),
    ("too_deep", [envelope(ATELL, nested(1000))]),
    ("too_deep", [envelope(ATELL, nested(MAX_DEPTH + 1))]),
    ("too_deep", [envelope(AASK, b"\x92" + pk(NUMBER) + nested(MAX_DEPTH + 1))]),
    ("bad_body", [encode(AASK, None)]),
    ("bad_body", [encode(AASK, [NUMBER])]),
    ("bad_body", [encode(AASK, [True, "pid"])]),
    ("bad_body", [encode(AASK, [-1, "pid"])]),
    ("bad_body", [encode(AASK, ["1", "pid"])]),
    ("bad_body", [encode(AASK, [NUMBER, "pid", 3])]),
    ("bad_body", [encode(ADROPS, None)]),
    ("bad_body", [encode(ADROPS, [NUMBER])]),
    ("unknown_kind", [encode(AHELLO, None)]),
    ("unknown_kind", [encode(AREPLY, [NUMBER, True, 1])]),
    ("not_msgpack", [b""]),
    ("not_msgpack", [encode(ATELL, 1)[:-1]]),
    ("not_msgpack", [envelope(ATELL, b"\xdd\xff\xff\xff\xff")]),
    ("not_msgpack", [envelope(ATELL, b"\xdf\x80\x00\x00\x00")]),
    ("not_msgpack", [pk([1, ATELL, {1: 2}])]),
    ("not_msgpack", [pk([1, ATELL, msgpack.ExtType(1, b"x")])]),
    ("trailing_bytes", [encode(ATELL, 1) + b"\x00"]),
    ("bad_envelope", [pk([1, ATELL])]),
    ("part_count", [encode(ATELL, 1), b""]),
]


async def send_to_child(ref: RemoteRef, messages: list[list[bytes]], chunk: int = 200) -> None:
    """Send raw frames through the hub to `ref`'s process, an ask after each chunk (back-pressure)."""
    assert chunk < QUEUED_PER_CHILD
    for start in range(0, len(messages), chunk):
        for parts in messages[start:start + chunk]:
            ref._hub.socket.send([ref._ident, *parts])
        await ref.ask("count", timeout=60)


def _valid_for_child(frame: bytes) -> str | None:
    try:
        return parse_to_child(frame)[0]
    except FrameError:
        return None


async def test_g1_g5_g10_child_fuzz_drops_and_counts_every_bad_frame(sink_module, rng, caplog) -> None:
    caplog.set_level(logging.WARNING)
    frames = 3000
    async with ActorSystem() as system:
        ref = await _sink(system, sink_module)
        pid = ref.pid
        hub = ref._hub
        hub.numbers = itertools.count(2**62)  # the test's asks never meet a fuzzed ask's number

        messages, expected = batch(TO_CHILD_BAD, 10)
        await send_to_child(ref, messages)
        assert await ref.dropped() == dict(expected)
        assert await ref.ask("count") == 0  # no bad frame reached the actor

        corpus = [parts[0] for _, parts in TO_CHILD_BAD if len(parts) == 1 and parts[0]]
        corpus += [encode(ATELL, {"resize": [640, 480]}), encode(AASK, [NUMBER, "ping"]), encode(ADROPS, NUMBER)]
        fuzz = [[mutate(rng, rng.choice(corpus))] for _ in range(frames)]
        kinds = Counter(_valid_for_child(parts[0]) for parts in fuzz)
        replies_before = hub.dropped.by_reason["unexpected_reply"]
        await send_to_child(ref, fuzz)

        dropped = await ref.dropped()
        delivered = await ref.ask("count")
        replied = hub.dropped.by_reason["unexpected_reply"] - replies_before  # answers to fuzzed asks
        print(f"child fuzz: {frames} frames; valid {dict(kinds)}; child dropped {dropped}")
        # every frame accounted for: dropped by the child, delivered to the actor, or answered
        assert sum(dropped.values()) - len(messages) == kinds[None]
        assert delivered == kinds[ATELL]
        assert replied == kinds[AASK] + kinds[ADROPS]
        assert ref.is_alive and ref.pid == pid and await ref.ask("pid") == pid
    assert _problems(caplog) == []


# -- senders refuse what the peer would drop ------------------------------------------------


async def test_a_message_too_deep_or_too_large_is_refused_at_the_call_site(sink_module) -> None:
    async with ActorSystem() as system:
        ref = await _sink(system, sink_module)
        deep: Any = 1
        for _ in range(MAX_DEPTH + 1):
            deep = [deep]
        with pytest.raises(ValueError, match="nested deeper than 64"):
            ref.tell(deep)
        with pytest.raises(ValueError, match="nested deeper than 64"):
            await ref.ask(deep)
        with pytest.raises(ValueError, match="more than"):
            ref.tell(b"\x00" * (16 << 20))
        ref.tell(deep[0])  # at the bound: fine
        # a reply too deep for the hub is refused in the child, and said so
        with pytest.raises(RemoteError, match="reply not sent: ValueError: reply: the message is nested deeper"):
            await ref.ask("deep")
        assert await ref.ask("count") == 1
        assert await ref.dropped() == {}


async def test_h12_a_tell_past_the_queue_bound_raises_mailbox_full(sink_module) -> None:
    async with ActorSystem() as system:
        ref = await _sink(system, sink_module)
        os.kill(ref.pid, signal.SIGSTOP)  # the child reads nothing
        try:
            sent = 0
            with pytest.raises(MailboxFull, match="messages wait for its process"):
                for _ in range(1_000_000):
                    ref.tell(b"\x00" * 1024)
                    sent += 1
            assert QUEUED_PER_CHILD <= sent < 1_000_000
        finally:
            os.kill(ref.pid, signal.SIGCONT)
        # every tell that did not raise arrives (an ask raises MailboxFull too until the queue drains)
        await eventually(lambda: _count_is(ref, sent), timeout=60, message=f"{sent} tells arrived")


async def _count_is(ref: RemoteRef, n: int) -> bool:
    return await ref.ask("count") == n
