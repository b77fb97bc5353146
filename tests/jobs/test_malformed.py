"""G1, G5 and G10 at the dispatcher: malformed frames on its real ROUTER socket.

A real zmq DEALER (and a REQ, whose envelope adds a delimiter frame) connects
to ``node.endpoint`` and sends bad messages, then mutations of good and bad ones. Each one must be dropped and
counted in ``node.runtime.dispatcher.stats.malformed`` under its reason, and the node
must go on to run the next valid job end to end through its worker processes.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import msgpack
import psutil
import pytest
import zmq
from peer_support import deep_frames, flood, huge_header_frames, mutator, restarts_in

from actorq import Job, Node
from actorq.testing import check_total_queue, eventually, journal_invariants
from actorq.jobs import wire
from actorq.jobs.retry import MAX_RETRY_DELAY
from actorq.transports.codec import encode

TASKS = """
@registry.task("g1.echo")
async def echo(n):
    record(f"n={n}")
"""

HUGE = 2**64 - 1  # the largest int msgpack can carry


def packb(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def hello(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {"owner": "g1-intruder", "credits": 4, "queues": ["default"], "pid": 1}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def ack(*items: object) -> bytes:
    return encode(wire.ACK, list(items))


# (expected reasons, the parts the peer sends)
CASES: list[tuple[str, list[bytes]]] = [
    # envelope
    ("part_count", [b"a", b"b"]),
    ("part_count", [encode(wire.BYE, None), b""]),
    ("not_msgpack", [b""]),
    ("not_msgpack", [b"\xc1"]),  # a byte msgpack never uses
    ("not_msgpack", [encode(wire.HELLO, hello())[:-3]]),  # truncated
    ("trailing_bytes", [encode(wire.BYE, None) + b"\x00"]),
    ("bad_envelope", [packb({"version": 1})]),
    ("bad_envelope", [packb([1, "hello"])]),
    ("bad_envelope", [packb("hello")]),
    ("bad_version", [packb([2, "hello", hello()])]),
    ("bad_version", [packb([HUGE, "ack", []])]),
    ("bad_version", [packb([math.nan, "ack", []])]),
    ("bad_version", [packb([True, "ack", []])]),
    ("unknown_kind", [packb([1, "launch", None])]),
    ("unknown_kind", [packb([1, b"ack", []])]),
    ("unexpected_kind", [encode(wire.JOBS, [])]),  # a dispatcher -> worker kind
    ("unexpected_kind", [encode(wire.STOP, None)]),
    ("not_msgpack", [b"\x93\x01\xa3ack\xa2\xff\xfe"]),  # invalid UTF-8 in a str
    ("not_msgpack", [b"\x91" * 100_000 + b"\xc0"]),  # nested 10^5 deep
    ("not_msgpack", [b"\x93\x01\xa3ack\xdd\xff\xff\xff\xff"]),  # a 4-billion-item array header
    ("not_msgpack", [packb([1, "hello", {1: 2}])]),  # a non-string map key
    ("not_msgpack", [packb([1, "ack", [msgpack.ExtType(7, b"obj")]])]),  # an ext type
    # hello
    ("bad_body", [encode(wire.HELLO, ["g1-intruder", 4])]),
    ("bad_body", [encode(wire.HELLO, hello(owner="someone-else"))]),  # owner is not the sender
    ("bad_body", [encode(wire.HELLO, hello(owner=""))]),
    ("bad_body", [encode(wire.HELLO, hello(credits=0))]),
    ("bad_body", [encode(wire.HELLO, hello(credits=True))]),
    ("bad_body", [encode(wire.HELLO, hello(credits=10**7))]),
    ("bad_body", [encode(wire.HELLO, hello(credits=HUGE))]),
    ("bad_body", [encode(wire.HELLO, hello(credits=math.nan))]),
    ("bad_body", [encode(wire.HELLO, hello(credits="4"))]),
    ("bad_body", [encode(wire.HELLO, hello(queues=[]))]),
    ("bad_body", [encode(wire.HELLO, hello(queues=[1]))]),
    ("bad_body", [encode(wire.HELLO, hello(queues="default"))]),
    ("bad_body", [encode(wire.HELLO, hello(pid="1"))]),
    ("bad_body", [encode(wire.HELLO, hello(pid=...))]),  # missing
    ("bad_body", [encode(wire.HELLO, hello(held="all"))]),
    ("bad_body", [encode(wire.HELLO, hello(held=[["0190f3a1", 0]]))]),  # lease ids are > 0
    ("bad_body", [encode(wire.HELLO, hello(held=[["0190f3a1", True]]))]),
    ("bad_body", [encode(wire.HELLO, hello(held=[["0190f3a1"]]))]),
    ("bad_body", [encode(wire.HELLO, hello(held=[[1, 2]]))]),
    ("bad_body", [encode(wire.HEARTBEAT, 1)]),
    ("unexpected_kind", [encode(wire.WHO, None)]),  # dispatcher-to-worker kinds
    ("unexpected_kind", [encode(wire.RESET, None)]),
    ("unexpected_kind", [encode(wire.LEASES, 12.5)]),
    # ack
    ("bad_body", [encode(wire.ACK, {"job": "x"})]),
    ("bad_body", [encode(wire.ACK, None)]),
    ("bad_ack", [ack("not-a-list")]),
    ("bad_ack", [ack(["id", 1, "ok"])]),
    ("bad_ack", [ack([5, 1, "ok", None])]),
    ("bad_ack", [ack(["id", True, "ok", None])]),
    ("bad_ack", [ack(["id", "1", "ok", None])]),
    ("bad_ack", [ack(["id", HUGE, "ok", None])]),  # beyond any lease id (and SQLite's int64)
    ("bad_ack", [ack(["id", -3, "raised", "boom"])]),
    ("bad_ack", [ack(["id", 0, "ok", None])]),
    ("bad_ack", [ack(["id", 7, "ok", None, None])]),  # one field too many
    ("bad_ack", [ack(["id", 7, "discarded", "boom", "trace", 1.0])]),  # only a value or a retry's delay makes six
    ("bad_ack", [ack(["id", 7, "permanent", "boom", None, 1.0])]),  # an attempt not retried has no delay
    ("bad_ack", [ack(["id", 7, "release", None, None, 1.0])]),
    ("bad_ack", [ack(["id", 7, "raised", "boom", 12, 1.0])]),  # the traceback before the delay is still text
    ("bad_delay", [ack(["id", 7, "raised", "boom", "trace", -1.0])]),
    ("bad_delay", [ack(["id", 7, "raised", "boom", None, float("nan")])]),
    ("bad_delay", [ack(["id", 7, "timed_out", "late", None, float("inf")])]),
    ("bad_delay", [ack(["id", 7, "raised", "boom", None, MAX_RETRY_DELAY + 1])]),
    ("bad_delay", [ack(["id", 7, "raised", "boom", None, "60"])]),
    ("bad_delay", [ack(["id", 7, "raised", "boom", None, True])]),
    ("bad_delay", [ack(["id", 7, "raised", "boom", None, None])]),
    ("bad_ack", [ack(["id", 7, "release", None, "trace"])]),  # nor does a release carry a traceback
    ("bad_ack", [ack(["id", 7, "raised", "boom", 12])]),  # a traceback is text
    ("bad_result", [ack(["id", 7, "ok", None, "not bytes", 60.0])]),
    ("bad_result", [ack(["id", 7, "ok", None, b"", 60.0])]),  # None is stored as nothing, never as b""
    ("bad_result", [ack(["id", 7, "ok", None, b"\x01", float("nan")])]),
    ("bad_result", [ack(["id", 7, "ok", None, b"\x01", "60"])]),
    ("bad_outcome", [ack(["id", 7, "explode", None])]),
    ("bad_outcome", [ack(["id", 7, "crashed", None])]),  # only the node says a worker crashed
    ("bad_outcome", [ack(["id", 7, ["ok"], None])]),
    ("bad_ack bad_ack bad_outcome", [ack([], [1], ["id", 7, 3, None])]),  # counted per item
]


@pytest.fixture
def zmq_context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _dealer(ctx: zmq.Context, endpoint: str, identity: bytes) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 5000)
    sock.connect(endpoint)
    return sock


async def _run_one_job(node: Node, topo, n: int) -> None:
    job = Job("g1.echo", [n])
    await node.queue().enqueue(job)
    await eventually(lambda: topo.states()[job.id] == "succeeded", timeout=30, message=f"job {n} succeeded")
    assert [e.tag.endswith(f"/n={n}") for e in topo.ledger.read() if e.job_id == job.id] == [True]


async def test_g1_malformed_frames_are_dropped_and_counted(topology, zmq_context):
    topo = topology(TASKS)
    async with Node(topo.config) as node:
        await _run_one_job(node, topo, 1)  # the workers are up and serving
        await eventually(lambda: node.runtime.dispatcher.worker_count == 2, timeout=30, message="both workers said hello")
        pids = node.worker_pids()
        stats = node.runtime.dispatcher.stats
        expected: Counter[str] = Counter()

        dealer = _dealer(zmq_context, node.endpoint, b"g1-intruder")
        for reasons, parts in CASES:
            dealer.send_multipart(parts)
            expected.update(reasons.split())
        # the envelope a ROUTER peer or a REQ socket adds: an identity and/or an empty delimiter
        dealer.send_multipart([b"g1-intruder", b"", encode(wire.HELLO, hello())])
        expected["part_count"] += 1
        req = zmq_context.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(node.endpoint)
        req.send(encode(wire.BYE, None))
        expected["part_count"] += 1

        total = sum(expected.values())
        try:
            await eventually(lambda: sum(stats.malformed.values()) >= total, timeout=30,
                             message=f"{total} malformed frames counted")
        finally:
            print(f"malformed counted: {dict(stats.malformed)}; expected {dict(expected)}")
        assert dict(stats.malformed) == dict(expected)

        await _run_one_job(node, topo, 2)  # the next valid message is processed
        assert node.runtime.dispatcher.worker_count == 2, "no malformed hello may register a worker"
        assert node.worker_pids() == pids and node.failure is None
        assert node.runtime.writer.stats.failed_commits == 0
    assert journal_invariants(topo.journal_path) == []


def _fuzz_frames(rng, count: int):
    """`count` frames of one part: the seeds as they are, then seeded mutations of them. The seeds
    are valid frames, frames nested 1,000 deep in the version, the kind or the body (G10), and
    bodies that declare 2^31 items."""
    seeds = [
        encode(wire.HELLO, hello(owner="fuzz-seed-owner")),
        ack(["0" * 32, 12345, "ok", None], ["1" * 32, 99, "raised", "boom"]),
        ack(["2" * 32, 7, "release", None]),
        ack(["3" * 32, 8, "raised", "Retry: retry in 60 s", "trace", 60.0], ["4" * 32, 9, "timed_out", "late", None, 0],
            ["5" * 32, 10, "permanent", "KeyError: 'k'", "trace"]),
        encode(wire.BYE, None),
        *deep_frames(b"\xa3ack"), *deep_frames(b"\xa5hello"),
        *huge_header_frames(b"\xa3ack"),
    ]
    mutate = mutator(rng)
    for n in range(count):
        yield [seeds[n] if n < len(seeds) else mutate(rng.choice(seeds))]
    yield [b"end", b"of fuzz"]  # sentinel (a part_count drop): frames of one peer arrive in order


async def _fuzz_the_dispatcher(topo, zmq_context, rng, frames: int) -> None:
    async with Node(topo.config) as node:
        await _run_one_job(node, topo, 1)
        await eventually(lambda: node.runtime.dispatcher.worker_count == 2, timeout=30, message="both workers said hello")
        pids = node.worker_pids()
        dispatcher = node.runtime.dispatcher
        stats = dispatcher.stats
        rss = psutil.Process().memory_info().rss
        peer = _dealer(zmq_context, node.endpoint, b"g5-fuzzer")
        fuzz = asyncio.ensure_future(flood(peer, _fuzz_frames(rng, frames)))
        jobs = [Job("g1.echo", [n]) for n in range(100, 300)]  # real work while the fuzz lasts
        accepted = set(await node.queue().enqueue_many(jobs))
        await fuzz
        await eventually(lambda: stats.malformed["part_count"] == 1 or node.runtime.dispatcher is not dispatcher,
                         timeout=600, message="the fuzz was processed")
        grown = psutil.Process().memory_info().rss - rss
        print(f"{frames} mutated frames: {sum(stats.malformed.values()) - 1} dropped as malformed "
              f"{dict(stats.malformed)}; {node.runtime.writer.stats.stale_acks} stale acks fenced; "
              f"RSS {rss / 2**20:.1f} MiB before, {grown / 2**20:+.1f} MiB after")
        assert node.runtime.dispatcher is dispatcher, "no frame may crash the dispatcher"
        assert 0 < sum(stats.malformed.values()) - 1 <= frames

        await _run_one_job(node, topo, 2)
        await node.wait_idle(timeout=60)
        tree = await node.tree()
        assert node.runtime.dispatcher is dispatcher and restarts_in(tree) == 0
        assert node.worker_pids() == pids and node.failure is None
        assert node.runtime.dispatcher.worker_count == 2
        assert node.runtime.writer.stats.failed_commits == 0
        assert grown < 50 * 2**20
    check = check_total_queue(accepted, [e for e in topo.ledger.read() if e.job_id in accepted],
                              {i for i, state in topo.states().items() if state == "succeeded"})
    assert check.valid and not check.duplicated, check.summary()
    assert journal_invariants(topo.journal_path) == []


async def test_g5_seeded_mutation_fuzz_at_the_dispatcher(topology, zmq_context, rng):
    await _fuzz_the_dispatcher(topology(TASKS), zmq_context, rng, 5000)


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_g5_chaos_10e5_mutated_frames_at_the_dispatcher(topology, zmq_context, rng):
    await _fuzz_the_dispatcher(topology(TASKS), zmq_context, rng, 100_000)
