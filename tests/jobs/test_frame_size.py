"""G2 and G8 through real workers: every frame fits the peer's ZeroMQ MAXMSGSIZE.

A frame over the limit makes ZeroMQ drop the connection without a word; the
jobs in it would stay leased (and renewed) forever. So: job arguments are
bounded at `tell`, JOBS messages are split by size, a job that can never fit
is marked dead, and error texts in acks are truncated.
"""

from __future__ import annotations

import pytest

from actorq import Client, Job, Node
from actorq.jobs.task import encode_payload
from actorq.testing import journal_invariants

FRAME = 131_072  # the smallest allowed max_frame_bytes: job arguments up to 64 KiB
TASKS = """
@registry.task("size.store")
def store(blob):
    record(f"{len(blob)}")


@registry.task("size.shout", retry=RetryPolicy(base=0.0, jitter=0.0))
def shout():
    record()
    raise ValueError("x" * 1_000_000)
"""


async def test_g2_arguments_over_the_frame_limit_are_refused_at_tell(topology):
    topo = topology(TASKS, max_frame_bytes=FRAME)
    async with Node(topo.config) as node:
        with pytest.raises(ValueError, match=r"the limit is 65,536"):
            node.queue().tell(Job("size.store", [b"x" * 70_000]))
        assert await node.wait_idle(timeout=10) == {}


async def test_jobs_are_split_across_frames_and_all_run(topology):
    # 12 jobs of 30 kB: a worker has 16 credits, so one lease returns them all,
    # and they must travel as several JOBS messages of at most 64 KiB of payloads
    topo = topology(TASKS, processes=1, concurrency=8, prefetch=8, max_frame_bytes=FRAME)
    jobs = [Job("size.store", [b"y" * 30_000]) for _ in range(12)]
    async with Node(topo.config) as node:
        await node.queue().enqueue_many(jobs)
        counts = await node.wait_idle(timeout=30)
        assert node.progress().worker_restarts == 0
    assert counts == {"default": {"succeeded": 12}}
    entries = topo.ledger.read()
    assert sorted(e.job_id for e in entries) == sorted(j.id for j in jobs)
    assert journal_invariants(topo.journal_path) == []


async def test_a_job_too_large_for_this_node_goes_dead_with_the_reason(topology):
    topo = topology(TASKS, processes=1, max_frame_bytes=FRAME)
    with Client(f"sqlite:///{topo.journal_path}") as client:  # a producer with the default, larger limit
        big = client.enqueue(Job("size.store", [b"z" * 100_000]))
        small = client.enqueue(Job("size.store", [b"z" * 10]))
    async with Node(topo.config) as node:
        counts = await node.wait_idle(timeout=30)
    assert counts == {"default": {"dead": 1, "succeeded": 1}}
    info = topo.info(big)
    assert info.state == "dead"
    size = len(encode_payload([b"z" * 100_000], {}))
    assert info.errors == [f"payload of {size:,} bytes does not fit in dispatcher.max_frame_bytes (131,072)"]
    assert topo.info(small).state == "succeeded"


async def test_g8_a_huge_exception_text_is_truncated_and_the_worker_stays_connected(topology):
    topo = topology(TASKS, processes=1, max_frame_bytes=FRAME)
    shout = Job("size.shout", [], max_attempts=2)
    after = Job("size.store", [b"ok"])
    async with Node(topo.config) as node:
        await node.queue().enqueue(shout)
        await node.queue().enqueue(after)
        counts = await node.wait_idle(timeout=30)
        assert node.progress().worker_restarts == 0
    assert counts == {"default": {"dead": 1, "succeeded": 1}}
    errors = topo.info(shout.id).errors
    assert len(errors) == 2
    for error in errors:
        assert error.startswith("ValueError: xxx") and error.endswith(" ... (truncated)"), error[-40:]
        assert len(error) == 2000
