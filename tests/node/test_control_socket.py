"""The node's control socket under bad input (ACCEPTANCE G1, G4, G5, G10, H12).

A real node runs in the test's process (the ``topology`` fixture); a real zmq
DEALER, on a thread, sends bad requests (TREE and STATUS) to its control endpoint. Every bad
frame must be dropped and counted by reason in ``node.control.dropped``,
nothing may escape (no traceback, no error record), the log must stay at about
one line a second, the next valid request must be answered, and no role may
restart. The flood and memory tests, with the node in its own process, are in
``test_control_socket_flood.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import msgpack
import pytest
import zmq

from actorq import Node
from actorq.node.control import (
    ERROR, MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_PEER, MAX_REQUEST_BYTES, STATUS, TREE, ControlServer, NodeNotRunning,
    query,
)
from actorq.node.status import ask_status
from actorq.testing import eventually
from actorq.transports.codec import encode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "transports"))
from socket_support import Peer, batch, mutate, nested, pk, restarts  # noqa: E402

TASKS = """
@registry.task("ctl.noop")
async def noop():
    pass
"""

TREE_OK = encode(TREE, None)
STATUS_OK = encode(STATUS, None)


# (reason, the parts a DEALER sends): each a request the node must drop and count under `reason`
BAD: list[tuple[str, list[bytes]]] = [
    # G10: a version, kind or body nested 1,000 deep (before: RecursionError and a traceback each)
    ("bad_version", [b"\x93" + nested(1000) + pk(TREE) + b"\xc0"]),
    ("unknown_kind", [b"\x93\x01" + nested(1000) + b"\xc0"]),
    ("bad_body", [b"\x93\x01" + pk(TREE) + nested(1000)]),
    # H13: a tree request carries no body
    ("bad_body", [encode(TREE, 1)]),
    ("bad_body", [encode(TREE, False)]),
    ("bad_body", [encode(TREE, "x" * 64)]),
    ("bad_body", [encode(TREE, [0] * 64)]),
    ("bad_body", [encode(TREE, {})]),
    ("not_msgpack", [encode(TREE, "x" * 3000)]),  # longer than any field of a request
    ("not_msgpack", [encode(TREE, [0] * 1000)]),
    # G3/G10: headers declaring 2^31 or 2^32 items, a 4 GiB string
    ("not_msgpack", [b"\x93\x01" + pk(TREE) + b"\xdd\xff\xff\xff\xff"]),
    ("not_msgpack", [b"\x93\x01" + pk(TREE) + b"\xdf\x80\x00\x00\x00"]),
    ("not_msgpack", [b"\x93\x01\xdb\xff\xff\xff\xff"]),
    ("not_msgpack", [b"\xdd\x80\x00\x00\x00"]),
    # G1: the envelope
    ("not_msgpack", [b""]),
    ("not_msgpack", [b"\xc1"]),
    ("not_msgpack", [TREE_OK[:-1]]),
    ("not_msgpack", [b"\x93\x01\xa4tr\xff\xfe\xc0"]),  # invalid UTF-8
    ("not_msgpack", [pk([1, TREE, {1: 2}])]),  # a non-string map key
    ("not_msgpack", [pk([1, TREE, msgpack.ExtType(7, b"obj")])]),
    ("trailing_bytes", [TREE_OK + b"\x00"]),
    ("bad_envelope", [pk({TREE: None})]),
    ("bad_envelope", [pk([1, TREE])]),
    ("bad_version", [pk([2, TREE, None])]),
    ("bad_version", [pk([True, TREE, None])]),
    ("bad_version", [pk([1.0, TREE, None])]),
    ("bad_version", [pk([2**64 - 1, TREE, None])]),
    ("unknown_kind", [pk([1, "launch", None])]),
    ("unknown_kind", [pk([1, TREE.encode(), None])]),
    ("unknown_kind", [pk([1, ERROR, None])]),  # a reply kind is no request
    ("part_count", [TREE_OK, b""]),
    ("part_count", [b"", TREE_OK]),  # what a REQ socket's delimiter looks like
    # the STATUS request: as strict as TREE (body None, nothing else)
    ("bad_body", [encode(STATUS, 0)]),
    ("bad_body", [encode(STATUS, True)]),
    ("bad_body", [encode(STATUS, "")]),
    ("bad_body", [encode(STATUS, b"x" * 64)]),
    ("bad_body", [encode(STATUS, {"verbose": True})]),
    ("bad_body", [encode(STATUS, [None])]),
    ("bad_body", [b"\x93\x01" + pk(STATUS) + nested(1000)]),
    ("bad_version", [b"\x93" + nested(1000) + pk(STATUS) + b"\xc0"]),
    ("not_msgpack", [encode(STATUS, "x" * 3000)]),
    ("not_msgpack", [b"\x93\x01" + pk(STATUS) + b"\xdd\xff\xff\xff\xff"]),
    ("not_msgpack", [STATUS_OK[:-1]]),
    ("trailing_bytes", [STATUS_OK + b"\x00"]),
    ("bad_envelope", [pk([1, STATUS])]),
    ("bad_envelope", [pk([1, STATUS, None, None])]),
    ("bad_version", [pk([0, STATUS, None])]),
    ("unknown_kind", [pk([1, STATUS.encode(), None])]),
    ("unknown_kind", [pk([1, STATUS.upper(), None])]),
    ("part_count", [STATUS_OK, STATUS_OK]),
    ("part_count", [b"", STATUS_OK]),
]


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("actorq.node.control", "actorq.transports"))]


async def test_g1_g5_g10_control_socket_fuzz_drops_and_counts_every_bad_frame(topology, rng, caplog) -> None:
    frames = 3000
    topo = topology(TASKS)
    caplog.set_level(logging.WARNING)
    async with Node(topo.config) as node:
        assert node.control is not None
        endpoint = node.control.endpoint
        before = restarts(await node.tree())
        stats = node.control.dropped
        started = time.monotonic()

        # 1. every hand-made bad request, several times over: exact counts by reason
        messages, expected = batch(BAD, 10)
        peer = Peer(endpoint, b"ctl-fuzz-1")
        await peer.send_all(messages)
        await eventually(lambda: stats.total >= len(messages), timeout=60, message="the bad requests were counted")
        peer.close()
        assert dict(stats.by_reason) == dict(expected)
        assert node.control.accepted == 0

        # 2. a seeded mutation fuzz: every frame is either dropped and counted or accepted as a request
        corpus = [TREE_OK, STATUS_OK] + [parts[0] for _, parts in BAD if len(parts) == 1 and parts[0]]
        fuzz = []
        for _ in range(frames):
            frame = mutate(rng, rng.choice(corpus))
            fuzz.append([frame[:MAX_REQUEST_BYTES - 1]])  # under the size limit: none may go uncounted
        dropped_before = stats.total
        peer = Peer(endpoint, b"ctl-fuzz-2")
        await peer.send_all(fuzz)
        await eventually(lambda: stats.total - dropped_before + node.control.accepted == frames, timeout=60,
                         message=f"{frames} fuzzed frames accounted for")
        peer.close()
        print(f"control fuzz: {frames} frames, {stats.total - dropped_before} dropped, "
              f"{node.control.accepted} accepted; {dict(stats.by_reason)}")
        elapsed = time.monotonic() - started

        # the next valid requests are answered, from a new peer, and nothing restarted
        tree = await asyncio.to_thread(query, endpoint, TREE, None, 10.0)
        assert restarts(tree) == before
        status = await asyncio.to_thread(ask_status, endpoint, 10.0)
        assert status["pid"] == os.getpid() and status["workers"]["restarts"] == 0, status
        assert node.failure is None
    records = _records(caplog)
    assert not [r for r in records if r.levelno >= logging.ERROR or r.exc_info], \
        [r.getMessage() for r in records if r.levelno >= logging.ERROR or r.exc_info][:3]
    # about one line a second, whatever the number of drops (before: one line per frame)
    drop_lines = [r for r in records if "dropped a frame" in r.getMessage()]
    assert 1 <= len(drop_lines) <= elapsed + 2, (len(drop_lines), elapsed)


async def test_h12_requests_in_flight_are_bounded_per_peer_and_in_total() -> None:
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    running = 0
    peak = 0

    async def slow_tree(body: object) -> dict[str, object]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
            return {"id": "node"}
        finally:
            running -= 1

    server = ControlServer(loop, "tcp://127.0.0.1:*", {TREE: slow_tree})
    server.start()
    ctx = zmq.Context.instance()
    peers = []
    try:
        for n in range(6):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(server.endpoint)
            peers.append(sock)
        for _ in range(10):  # one peer asks ten times at once
            peers[0].send(TREE_OK)
        await eventually(lambda: server.dropped.by_reason["busy"] == 10 - MAX_IN_FLIGHT_PER_PEER,
                         message="requests past the per-peer bound are answered busy")
        for sock in peers[1:]:  # five more peers, one request each
            sock.send(TREE_OK)
        busy = 10 - MAX_IN_FLIGHT_PER_PEER + 5 - (MAX_IN_FLIGHT - MAX_IN_FLIGHT_PER_PEER)
        await eventually(lambda: server.dropped.by_reason["busy"] == busy,
                         message="requests past the total bound are answered busy")
        assert running == peak == MAX_IN_FLIGHT and server.accepted == MAX_IN_FLIGHT
        release.set()
        await eventually(lambda: running == 0, message="the requests in flight finished")

        got: Counter[str] = Counter()

        def collect() -> bool:
            for sock in peers:
                while sock.poll(0):
                    got[msgpack.unpackb(sock.recv())[1]] += 1
            return got[TREE] == MAX_IN_FLIGHT and got[ERROR] >= 5

        # Each admitted request gets its tree. Busy replies sent in a burst beyond a peer's
        # SNDHWM (4) are dropped by the ROUTER: the bound on what a peer that does not read holds.
        await eventually(collect, message="the admitted requests answered, the others told busy")
        assert got[TREE] == MAX_IN_FLIGHT and got[ERROR] <= 15 - MAX_IN_FLIGHT, got
        # and the next request is answered as usual
        assert await asyncio.to_thread(query, server.endpoint, TREE, None, 10.0) == {"id": "node"}
    finally:
        for sock in peers:
            sock.close()
        server.close()


async def test_g4_garbage_tcp_bytes_are_refused_or_dropped_and_the_socket_keeps_serving(rng) -> None:
    """G4: random bytes into the control socket bound on tcp loopback, as ``nc`` would send them.

    Without CURVE, libzmq reads a first byte other than 0xFF as a ZMTP 1.0 peer, so some
    garbage arrives as frames: those are dropped and counted like any bad request.
    """
    loop = asyncio.get_running_loop()

    async def tree(body: object) -> dict[str, object]:
        return {"id": "node"}

    server = ControlServer(loop, "tcp://127.0.0.1:*", {TREE: tree})
    server.start()
    try:
        host, port = server.endpoint.removeprefix("tcp://").rsplit(":", 1)
        greeting = b"\xff" + b"\x00" * 8 + b"\x7f"  # a ZMTP 3 signature, then garbage
        payloads = [rng.randbytes(rng.randint(1, 4096)) for _ in range(40)]
        payloads += [greeting + rng.randbytes(1000), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                     greeting + b"\x03\x00NULL" + b"\x00" * 44 + b"\x06\xff" + b"\xff" * 8,  # a 2^64-byte frame
                     b"\x00" * 64, b"\xff" * 64]

        def pipe_garbage() -> None:
            for payload in payloads:
                with socket.create_connection((host, int(port)), timeout=10) as conn:
                    try:
                        conn.sendall(payload)
                        conn.shutdown(socket.SHUT_WR)
                        conn.settimeout(2)
                        while conn.recv(65536):  # until the server hangs up (or the timeout)
                            pass
                    except OSError:
                        pass  # reset by the server: the handshake failed

        await asyncio.to_thread(pipe_garbage)
        # the socket keeps serving: a real client is answered
        assert await asyncio.to_thread(query, server.endpoint, TREE, None, 10.0) == {"id": "node"}
        print(f"G4: {len(payloads)} garbage connections; frames that reached the application "
              f"(ZMTP 1.0 framing) were dropped: {dict(server.dropped.by_reason)}")
        assert server.accepted == 1
    finally:
        server.close()


class _FakeNode:
    """A ROUTER that answers each request with the given reply parts."""

    def __init__(self, endpoint: str, reply: list[bytes]) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.reply = reply

    def answer_one(self) -> None:
        if self.sock.poll(10_000):
            ident, _request = self.sock.recv_multipart()
            self.sock.send_multipart([ident, *self.reply])


@pytest.mark.parametrize("reply,expected", [
    ([b"\xc1"], "malformed reply (not_msgpack"),
    ([b"\x93\x01" + nested(1000) + b"\xc0"], "malformed reply (unknown_kind"),
    ([b"\x93\x01" + pk(TREE) + nested(1000)], "malformed reply (too_deep"),
    ([pk([1, "other", None])], "malformed reply (unknown_kind"),
    ([pk([1, "tree", None]), b"extra"], "malformed reply (part_count"),
    ([encode(ERROR, "busy: 4 requests in flight")], "answered: busy: 4 requests in flight"),
    ([encode(ERROR, ["not", "text"])], "answered: list of 2 items"),
], ids=["not-msgpack", "deep-kind", "deep-body", "other-kind", "two-parts", "busy", "error-not-text"])
def test_query_turns_a_bad_reply_into_node_not_running_naming_the_endpoint(reply: list[bytes], expected: str) -> None:
    fake = _FakeNode("tcp://127.0.0.1:*", reply)
    try:
        server = threading.Thread(target=fake.answer_one)
        server.start()
        with pytest.raises(NodeNotRunning) as info:
            query(fake.endpoint, TREE, None, timeout=10.0)
        server.join()
    finally:
        fake.sock.close()
    assert fake.endpoint in str(info.value) and expected in str(info.value), str(info.value)


def _status_body(**changes: object) -> dict[str, object]:
    """A well-formed STATUS reply, with `changes` made to it (``jobs__in_flight`` for a nested key)."""
    body: dict[str, object] = {
        "name": "n", "pid": 1, "activity": "idle", "idle": True,
        "jobs": {"succeeded": 0, "failed": 0, "in_flight": 0, "reclaimed": 0, "stale_acks": 0, "per_second": None},
        "workers": {"connected": 1, "restarts": 0},
        "journal": {"wait": 0.0, "error": None},
        "producers": {"requests": 0, "jobs": 0, "busy": 0, "dropped": {}},
    }
    for key, value in changes.items():
        outer, _, inner = key.partition("__")
        if inner:
            body[outer] = {**body[outer], inner: value}  # type: ignore[dict-item]
        else:
            body[outer] = value
    return body


@pytest.mark.parametrize("body,expected", [
    (None, "status: expected a map, got None"),
    ([1, 2], "status: expected a map, got list of 2 items"),
    ({"name": "n"}, "status: missing pid, activity, idle, jobs, workers, journal, producers"),
    (_status_body(pid=-1), "status.pid: expected an integer >= 0, got -1"),
    (_status_body(pid=True), "status.pid: expected an integer >= 0, got True"),
    (_status_body(idle=1), "status.idle: expected true or false, got 1"),
    (_status_body(name="x" * 501), "status.name: expected a text of at most 500 characters"),
    (_status_body(activity="sleeping"), "status.activity: expected one of stopping,"),
    (_status_body(jobs__in_flight="3"), "status.jobs.in_flight: expected an integer >= 0, got '3'"),
    (_status_body(jobs__per_second=float("nan")), "status.jobs.per_second: expected a finite number >= 0, got nan"),
    (_status_body(journal__wait=None), "status.journal.wait: expected a finite number >= 0, got None"),
    (_status_body(journal__error=["deep"]), "status.journal.error: expected a text of at most 500"),
    (_status_body(producers__dropped={"x": -1}), "status.producers.dropped: expected at most 32 counts"),
    (_status_body(producers__dropped={str(i): 1 for i in range(33)}), "status.producers.dropped: expected at most"),
    (_status_body(workers=[[[[]]]]), "status.workers: expected a map, got list of 1 item"),
], ids=lambda v: None if isinstance(v, str) else "")
def test_ask_status_turns_a_malformed_status_into_node_not_running_naming_the_key(body: object,
                                                                                   expected: str) -> None:
    fake = _FakeNode("tcp://127.0.0.1:*", [encode(STATUS, body)])
    try:
        server = threading.Thread(target=fake.answer_one)
        server.start()
        with pytest.raises(NodeNotRunning) as info:
            ask_status(fake.endpoint, timeout=10.0)
        server.join()
    finally:
        fake.sock.close()
    assert "sent a malformed status" in str(info.value) and expected in str(info.value), str(info.value)


def test_ask_status_keeps_only_the_keys_it_knows() -> None:
    fake = _FakeNode("tcp://127.0.0.1:*", [encode(STATUS, _status_body(extra={"a": 1}, jobs__later=3))])
    try:
        server = threading.Thread(target=fake.answer_one)
        server.start()
        status = ask_status(fake.endpoint, timeout=10.0)
        server.join()
    finally:
        fake.sock.close()
    assert status == _status_body()
