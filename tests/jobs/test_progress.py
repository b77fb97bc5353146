"""The progress line counts what the journal stored, over the node's life.

Forged acks (a fake peer on the dispatcher's socket, with lease ids the journal
never gave) are fenced by the journal: they must not be counted as succeeded or
failed. A restart of the dispatcher or of the journal writer must not set a
count back (a rate computed from them once went negative).
"""

from __future__ import annotations

import asyncio

import zmq

from actorq import Job, Node
from actorq.ids import new_id
from actorq.jobs import wire
from actorq.jobs.producers import ENQUEUED, encode_request, parse_reply
from actorq.journal.protocol import NewJob
from actorq.testing import eventually
from actorq.transports.codec import encode

TASKS = """
@registry.task("prog.ok")
async def ok(n):
    record()


@registry.task("prog.fails")
async def fails():
    record()
    raise RuntimeError("no")
"""


async def _done(node: Node, topo) -> tuple[list[Job], list[Job]]:
    oks = [Job("prog.ok", [n]) for n in range(3)]
    failing = [Job("prog.fails", max_attempts=1)]
    await node.queue().enqueue_many(oks + failing)
    await node.wait_idle(timeout=30)
    return oks, failing


async def test_forged_acks_fenced_by_the_journal_are_not_counted(topology):
    topo = topology(TASKS, processes=1)
    async with Node(topo.config) as node:
        oks, failing = await _done(node, topo)
        assert (node.progress().succeeded, node.progress().failed) == (3, 1)
        stale = node.runtime.writer.stats.stale_acks
        # real job ids with lease ids the journal never gave, and ids it never held
        forged = [[job.id, 424242, "ok", None] for job in oks] + [["f" * 32, 7, "ok", None]]
        forged += [[failing[0].id, 424242, "raised", "forged"], ["e" * 32, 7, "unrunnable", "forged"]]
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.ROUTING_ID, b"forger")
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(node.endpoint)
        try:
            for _ in range(10):
                dealer.send(encode(wire.ACK, forged))
            await eventually(lambda: node.runtime.writer.stats.stale_acks == stale + 10 * len(forged), timeout=30,
                             message="the journal fenced every forged ack")
        finally:
            ctx.destroy(linger=0)
        progress = node.progress()
        print(f"dispatcher saw {node.runtime.dispatcher.stats.succeeded} ok and {node.runtime.dispatcher.stats.failed} "
              f"failed ack items; progress: {progress}")
        assert (progress.succeeded, progress.failed, progress.stale_acks) == (3, 1, 10 * len(forged))
    assert set(topo.states().values()) == {"succeeded", "dead"}


async def test_counts_never_go_back_when_the_dispatcher_or_the_writer_restarts(topology):
    topo = topology(TASKS, processes=1)
    async with Node(topo.config) as node:
        await _done(node, topo)
        before = node.progress()
        assert (before.succeeded, before.failed) == (3, 1)

        old = node.runtime.dispatcher
        node.system.exit(node.system.whereis("dispatcher"), "kill")
        await eventually(lambda: node.runtime.dispatcher is not old and node.runtime.dispatcher.worker_count == 1,
                         timeout=30, message="the dispatcher restarted and the worker re-announced")
        after = node.progress()
        assert (after.succeeded, after.failed, after.commits >= before.commits) == (3, 1, True)

        old_writer = node.runtime.writer
        node.system.exit(node.system.whereis("journal-writer"), "kill")
        await eventually(lambda: node.runtime.writer is not old_writer and node.runtime.dispatcher.worker_count == 1,
                         timeout=30, message="the writer and the dispatcher restarted")
        await _done(node, topo)
        final = node.progress()
        assert (final.succeeded, final.failed) == (6, 2)
        assert final.commits > after.commits and final.ops > after.ops


async def test_an_idle_node_neither_writes_nor_claims_work_and_a_waiting_write_is_named(topology, capsys):
    """Issue 12's starving node: the scheduler's tick reads before it writes, so an idle node
    takes no write lock each tick; "idle" is said only when the last lease found nothing; and a
    write that waits on the journal's lock is named on the progress line instead of "idle"."""
    import sqlite3
    import time

    from actorq.node.cli import _ProgressPrinter

    topo = topology(TASKS, processes=1, poll_interval=0.02)
    async with Node(topo.config) as node:
        await _done(node, topo)
        await eventually(lambda: node.progress().idle, timeout=10, message="the node says it is idle")
        commits = node.progress().commits
        await asyncio.sleep(1.0)  # ~50 scheduler ticks
        # at most a leadership renewal (every 5 s) in a second; before, every tick was a commit
        assert node.progress().commits - commits <= 1
        printer = _ProgressPrinter(node, quiet=False)
        printer.tick()  # the first line counts the jobs done so far as progress
        capsys.readouterr()
        printer.tick()
        assert "(idle: waiting for jobs)" in capsys.readouterr().err
        assert node.status()["activity"] == "idle" and node.status()["idle"] is True

        # another process's write holds SQLite's lock: the node's next group waits for it
        holder = sqlite3.connect(topo.config.journal.sqlite_path, isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")
        try:
            node.queue().tell(Job("prog.ok", [99]))
            await eventually(lambda: node.progress().journal_wait >= 1.5, timeout=10,
                             message="the writer's group waits on the lock")
            progress = node.progress()
            assert not progress.idle
            printer.tick()
            line = capsys.readouterr().err
            assert "waiting on the journal for" in line and "idle" not in line, line
            status = node.status()  # what `actorq status` is told (STATUS on the control socket)
            assert (status["activity"], status["idle"]) == ("journal_waiting", False), status
            assert status["journal"]["wait"] >= 1.5
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await node.wait_idle(timeout=30)
        started = time.monotonic()
        await eventually(lambda: node.progress().journal_wait == 0.0, timeout=10, message="the wait ended")
        assert time.monotonic() - started < 10


async def test_producer_counts_never_go_back_when_the_producer_endpoint_restarts(topology):
    """`actorq status` shows the producer endpoint's counts from `Progress`: requests, BUSY
    answers and dropped frames by reason, summed over every incarnation of the endpoint."""
    topo = topology(TASKS, processes=1)
    async with Node(topo.config) as node:
        ctx = zmq.Context()

        def send(frame: bytes, answered: bool) -> None:
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0 if answered else 10_000)  # a frame with no answer still leaves
            dealer.connect(node.runtime.producers_endpoint)
            try:
                dealer.send(frame)
                if answered:
                    assert dealer.poll(30_000), "no answer from the producer endpoint"
                    assert parse_reply(dealer.recv_multipart())[0] == ENQUEUED
            finally:
                dealer.close()

        async def one_round(n: int) -> None:
            job = NewJob(new_id(), "default", "prog.ok", b"\x92\x91\x01\x80", 0, None, 1, None)
            await asyncio.to_thread(send, encode_request(n, [job]), True)
            await asyncio.to_thread(send, b"\xc1", False)
            await eventually(lambda: node.progress().producer_dropped.get("not_msgpack") == n, timeout=30,
                             message="the bad frame was counted")

        try:
            await one_round(1)
            old = node.runtime.producers
            node.system.exit(node.system.whereis("producers"), "kill")
            await eventually(lambda: node.runtime.producers is not old and node.runtime.producers is not None,
                             timeout=30, message="the producer endpoint restarted")
            await one_round(2)
        finally:
            ctx.destroy(linger=0)
        progress = node.progress()
        assert (progress.producer_requests, progress.producer_jobs, progress.producer_busy) == (2, 2, 0)
        assert progress.producer_dropped == {"not_msgpack": 2}
        assert node.status()["producers"] == {"requests": 2, "jobs": 2, "busy": 0, "dropped": {"not_msgpack": 2}}
        await node.wait_idle(timeout=30)
