"""G10 and H12: every field of the job wire is bounded, and so is what a peer can make a node hold.

Units: each field of each message past its bound is refused (or, for an error
text, cut), and no input makes validation raise anything but `FrameError`.
Through a node: jobs whose names no worker would accept end dead with the reason
(the dispatcher never sends them); a flood of 10^4 small frames from one fake
peer leaves the node serving, its restart counts and its RSS as they were; so do
10^4 frames nested 1,000 deep (G10).
"""

from __future__ import annotations

import asyncio
import math
import random
import subprocess
import sys
import threading
from collections import Counter
from typing import Any, Iterator

import msgpack
import psutil
import pytest
import zmq
from peer_support import dealer, deep_frames, flood, nested, restarts_in, send_all

from actorq.ids import new_id
from actorq.jobs.task import encode_payload
from actorq.journal import NewJob, open_journal
from actorq import Job, Node
from actorq.jobs import wire
from actorq.jobs.worker import WORKER_BOOT, WorkerSpec
from actorq.testing import check_total_queue, eventually, journal_invariants
from actorq.transports.codec import FrameError, encode

TASKS = """
@registry.task("h12.work")
async def work(n):
    record()
"""

NAME = wire.MAX_NAME_CHARS
SENDER = b"n/1/bounds"


def _hello(**fields: Any) -> bytes:
    body = {"owner": SENDER.decode(), "credits": 4, "queues": ["default"], "pid": 10, **fields}
    return encode(wire.HELLO, body)


def _jobs(**fields: Any) -> bytes:
    item = {"id": "j" * 32, "lease": 7, "task": "t", "payload": b"\x92\x90\x80", "attempt": 1, "max": 3,
            "queue": "default", "valid_until": 12.5, **fields}
    return encode(wire.JOBS, [list(item.values())])


# -- units --------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", [
    _hello(queues=["q"] * (wire.MAX_QUEUES + 1)),
    _hello(queues=["q" * (NAME + 1)]),
    _hello(queues=[""]),
    _hello(held=[["j" * (NAME + 1), 7]]),
    _hello(pid=0),
    _hello(pid=wire.MAX_PID + 1),
    _hello(credits=wire.MAX_CREDITS + 1),
    _hello(owner="n/1/bounds" + "x" * 300),  # not its sender's routing id (at most 255 bytes)
], ids=["queues", "queue-name", "empty-queue", "held-id", "pid-0", "pid-huge", "credits", "owner"])
def test_g10_a_hello_past_any_bound_is_refused(frame: bytes) -> None:
    with pytest.raises(FrameError, match="bad_body"):
        wire.from_worker(frame, SENDER, 1 << 20)


def test_g10_hello_at_its_bounds_is_accepted() -> None:
    hello = wire.from_worker(_hello(queues=["q" * NAME] * wire.MAX_QUEUES, held=[["j" * NAME, 7]], credits=0,
                                    pid=wire.MAX_PID), SENDER, 1 << 20)
    assert isinstance(hello, wire.Hello) and len(hello.queues) == wire.MAX_QUEUES and hello.held == {"j" * NAME: 7}


def test_g10_ack_items_are_bounded_and_error_texts_cut_and_cleaned() -> None:
    frame = encode(wire.ACK, [["j" * NAME, 7, "ok", None], ["j" * (NAME + 1), 7, "ok", None],
                              ["k", 8, "raised", "x" * 5_000_000], ["m", 9, "discarded", "a\x00b"]])
    ack = wire.from_worker(frame, SENDER, 16 << 20)
    assert isinstance(ack, wire.Ack)
    assert ack.succeeded == [("j" * NAME, 7)] and ack.rejected == ["bad_ack"]
    raised, discarded = ack.ended
    assert len(raised.error or "") == wire.MAX_ERROR_CHARS and (raised.error or "").endswith("(truncated)")
    assert discarded.error == "a\\x00b"


@pytest.mark.parametrize("field", ["id", "task", "queue"])
def test_g10_a_jobs_item_with_a_name_past_its_bound_is_dropped(field: str) -> None:
    at_bound = wire.from_dispatcher(_jobs(**{field: "n" * NAME}), 1 << 20)
    assert isinstance(at_bound, wire.Jobs) and (len(at_bound.jobs), at_bound.rejected) == (1, 0)
    past = wire.from_dispatcher(_jobs(**{field: "n" * (NAME + 1)}), 1 << 20)
    assert isinstance(past, wire.Jobs) and (past.jobs, past.rejected) == ((), 1)


@pytest.mark.parametrize("deadline", [math.inf, 0.0, 1e300, 12.5], ids=["inf", "zero", "huge", "plain"])
def test_g10_a_jobs_item_carries_its_lease_deadline(deadline: float) -> None:
    jobs = wire.from_dispatcher(_jobs(valid_until=deadline), 1 << 20)
    assert isinstance(jobs, wire.Jobs) and jobs.rejected == 0 and jobs.jobs[0].valid_until == deadline


@pytest.mark.parametrize("deadline", [math.nan, -1.0, -math.inf, 7, True, None, "7"],
                         ids=["nan", "negative", "minus-inf", "int", "bool", "none", "text"])
def test_g10_a_jobs_item_with_a_bad_lease_deadline_is_dropped(deadline: Any) -> None:
    jobs = wire.from_dispatcher(_jobs(valid_until=deadline), 1 << 20)
    assert isinstance(jobs, wire.Jobs) and (jobs.jobs, jobs.rejected) == ((), 1)
    no_deadline = encode(wire.JOBS, [["j" * 32, 7, "t", b"\x92\x90\x80", 1, 3, "default"]])
    assert wire.from_dispatcher(no_deadline, 1 << 20) == wire.Jobs((), 1)


@pytest.mark.parametrize("until", [math.inf, 0.0, 1e300, 12.5], ids=["inf", "zero", "huge", "plain"])
def test_g10_leases_round_trip(until: float) -> None:
    assert wire.from_dispatcher(wire.Leases(until).encode(), 1 << 20) == wire.Leases(until)


@pytest.mark.parametrize("body", [math.nan, -1.0, -math.inf, 7, True, None, "7", [1.0], {"until": 1.0}],
                         ids=["nan", "negative", "minus-inf", "int", "bool", "none", "text", "list", "map"])
def test_g10_leases_with_a_bad_deadline_are_refused(body: Any) -> None:
    with pytest.raises(FrameError, match="bad_body"):
        wire.from_dispatcher(encode(wire.LEASES, body), 1 << 20)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(12 if depth < 6 else 8)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, 1, -1, 2**63 - 1, 2**64 - 1, -(2**63), 7, 1000])
    if choice == 3:
        return rng.choice([0.5, float("nan"), float("inf"), -0.0])
    if choice == 4:
        return rng.choice(["", "ok", "raised", "release", "x" * 300, "\u2603", "default"])
    if choice == 5:
        return rng.randbytes(rng.randrange(8))
    if choice in (6, 7):
        return rng.choice(["j" * 32, "owner", "hb", "jobs"])
    if choice in (8, 9):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(9))]
    keys = ["owner", "credits", "queues", "pid", "held", "reset", "x"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(6))}


def _random_frames(rng: random.Random, count: int) -> Iterator[bytes]:
    kinds = sorted(wire.KINDS)
    for _ in range(count):
        kind = rng.choice(kinds)
        yield encode(kind, _random_value(rng))
        yield msgpack.packb([1, kind, msgpack.packb(_random_value(rng))])  # a body hidden in bytes
        yield b"\x93\x01" + msgpack.packb(kind) + nested(rng.randrange(1, 1000))
        yield b"\x93\x01" + msgpack.packb(kind) + b"\x91" * rng.randrange(10) + b"\xdd\xff\xff\xff\xff"


def test_g10_validation_raises_nothing_but_frame_error(rng: random.Random) -> None:
    results: Counter[str] = Counter()
    for frame in _random_frames(rng, 2000):
        for validate in (lambda: wire.from_worker(frame, SENDER, 1 << 20),
                         lambda: wire.from_dispatcher(frame, 1 << 20)):
            try:
                results[type(validate()).__name__] += 1
            except FrameError as exc:
                results[exc.reason] += 1
    print(dict(results))
    assert sum(results.values()) == 2 * 4 * 2000


def test_a_worker_serving_queues_past_the_wire_bounds_says_so_and_exits(tmp_path) -> None:
    spec = WorkerSpec(endpoint=f"ipc://{tmp_path}/d", owner="n/{pid}/x", concurrency=1, prefetch=0,
                      queues=["q" * (NAME + 1)], tasks=[], sys_path=[], log_level="info", max_frame_bytes=1 << 20,
                      heartbeat_interval=1.0)
    done = subprocess.run([sys.executable, "-c", WORKER_BOOT, spec.to_json()], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 3 and "workers.queues" in done.stderr, (done.returncode, done.stderr)


# -- through a node -----------------------------------------------------------------------------
async def test_g10_the_dispatcher_fails_jobs_no_worker_would_accept(topology) -> None:
    topo = topology(TASKS, processes=1)
    long_id = NewJob("i" * (NAME + 1), "default", "h12.work", encode_payload([1], {}))
    long_task = NewJob(new_id(), "default", "t" * (NAME + 1), encode_payload([2], {}))
    fine = NewJob("i" * NAME, "default", "h12.work", encode_payload([3], {}))
    # producers refuse such names (Job.to_new_job); these come straight into the journal,
    # as a producer with other rules (or raw SQL) could write them
    journal = open_journal(topo.config.journal.resolved_url)
    try:
        journal.enqueue([long_id, long_task, fine])
    finally:
        journal.close()
    async with Node(topo.config) as node:
        await node.wait_idle(timeout=30)
        assert node.progress().worker_restarts == 0
    for job in (long_id, long_task):
        info = topo.info(job.id)
        assert (info.state, info.errors) == ("dead", [f"job id, task or queue name longer than {NAME} characters"])
    assert topo.states()[fine.id] == "succeeded"
    assert [e.job_id for e in topo.ledger.read()] == [fine.id]


def _flood_frames(count: int, forged: Counter[str]) -> Iterator[list[bytes]]:
    """`count` small frames from one peer, valid and not, counted by what they must cost; then a sentinel."""
    for n in range(count):
        kind = n % 6
        if kind == 0:
            yield [wire.Heartbeat.FRAME]  # valid: an unknown sender is told WHO (once a second)
        elif kind == 1:
            forged["acks"] += 1
            yield [encode(wire.ACK, [[f"{n:032x}", 7, "ok", None]])]  # valid, fenced by the journal
        elif kind == 2:
            yield [wire.Bye.FRAME]
        elif kind == 3:
            forged["not_msgpack"] += 1
            yield [b"\xc1"]
        elif kind == 4:
            forged["bad_body"] += 1
            yield [_hello(owner="someone-else")]
        else:
            forged["bad_ack"] += 1
            yield [encode(wire.ACK, [["x", 0, "ok", None]])]
    yield [b"end", b"of flood"]


def _deep_frames(count: int) -> Iterator[list[bytes]]:
    frames = deep_frames(b"\xa3ack") + deep_frames(b"\xa5hello")
    for n in range(count):
        yield [frames[n % len(frames)]]
    yield [b"end", b"of flood"]


async def _flooded(topo, messages: Iterator[list[bytes]], jobs: int) -> tuple[dict[str, int], int]:
    """Run a node, flood its dispatcher from one fake peer while `jobs` jobs run, and check
    that it served them all and stayed as it was; returns the dispatcher's malformed counts
    and the acks the journal fenced meanwhile."""
    ctx = zmq.Context()
    try:
        async with Node(topo.config) as node:
            warm = [Job("h12.work", [n]) for n in range(50)]
            await node.queue().enqueue_many(warm)
            await node.wait_idle(timeout=30)
            await eventually(lambda: node.runtime.dispatcher.worker_count == 2, timeout=30, message="workers up")
            pids, dispatcher = node.worker_pids(), node.runtime.dispatcher
            stale = node.runtime.writer.stats.stale_acks
            rss = psutil.Process().memory_info().rss
            peer = dealer(ctx, node.endpoint, b"h12-flood")  # referenced until read: collected, it drops the rest
            sending = asyncio.ensure_future(flood(peer, messages))
            work = [Job("h12.work", [n]) for n in range(jobs)]
            accepted = set(await node.queue().enqueue_many(work))
            sent = await sending
            await eventually(lambda: dispatcher.stats.malformed["part_count"] == 1
                             or node.runtime.dispatcher is not dispatcher, timeout=600, message="the flood was processed")
            await node.wait_idle(timeout=120)  # still serving: every job ran meanwhile
            grown = psutil.Process().memory_info().rss - rss
            tree = await node.tree()
            print(f"{sent - 1} frames from one peer: malformed {dict(dispatcher.stats.malformed)}; "
                  f"{node.runtime.writer.stats.stale_acks - stale} stale acks; {restarts_in(tree)} restarts; "
                  f"RSS {rss / 2**20:.1f} MiB before, {grown / 2**20:+.1f} MiB after")
            assert node.runtime.dispatcher is dispatcher, "no frame may crash the dispatcher"
            assert restarts_in(tree) == 0 and node.worker_pids() == pids and node.failure is None
            assert node.runtime.dispatcher.worker_count == 2
            assert grown < 50 * 2**20
            counts = (dict(dispatcher.stats.malformed), node.runtime.writer.stats.stale_acks - stale)
    finally:
        ctx.destroy(linger=0)
    check = check_total_queue(accepted, [e for e in topo.ledger.read() if e.job_id in accepted],
                              {i for i, state in topo.states().items() if state == "succeeded"})
    assert check.valid and not check.duplicated, check.summary()
    assert journal_invariants(topo.journal_path) == []
    return counts


async def test_h12_a_flood_of_small_frames_from_one_peer(topology) -> None:
    forged: Counter[str] = Counter()
    malformed, stale = await _flooded(topology(TASKS), _flood_frames(12_000, forged), jobs=500)
    acks = forged.pop("acks")
    assert malformed == {**forged, "part_count": 1} and stale == acks


async def test_g10_10e4_frames_nested_1000_deep_from_one_peer(topology) -> None:
    malformed, _ = await _flooded(topology(TASKS), _deep_frames(10_000), jobs=200)
    assert sum(malformed.values()) == 10_000 + 1


async def test_h12_a_stalled_dispatcher_holds_a_bounded_backlog_from_one_peer(topology) -> None:
    # a peer offers 10,000 frames of 64 KiB (625 MiB) while the node's loop is stalled: the
    # dispatcher's socket takes only what its high-water mark allows, the rest waits in the peer
    topo = topology(TASKS, processes=1)
    ctx = zmq.Context()
    frame, count = b"\xc1" * (64 << 10), 10_000
    try:
        async with Node(topo.config) as node:
            await node.queue().enqueue_many([Job("h12.work", [n]) for n in range(20)])
            await node.wait_idle(timeout=30)
            dispatcher = node.runtime.dispatcher
            peer = dealer(ctx, node.endpoint, b"h12-stall")
            peer.setsockopt(zmq.SNDHWM, 1)  # the peer's own buffer is not the node's: keep it out of the RSS
            rss = psutil.Process().memory_info().rss
            sender = threading.Thread(target=send_all, args=(peer, ([frame] for _ in range(count))))
            sender.start()
            sender.join(timeout=3.0)  # the loop stalls meanwhile: the dispatcher reads nothing
            held = psutil.Process().memory_info().rss - rss
            await asyncio.to_thread(sender.join)
            await eventually(lambda: dispatcher.stats.malformed["not_msgpack"] == count, timeout=120,
                             message="every frame was read once the loop went on")
            print(f"{count} frames of 64 KiB offered to a stalled dispatcher: RSS {rss / 2**20:.1f} MiB, "
                  f"{held / 2**20:+.1f} MiB while stalled")
            assert held < 50 * 2**20
            job = Job("h12.work", [99])
            await node.queue().enqueue(job)
            await node.wait_idle(timeout=30)
            assert topo.states()[job.id] == "succeeded" and node.runtime.dispatcher is dispatcher
    finally:
        ctx.destroy(linger=0)


@pytest.mark.chaos
@pytest.mark.timeout(1800)
async def test_h12_chaos_10e5_frames_from_one_peer(topology) -> None:
    forged: Counter[str] = Counter()
    malformed, stale = await _flooded(topology(TASKS), _flood_frames(100_000, forged), jobs=5000)
    acks = forged.pop("acks")
    assert malformed == {**forged, "part_count": 1} and stale == acks
    malformed, _ = await _flooded(topology(TASKS), _deep_frames(100_000), jobs=5000)
    assert sum(malformed.values()) == 100_000 + 1
