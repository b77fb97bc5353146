"""Producers in other processes enqueue through the node (`actorq.jobs.producers`; ACCEPTANCE B6, C20, G1-G5, H8, H12).

The node runs as ``actorq run`` (`NodeProcess`), so the test's own `Client` is a
producer in another process; where the test needs the node's counters it is
embedded (`Node`) and the producers are threads with their own sockets. A
Client that wrote into the file itself would call `SQLiteJournal.enqueue` in
the test's process: the tests that must go through the node make that raise.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import msgpack
import pytest
import zmq

from actorq import Client, Job, Node
from actorq.errors import NotCommitted
from actorq.jobs import journal_writer as jw
from actorq.jobs import producers
from actorq.jobs.node_file import read_node_file, write_node_file
from actorq.jobs.producers import (
    BUSY, CANCEL, CANCELLED, ENQUEUE, ENQUEUED, OUTCOME, WAIT, encode_cancel, encode_request, encode_wait, parse_reply,
)
from actorq.journal import NewJob, SQLiteJournal
from actorq.journal.protocol import MAX_CONCURRENCY_LIMIT, MAX_UNIQUE_FOR
from actorq.testing import eventually
from actorq.transports.codec import FrameError, encode

from node_process import NodeProcess

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "transports"))
from socket_support import RSS_GROWTH_BOUND, Peer, batch, mutate, nested, pk, restarts, wait_for_node  # noqa: E402

TASKS = """
@registry.task("prod.work")
async def work(n):
    record()
"""


def _never_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a direct write from this process fail: jobs must go through the node."""
    def refuse(self: object, jobs: object) -> None:
        raise AssertionError("the client wrote into the journal itself")

    monkeypatch.setattr(SQLiteJournal, "enqueue", refuse)


def _ids_in_journal(path: Path) -> Counter[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return Counter(row[0] for row in conn.execute("SELECT id FROM actorq_jobs"))


def _ran(topo) -> set[str]:
    return {entry.job_id for entry in topo.ledger.read()}


async def _start(topo, run: int) -> NodeProcess:
    node = NodeProcess(topo, run)
    try:
        await asyncio.to_thread(wait_for_node, topo.config.node_file, 2, node.output)
    except BaseException:
        node.kill_everything()
        raise
    return node


async def test_a_client_in_another_process_enqueues_through_the_node(topology, monkeypatch) -> None:
    topo = topology(TASKS)
    node = await _start(topo, 1)
    try:
        info = read_node_file(topo.config.node_file)
        endpoint = info["producers"]
        assert endpoint.startswith("ipc://")
        directory = Path(endpoint[len("ipc://"):]).parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700  # H8
        assert stat.S_IMODE(topo.config.node_file.stat().st_mode) == 0o600
        _never_directly(monkeypatch)

        with topo.client() as client:
            one = await asyncio.to_thread(client.enqueue, Job("prod.work", [0]))
            assert _ids_in_journal(topo.journal_path)[one] == 1  # returned means committed
            many = await asyncio.to_thread(client.enqueue_many, [Job("prod.work", [n]) for n in range(1, 2500)])
            committed = _ids_in_journal(topo.journal_path)
            assert all(committed[job_id] == 1 for job_id in many)  # 2,499 jobs: three requests
            first = Job("prod.work", [-1], unique_key="only-one")
            holder = await asyncio.to_thread(client.enqueue, first)
            second = await asyncio.to_thread(client.enqueue, Job("prod.work", [-2], unique_key="only-one"))
            assert holder == second == first.id  # the live holder's id
        ids = {one, *many, holder}
        await eventually(lambda: _ran(topo) >= ids, timeout=60, message="every job ran")
        await eventually(lambda: all(topo.states()[i] == "succeeded" for i in ids), timeout=30,
                         message="every job succeeded")
    finally:
        node.proc.send_signal(signal.SIGTERM)
        assert await node.exit_code() == 0, node.output()[-2000:]

    # the node stopped and took its node file with it: the client writes into the journal itself
    assert not topo.config.node_file.exists()
    monkeypatch.undo()
    with topo.client() as client:
        after = client.enqueue(Job("prod.work", [1]))
    assert _ids_in_journal(topo.journal_path)[after] == 1


def test_without_a_node_the_client_writes_into_the_journal(topology) -> None:
    topo = topology(TASKS)
    with topo.client() as client:
        direct = client.enqueue(Job("prod.work", [1]))
    assert _ids_in_journal(topo.journal_path)[direct] == 1

    # a node file left by a node killed with SIGKILL names a process that is gone
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_node_file(topo.config.node_file, {"pid": gone.pid, "producers": "ipc:///nonexistent/producers"})
    with topo.client() as client:
        stale = client.enqueue(Job("prod.work", [2]))
    assert _ids_in_journal(topo.journal_path)[stale] == 1


async def test_b6_a_node_that_stops_answering_or_dies_gives_not_committed_and_a_resend_commits_once(
        topology, monkeypatch) -> None:
    topo = topology(TASKS)
    url = topo.config.journal.resolved_url
    jobs = [Job("prod.work", [n]) for n in range(200)]
    node = await _start(topo, 1)
    try:
        _never_directly(monkeypatch)
        with Client(url, timeout=2.0) as client:
            await asyncio.to_thread(client.enqueue_many, jobs[:50])  # these are committed
            os.kill(node.pid, signal.SIGSTOP)  # the node answers nothing from now on
            with pytest.raises(NotCommitted) as paused:  # its deadline passes
                await asyncio.to_thread(client.enqueue_many, jobs)
            assert paused.value.maybe_committed

        sending = threading.Event()
        encode_request = producers.encode_request

        def encode_and_signal(*args: object) -> bytes:
            sending.set()
            return encode_request(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(producers, "encode_request", encode_and_signal)
        with Client(url, timeout=120.0) as client:
            waiting = asyncio.ensure_future(asyncio.to_thread(client.enqueue_many, jobs))
            assert await asyncio.to_thread(sending.wait, 60)
            node.kill_everything()  # SIGKILL while the producer waits
            with pytest.raises(NotCommitted) as killed:  # the client sees the node's process go
                await asyncio.wait_for(waiting, 120.0)
            assert killed.value.maybe_committed
    finally:
        node.kill_everything()

    node = await _start(topo, 2)
    try:
        with Client(url) as client:
            assert await asyncio.to_thread(client.enqueue_many, jobs) == [job.id for job in jobs]
            assert await asyncio.to_thread(client.enqueue_many, jobs[:10]) == [job.id for job in jobs[:10]]
        ids = {job.id for job in jobs}
        assert _ids_in_journal(topo.journal_path) == Counter(ids)  # each job once
        await eventually(lambda: _ran(topo) >= ids, timeout=60, message="every job ran")
    finally:
        node.proc.send_signal(signal.SIGTERM)
        assert await node.exit_code() == 0, node.output()[-2000:]


PRODUCER = """
import sys
from actorq import Client, Job
with Client(sys.argv[1], timeout=60.0) as client:
    for n in range(int(sys.argv[2])):
        client.enqueue(Job("prod.work", [n]))
print("ok")
"""


async def test_a_job_through_the_node_starts_without_waiting_for_a_poll(topology) -> None:
    """The node polls its journal once an hour here: jobs sent through it still run at once,
    one call at a time and many (their commit wakes the dispatcher, and the leases they wake
    share their group). Before, a Client's job waited for the scheduler's next tick."""
    topo = topology(TASKS, poll_interval=3600.0)
    node = await _start(topo, 1)
    try:
        with topo.client() as client:
            ids = set()
            for n in range(20):  # one job a call, each waiting for its commit
                ids.add(await asyncio.to_thread(client.enqueue, Job("prod.work", [n])))
                await eventually(lambda: ids <= _ran(topo), timeout=60, message=f"job {n} ran with no poll")
            ids |= set(await asyncio.to_thread(client.enqueue_many, [Job("prod.work", [n]) for n in range(20, 300)]))
        await eventually(lambda: ids <= _ran(topo), timeout=60, message="every job ran with no poll")
        await eventually(lambda: all(topo.states()[i] == "succeeded" for i in ids), timeout=30,
                         message="every job succeeded")
    finally:
        node.proc.send_signal(signal.SIGTERM)
        assert await node.exit_code() == 0, node.output()[-2000:]


async def test_c20_two_producers_committing_one_job_per_call_beside_a_running_node(topology) -> None:
    """Before, each producer fought the node for the file lock: "database is locked"."""
    topo = topology(TASKS)
    node = await _start(topo, 1)
    try:
        calls = 400
        procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", PRODUCER, topo.config.journal.resolved_url,
                                                      str(calls), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        for proc in procs:
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0 and out.strip() == b"ok", err.decode()[-2000:]
        await eventually(lambda: len(_ran(topo)) >= 2 * calls, timeout=60, message="every job ran")
        assert sum(_ids_in_journal(topo.journal_path).values()) == 2 * calls
    finally:
        node.proc.send_signal(signal.SIGTERM)
        assert await node.exit_code() == 0, node.output()[-2000:]


# -- the endpoint under bad input and load (embedded node: its counters are readable) -------------------
MAX_FRAME = 131072  # the smallest dispatcher.max_frame_bytes: a payload budget of 64 KiB
BUDGET = MAX_FRAME - 64 * 1024


def _job(job_id: str = "j1", **changes: object) -> list[object]:
    fields: dict[str, object] = dict(id=job_id, queue="default", task="prod.work", payload=pk([[1], {}]),
                                     priority=0, run_at=None, max_attempts=3, unique_key=None)
    fields.update(changes)
    return list(fields.values())


def _request(*items: object, request_id: object = 7) -> list[bytes]:
    return [encode(ENQUEUE, [request_id, list(items)])]


GOOD = _request(_job())
GOOD_UNIQUE = _request(_job(unique_key="k") + [None, 3600.0], _job("j2", unique_key="k2") + [30.0, MAX_UNIQUE_FOR])
# the flow-control keys: ordering_key, concurrency_key, concurrency_limit, discard after the period
GOOD_KEYS = _request(_job() + [None, None, "customer-42"], _job("j2") + [None, None, None, "tenant-7", 10, True],
                     _job("j3") + [None, None, "o", None, None, False])

BAD: list[tuple[str, list[bytes]]] = [
    # G1: the envelope
    ("part_count", [GOOD[0], b""]),
    ("not_msgpack", [b""]),
    ("not_msgpack", [b"\xc1"]),
    ("not_msgpack", [GOOD[0][:-1]]),
    ("trailing_bytes", [GOOD[0] + b"\x00"]),
    ("bad_envelope", [pk([1, ENQUEUE])]),
    ("bad_version", [pk([2, ENQUEUE, None])]),
    ("unknown_kind", [pk([1, ENQUEUED, [7, []]])]),  # an answer is no request
    ("unknown_kind", [pk([1, "drop_tables", None])]),
    ("not_msgpack", [pk([1, ENQUEUE, {1: 2}])]),  # a non-string map key
    ("not_msgpack", [pk([1, ENQUEUE, msgpack.ExtType(7, b"obj")])]),
    # G3/G10: nesting, and headers declaring 2^31 items or more than a request's jobs
    ("bad_body", [b"\x93\x01" + pk(ENQUEUE) + nested(1000)]),
    ("not_msgpack", [b"\x93\x01" + pk(ENQUEUE) + b"\xdd\x80\x00\x00\x00"]),
    ("not_msgpack", [b"\x93\x01" + pk(ENQUEUE) + b"\x92\x07\xdd\x00\x00\x03\xe9"]),  # 1,001 jobs
    ("not_msgpack", [pk([1, ENQUEUE, [7, [_job()], b"x" * (BUDGET + 1)]])]),  # a bytes field over the budget
    # the body
    ("bad_body", [encode(ENQUEUE, None)]),
    ("bad_body", [encode(ENQUEUE, [7])]),
    ("bad_body", _request()),  # no jobs
    ("bad_body", _request(_job(), request_id=-1)),
    ("bad_body", _request(_job(), request_id=True)),
    ("bad_body", _request(_job(), request_id=1.5)),
    ("bad_body", _request(_job()[:7])),
    # the 9th to 14th fields (a time limit, a unique period, the flow-control keys) are optional; a 15th is not
    ("bad_body", _request(_job() + [None] * 7)),
    ("bad_body", _request(_job() + [None, None, None, "tenant-7", 10, True, None])),
    # the ordering and concurrency keys: names (as the unique key); the limit an integer from 1 to
    # MAX_CONCURRENCY_LIMIT; discard a bool; the limit and discard only with a concurrency key
    ("bad_body", _request(_job() + [None, None, ""])),
    ("bad_body", _request(_job() + [None, None, "x" * 256])),
    ("bad_body", _request(_job() + [None, None, 42])),
    ("bad_body", _request(_job() + [None, None, b"key"])),
    ("bad_body", _request(_job() + [None, None, None, ""])),
    ("bad_body", _request(_job() + [None, None, None, ["tenant"]])),
    ("bad_body", _request(_job() + [None, None, None, "x" * 256, 1])),
    ("bad_body", _request(_job() + [None, None, None, "t", 0])),
    ("bad_body", _request(_job() + [None, None, None, "t", -1])),
    ("bad_body", _request(_job() + [None, None, "o", "c"])),  # one flow key a job, not two
    ("bad_body", _request(_job() + [None, None, None, "t", MAX_CONCURRENCY_LIMIT + 1])),
    ("bad_body", _request(_job() + [None, None, None, "t", 2**64 - 1])),
    ("bad_body", _request(_job() + [None, None, None, "t", 2.0])),
    ("bad_body", _request(_job() + [None, None, None, "t", True])),
    ("bad_body", _request(_job() + [None, None, None, "t", "10"])),
    ("bad_body", _request(_job() + [None, None, None, "t", 1, 1])),
    ("bad_body", _request(_job() + [None, None, None, "t", 1, "discard"])),
    ("bad_body", _request(_job() + [None, None, None, None, 3])),  # a limit needs a key
    ("bad_body", _request(_job() + [None, None, None, None, None, True])),  # so does discard
    ("bad_body", _request(_job() + [None, None, "o"], _job("j2") + [None, None, None, "t", 0])),
    ("bad_body", _request(_job() + [0])),
    ("bad_body", _request(_job() + [-1.0])),
    ("bad_body", _request(_job() + [float("inf")])),
    ("bad_body", _request(_job() + ["1s"])),
    # the unique period: seconds > 0 up to a year, and only with a unique key
    ("bad_body", _request(_job(unique_key="k") + [None, 0])),
    ("bad_body", _request(_job(unique_key="k") + [None, -60.0])),
    ("bad_body", _request(_job(unique_key="k") + [None, float("nan")])),
    ("bad_body", _request(_job(unique_key="k") + [None, float("inf")])),
    ("bad_body", _request(_job(unique_key="k") + [None, MAX_UNIQUE_FOR + 1])),
    ("bad_body", _request(_job(unique_key="k") + [None, 2**64 - 1])),
    ("bad_body", _request(_job(unique_key="k") + [None, True])),
    ("bad_body", _request(_job(unique_key="k") + [None, "60"])),
    ("bad_body", _request(_job(unique_key="k") + [None, [60]])),
    ("bad_body", _request(_job() + [None, 60.0])),  # a period needs a key
    ("bad_body", _request(_job(unique_key="k") + [None, 60.0], _job("j2") + [None, 60.0])),  # one bad job of two
    ("bad_body", _request(nested(3))),
    # every field of a job
    ("bad_body", _request(_job(""))),
    ("bad_body", _request(_job("x" * 256))),
    ("bad_body", _request(_job(7))),
    ("bad_body", _request(_job(queue=""))),
    ("bad_body", _request(_job(task=None))),
    ("bad_body", _request(_job(task=b"prod.work"))),
    ("bad_body", _request(_job(unique_key=""))),
    ("bad_body", _request(_job(payload="text"))),
    ("bad_body", _request(_job(priority=True))),
    ("bad_body", _request(_job(priority=2**40))),
    ("bad_body", _request(_job(priority=1.0))),
    ("bad_body", _request(_job(max_attempts=0))),
    ("bad_body", _request(_job(max_attempts=2**40))),
    ("bad_body", _request(_job(run_at=float("nan")))),
    ("bad_body", _request(_job(run_at=float("inf")))),
    ("bad_body", _request(_job(run_at=1e300))),
    ("bad_body", _request(_job(run_at="now"))),
    ("too_large", _request(_job("a", payload=b"x" * (BUDGET // 2 + 1)), _job("b", payload=b"x" * (BUDGET // 2 + 1)))),
    # WAIT [request id, job id, seconds] and CANCEL [request id, job id]: every field
    ("unknown_kind", [pk([1, OUTCOME, [7, [None, None, False, None, None]]])]),  # answers are no requests
    ("unknown_kind", [pk([1, CANCELLED, [7, True]])]),
    ("bad_body", [encode(WAIT, None)]),
    ("bad_body", [encode(WAIT, [7, "j1"])]),
    ("bad_body", [encode(WAIT, [7, "j1", 1.0, None])]),
    ("bad_body", [encode(WAIT, [-1, "j1", 1.0])]),
    ("bad_body", [encode(WAIT, [2**63, "j1", 1.0])]),
    ("bad_body", [encode(WAIT, [True, "j1", 1.0])]),
    ("bad_body", [encode(WAIT, [7, "", 1.0])]),
    ("bad_body", [encode(WAIT, [7, "x" * 256, 1.0])]),
    ("bad_body", [encode(WAIT, [7, b"j1", 1.0])]),
    ("bad_body", [encode(WAIT, [7, ["j1"], 1.0])]),
    ("bad_body", [encode(WAIT, [7, "j1", 0])]),
    ("bad_body", [encode(WAIT, [7, "j1", -1.0])]),
    ("bad_body", [encode(WAIT, [7, "j1", float("nan")])]),
    ("bad_body", [encode(WAIT, [7, "j1", float("inf")])]),
    ("bad_body", [encode(WAIT, [7, "j1", 86_401])]),
    ("bad_body", [encode(WAIT, [7, "j1", "1s"])]),
    ("bad_body", [encode(WAIT, [7, "j1", False])]),
    ("bad_body", [b"\x93\x01" + pk(WAIT) + nested(1000)]),
    ("not_msgpack", [b"\x93\x01" + pk(WAIT) + b"\xdd\x80\x00\x00\x00"]),
    ("not_msgpack", [pk([1, WAIT, [7, "j" * (BUDGET + 1), 1.0]])]),  # a string over the budget
    ("bad_body", [encode(CANCEL, None)]),
    ("bad_body", [encode(CANCEL, [7])]),
    ("bad_body", [encode(CANCEL, [7, "j1", 1.0])]),
    ("bad_body", [encode(CANCEL, [-1, "j1"])]),
    ("bad_body", [encode(CANCEL, [7, ""])]),
    ("bad_body", [encode(CANCEL, [7, None])]),
    ("bad_body", [encode(CANCEL, [7, "x" * 256])]),
    ("bad_body", [b"\x93\x01" + pk(CANCEL) + nested(1000)]),
]


def test_the_optional_fields_round_trip_and_are_left_off_from_the_end() -> None:
    jobs = [NewJob("a", "q", "t", b"\x92\x90\x80"),
            NewJob("b", "q", "t", b"\x92\x90\x80", timeout=5.0),
            NewJob("c", "q", "t", b"\x92\x90\x80", unique_key="k", unique_for=3600.0),
            NewJob("d", "q", "t", b"\x92\x90\x80", unique_key="k", timeout=5.0, unique_for=MAX_UNIQUE_FOR)]
    frame = encode_request(3, jobs)
    assert producers.parse_enqueue(frame, 1 << 24) == (3, jobs)
    items = msgpack.unpackb(frame)[2][1]
    assert [len(item) for item in items] == [8, 9, 10, 10]  # a period with no time limit sends nil before it
    assert producers.parse_enqueue(GOOD_UNIQUE[0], 1 << 24)[1][1].unique_for == MAX_UNIQUE_FOR
    keyed = producers.parse_enqueue(GOOD_KEYS[0], 1 << 24)[1]
    assert [(j.ordering_key, j.concurrency_key, j.concurrency_limit, j.discard_over_limit) for j in keyed] == [
        ("customer-42", None, None, False), (None, "tenant-7", 10, True), ("o", None, None, False)]
    sent = [NewJob("e", "q", "t", b"\x92\x90\x80", ordering_key="o"),
            NewJob("f", "q", "t", b"\x92\x90\x80", concurrency_key="c", concurrency_limit=3, discard_over_limit=True)]
    round_trip = producers.parse_enqueue(producers.encode_request(8, sent), 1 << 24)[1]
    assert round_trip == sent
    assert [len(item) for item in msgpack.unpackb(producers.encode_request(8, sent))[2][1]] == [11, 14]


def _answers(sock: zmq.Socket, count: int) -> list[tuple[str, int, object]]:  # type: ignore[type-arg]
    answers = []
    for _ in range(count):
        assert sock.poll(60_000), "no answer from the producer endpoint"
        answers.append(parse_reply(sock.recv_multipart()))
    return answers


def _dealer(endpoint: str) -> zmq.Socket:  # type: ignore[type-arg]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _new_jobs(prefix: str, count: int) -> list[NewJob]:
    return [NewJob(f"{prefix}-{n}", "default", "prod.work", pk([[n], {}]), 0, None, 3) for n in range(count)]


async def test_g1_g5_producer_socket_fuzz_drops_and_counts_every_bad_frame(topology, rng) -> None:
    import psutil

    topo = topology(TASKS, max_frame_bytes=MAX_FRAME)
    async with Node(topo.config) as node:
        assert node.runtime is not None and node.runtime.producers is not None
        server = node.runtime.producers
        endpoint = server.endpoint
        before = restarts(await node.tree())
        rss = psutil.Process().memory_info().rss

        messages, expected = batch(BAD, 10)
        peer = Peer(endpoint, b"producer-fuzz-1")
        await peer.send_all(messages)
        await eventually(lambda: server.dropped.total >= len(messages), timeout=60,
                         message="the bad frames were counted")
        peer.close()
        assert dict(server.dropped.by_reason) == dict(expected)
        assert server.accepted == 0 and server.busy == 0 and server.waits == 0 and server.cancels == 0

        # a seeded mutation fuzz: each frame is dropped and counted, admitted, or answered busy
        # the valid WAIT and CANCEL name jobs no one runs: a WAIT the fuzz makes valid waits at
        # most its seconds, and holds one of the node's bounded waits meanwhile
        corpus = [GOOD[0], GOOD_UNIQUE[0], GOOD_KEYS[0], encode_wait(8, "fuzz-none", 0.5),
                  encode_cancel(9, "fuzz-none")] + [
            parts[0] for _, parts in BAD if len(parts) == 1 and parts[0]]
        frames = 3000
        fuzz = [[mutate(rng, rng.choice(corpus))] for _ in range(frames)]
        dropped = server.dropped.total
        peer = Peer(endpoint, b"producer-fuzz-2")
        await peer.send_all(fuzz)

        def seen() -> int:
            return server.dropped.total - dropped + server.accepted + server.busy + server.waits + server.cancels

        await eventually(lambda: seen() == frames, timeout=60, message="every fuzzed frame was counted")
        peer.close()

        # the node keeps serving: a valid request is answered once its job is committed
        sock = _dealer(endpoint)
        try:
            sock.send(encode_request(99, _new_jobs("after-fuzz", 1)))
            [(kind, request_id, results)] = await asyncio.to_thread(_answers, sock, 1)
        finally:
            sock.close()
        assert (kind, request_id) == (ENQUEUED, 99)
        assert [tuple(r) for r in results] == [(True, "after-fuzz-0")]
        assert restarts(await node.tree()) == before
        grown = psutil.Process().memory_info().rss - rss
        assert grown < RSS_GROWTH_BOUND, f"RSS grew by {grown / 2**20:.1f} MiB"


def _flood(endpoint: str, peer: int, requests: int, jobs: int) -> list[tuple[str, int, object]]:
    sock = _dealer(endpoint)
    try:
        for r in range(requests):  # pipelined: more than the node admits from one peer
            sock.send(encode_request(r, _new_jobs(f"p{peer}-r{r}", jobs)))
        return _answers(sock, requests)
    finally:
        sock.close()


async def test_h12_many_requests_at_once_are_served_or_answered_busy(topology) -> None:
    topo = topology(TASKS, processes=1)
    peers, requests, jobs = 16, 8, 500  # 64,000 jobs offered at once
    async with Node(topo.config) as node:
        assert node.runtime is not None and node.runtime.producers is not None and node.runtime.writer is not None
        server = node.runtime.producers
        release = threading.Event()
        stalled = threading.Event()

        def stall(_journal: object) -> None:  # on the writer thread: nothing commits until released
            stalled.set()
            release.wait(120)

        node.runtime.writer.submit(jw.CALL, stall)
        assert await asyncio.to_thread(stalled.wait, 60)
        try:
            # a thread each, all at once (the loop's default executor may have fewer threads than peers)
            answers: list[list[tuple[str, int, object]]] = [[] for _ in range(peers)]
            threads = [threading.Thread(target=lambda p=p: answers[p].extend(
                _flood(server.endpoint, p, requests, jobs))) for p in range(peers)]
            for thread in threads:
                thread.start()
            await eventually(lambda: server.accepted + server.busy == peers * requests, timeout=60,
                             message="every request was admitted or answered busy")
            # admitted while they fit the bound on jobs waiting for the journal; the rest pushed back
            assert server.accepted == producers.MAX_PENDING_JOBS // jobs
            assert server.in_flight == server.peak_in_flight == server.accepted
        finally:
            release.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 120)
        served, refused = set(), set()
        for peer, replies in enumerate(answers):
            assert sorted(request_id for _, request_id, _ in replies) == list(range(requests))  # each answered once
            for kind, request_id, body in replies:
                ids = {f"p{peer}-r{request_id}-{n}" for n in range(jobs)}
                if kind == BUSY:
                    refused |= ids
                else:
                    assert kind == ENQUEUED and all(result.ok for result in body)  # type: ignore[union-attr]
                    served |= ids
        assert len(served) == server.accepted * jobs
        stored = set(_ids_in_journal(topo.journal_path))
        assert served <= stored and not refused & stored  # busy means nothing was done
        assert server.peak_pending_jobs <= producers.MAX_PENDING_JOBS
        assert server.in_flight == 0


# -- the client's side, against a stand-in node: a ROUTER of the test's, named in a node file ----------
class StandIn:
    """A ROUTER on a thread that answers each request with the next of `script`'s answers:
    a callable of (request id, jobs) returning the frames to send (none: no answer)."""

    def __init__(self, directory: Path, script: list) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"ipc://{directory}/stand-in"
        self.sock.bind(self.endpoint)
        self.script = list(script)
        self.requests: list[tuple[int, list[NewJob]]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.script:
            if not self.sock.poll(60_000):
                return
            ident, frame = self.sock.recv_multipart()
            request_id, jobs = producers.parse_enqueue(frame, 1 << 24)
            self.requests.append((request_id, jobs))
            for answer in self.script.pop(0)(request_id, jobs):
                self.sock.send_multipart([ident, answer])

    def close(self) -> None:
        self.thread.join(60)
        self.sock.close()


def _busy(request_id: int, jobs: list[NewJob]) -> list[bytes]:
    return [encode(BUSY, [request_id, "stand-in is busy"])]


def _served(request_id: int, jobs: list[NewJob]) -> list[bytes]:
    stale = encode(ENQUEUED, [request_id - 1, [[True, "an-old-answer"]]])  # to a request given up on
    malformed = encode(ENQUEUED, [request_id, [[1, 2]]])
    return [stale, malformed, encode(ENQUEUED, [request_id, [[True, job.id] for job in jobs]])]


def _refused(request_id: int, jobs: list[NewJob]) -> list[bytes]:
    return [encode(ENQUEUED, [request_id, [[False, "JournalError: disk full"] for _ in jobs]])]


def _silent(request_id: int, jobs: list[NewJob]) -> list[bytes]:
    return []


@pytest.mark.parametrize("script, error", [
    ([_busy, _busy, _served], None),  # sent again after each BUSY, and every odd answer skipped
    ([_refused], "JournalError: disk full"),
    ([_silent], "no answer from the node"),
])
def test_the_client_backs_off_on_busy_skips_odd_answers_and_keeps_its_deadline(tmp_path, script, error) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # the node's pid: alive
    stand_in = StandIn(tmp_path, script)
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    try:
        with Client(url, timeout=3.0) as client:
            write_node_file(tmp_path / "journal.db.node", {"pid": holder.pid, "producers": stand_in.endpoint,
                                                          "max_payload": 1000})
            job = Job("prod.work", [1])
            with pytest.raises(ValueError, match="the limit is 1,000"):  # the node's payload budget
                client.enqueue(Job("prod.work", ["x" * 1000]))
            if error is None:
                assert client.enqueue(job) == job.id
                assert [request_id for request_id, _ in stand_in.requests] == sorted(
                    {request_id for request_id, _ in stand_in.requests})  # a new id each time
                assert len(stand_in.requests) == 3
            else:
                with pytest.raises(NotCommitted, match=error) as failed:
                    client.enqueue(job)
                assert failed.value.maybe_committed == (error != "JournalError: disk full")
            assert _ids_in_journal(tmp_path / "journal.db") == Counter()  # nothing written directly
    finally:
        holder.kill()
        holder.wait()
        stand_in.close()


def test_via_node_false_writes_into_the_journal_while_a_node_serves_it(tmp_path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # the node's pid: alive
    stand_in = StandIn(tmp_path, [_served])
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    try:
        write_node_file(tmp_path / "journal.db.node", {"pid": holder.pid, "producers": stand_in.endpoint})
        with Client(url, via_node=False) as client:
            direct = client.enqueue(Job("prod.work", [1]))
        assert _ids_in_journal(tmp_path / "journal.db") == Counter([direct])
        assert stand_in.requests == []  # the node was not asked
        with Client(url, timeout=30.0) as client:  # the default: through the node
            assert client.enqueue(Job("prod.work", [2])) not in _ids_in_journal(tmp_path / "journal.db")
        assert len(stand_in.requests) == 1
    finally:
        holder.kill()
        holder.wait()
        stand_in.close()


async def test_a_stopping_node_answers_what_it_admitted_and_pushes_back_the_rest(topology) -> None:
    topo = topology(TASKS, processes=1)
    node = Node(topo.config)
    await node.start()
    try:
        assert node.runtime is not None and node.runtime.producers is not None and node.runtime.writer is not None
        server = node.runtime.producers
        release, stalled = threading.Event(), threading.Event()

        def stall(_journal: object) -> None:  # on the writer thread: nothing commits until released
            stalled.set()
            release.wait(120)

        node.runtime.writer.submit(jw.CALL, stall)
        assert await asyncio.to_thread(stalled.wait, 60)
        sock = _dealer(server.endpoint)
        try:
            sock.send(encode_request(1, _new_jobs("admitted", 3)))
            await eventually(lambda: server.in_flight == 1, timeout=60, message="the request was admitted")
            stopping = asyncio.ensure_future(node.stop())
            await eventually(lambda: server.stopping, timeout=60, message="the producer endpoint is stopping")
            sock.send(encode_request(2, _new_jobs("late", 1)))
            [(kind, request_id, body)] = await asyncio.to_thread(_answers, sock, 1)
            assert (kind, request_id) == (BUSY, 2) and "stopping" in str(body)
            release.set()
            [(kind, request_id, body)] = await asyncio.to_thread(_answers, sock, 1)
            assert (kind, request_id) == (ENQUEUED, 1)
            assert [tuple(result) for result in body] == [(True, f"admitted-{n}") for n in range(3)]  # type: ignore
            await asyncio.wait_for(stopping, 60)
        finally:
            sock.close()
            release.set()
        assert set(_ids_in_journal(topo.journal_path)) >= {f"admitted-{n}" for n in range(3)}
        assert "late-0" not in _ids_in_journal(topo.journal_path)
    finally:
        await node.stop()


@pytest.mark.parametrize("items", [
    [[False, None]],  # nil stands only for a job discarded over its limit: an accepted one
    [[True, 5]],
    [[True, b"id"]],
    [[True, "id", "more"]],
    [[None, "id"]],
])
def test_a_client_refuses_an_enqueued_answer_of_the_wrong_shape(items: list) -> None:
    """A client checks the node's ENQUEUED answer in full before it uses it: each item is
    [True, job id or nil] or [False, error text]."""
    with pytest.raises(FrameError):
        parse_reply([encode(ENQUEUED, [7, items])])


def test_a_client_reads_a_discarded_job_s_nil_id() -> None:
    assert parse_reply([encode(ENQUEUED, [7, [[True, "a"], [True, None], [False, "no"]]])]) == (
        ENQUEUED, 7, [producers.Result(True, "a"), producers.Result(True, None), producers.Result(False, "no")])
