"""G11: a task's error text with unpaired surrogates, invalid UTF-8, a NUL or 5 MB.

Real worker processes through a node, the journal (SQLite and PostgreSQL) and the
independent ledger. The jobs are enqueued before the node starts, so one lease
takes them all to the one worker in one JOBS frame; they are async tasks that
end in their first step, so their acks leave in one ACK batch. A bad text must
not take the other outcomes of that batch with it: each job ends in the state
its policy says, and each error is stored valid UTF-8 and bounded.

A unit test drives a real `Worker` against a ROUTER socket to see the batch itself.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import pytest
from worker_support import acks_received, worker_on_router

from actorq import Job, Node, TaskRegistry
from actorq.jobs import wire
from actorq.jobs.task import encode_payload
from actorq.jobs.worker import load_registries
from actorq.testing import eventually, journal_invariants

TASKS = """
import logging

log = logging.getLogger("g11")


@registry.task("g11.ok")
async def ok(n):
    record(f"n={n}")


@registry.task("g11.file_name", retry=RetryPolicy(base=0.0, jitter=0.0))
async def file_name():
    record()
    name = os.fsdecode(b"report-\\xff\\xfe.csv")  # a non-UTF-8 name, as file systems hold
    log.warning("cannot parse %s", name)  # a log line with the same text
    raise RuntimeError(f"cannot parse {name}")


@registry.task("g11.lone_surrogate")
async def lone_surrogate():
    record()
    raise ValueError("half a pair: \\ud83d!")


class Unprintable(Exception):
    def __str__(self):
        raise SystemExit("not from __str__ either")


@registry.task("g11.unprintable")
async def unprintable():
    record()
    raise Unprintable()


@registry.task("g11.nul")
async def nul():
    record()
    raise RuntimeError("before\\x00after")


@registry.task("g11.huge")
async def huge():
    record()
    raise RuntimeError("x" * 5_000_000)


@registry.task("g11.discard")
async def discard():
    record()
    raise Discard(os.fsdecode(b"caf\\xc3 \\x80"))
"""

# what each job's errors must read, as stored
EXPECTED: dict[str, tuple[str, list[str]]] = {
    "g11.file_name": ("dead", ["RuntimeError: cannot parse report-\\xff\\xfe.csv"] * 2),
    "g11.lone_surrogate": ("dead", ["ValueError: half a pair: \\ud83d!"]),
    "g11.unprintable": ("dead", ["Unprintable: <unprintable>"]),
    "g11.nul": ("dead", ["RuntimeError: before\\x00after"]),
    "g11.discard": ("failed", ["Discard: caf\\xc3 \\x80"]),
}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_g11_bad_error_texts_are_stored_sanitized_and_lose_no_other_outcome(topology, backend, request):
    pg = {}
    if backend == "postgres":
        from journal_support import PG_URL

        pg = {"journal_url": PG_URL, "schema": request.getfixturevalue("pg_schema")}
    topo = topology(TASKS, processes=1, concurrency=16, prefetch=0, **pg)
    oks = [Job("g11.ok", [n]) for n in range(4)]
    # attempts set here: the journal's task catalog is written when the node starts
    bad = {name: Job(name, max_attempts=2 if name == "g11.file_name" else 1) for name in [*EXPECTED, "g11.huge"]}
    jobs = [oks[0], *bad.values(), *oks[1:]]
    with topo.client() as client:  # all ready before the node leases: one JOBS frame, one ACK batch
        client.enqueue_many(jobs)
    async with Node(topo.config) as node:
        terminal = {"succeeded", "failed", "dead"}
        await eventually(lambda: topo.all_in([j.id for j in jobs], *terminal), timeout=30,
                         message="every job ended (none left leased by a lost ack batch)")
        progress = node.progress()
        assert node.progress().worker_restarts == 0 and node.failure is None
    states = topo.states()
    assert {states[j.id] for j in oks} == {"succeeded"}
    for name, (state, errors) in EXPECTED.items():
        info = topo.info(bad[name].id)
        assert (info.state, info.errors) == (state, errors), name
    huge = topo.info(bad["g11.huge"].id)
    assert huge.state == "dead" and len(huge.errors) == 1
    assert len(huge.errors[0]) == wire.MAX_ERROR_CHARS
    assert huge.errors[0].startswith("RuntimeError: xxx") and huge.errors[0].endswith("... (truncated)")
    # the journal counted what it stored: 4 successes, 7 failed attempts (file_name ran twice)
    assert (progress.succeeded, progress.failed) == (4, 7)
    runs = Counter(entry.job_id for entry in topo.ledger.read())  # each ran as often as its policy says
    assert runs == {job.id: 2 if job is bad["g11.file_name"] else 1 for job in jobs}
    if backend == "sqlite":
        assert journal_invariants(topo.journal_path) == []


# -- the worker's ACK batch, seen from a ROUTER ---------------------------------------------------
registry = TaskRegistry()


@registry.task("g11u.ok")
async def unit_ok() -> None:
    pass


@registry.task("g11u.surrogate")
async def unit_surrogate() -> None:
    raise RuntimeError(os.fsdecode(b"\xff"))


async def test_g11_worker_acks_a_bad_text_in_the_same_batch_as_the_others(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    with worker_on_router(tmp_path, registry, concurrency=4, prefetch=0) as (worker, router):
        payload = encode_payload([], {})
        worker._on_jobs([wire.JobMessage("a", 11, "g11u.ok", payload, 1, 20, "default"),
                         wire.JobMessage("b", 12, "g11u.surrogate", payload, 1, 20, "default"),
                         wire.JobMessage("c", 13, "g11u.ok", payload, 1, 20, "default")])
        acks = await loop.run_in_executor(None, acks_received, router, 3)
        assert len(acks) == 1, "the three attempts ended in one loop iteration: one ACK frame"
        assert acks[0].succeeded == [("a", 11), ("c", 13)]
        assert [item._replace(traceback=None) for item in acks[0].ended] == [
            wire.AckItem("b", 12, "raised", "RuntimeError: \\xff")]
        assert acks[0].ended[0].traceback.endswith("RuntimeError: \\xff\n")  # its traceback is cleaned alike

        # an item whose text cannot be encoded at all is sent cleaned; its batch-mates go with it
        worker._ack("d", 14, "ok")
        worker._ack("e", 15, "raised", "no\udcffpe")
        worker._ack("f", 16, "ok")
        acks = await loop.run_in_executor(None, acks_received, router, 3)
        assert [a.succeeded for a in acks] == [[("d", 14), ("f", 16)]]
        assert acks[0].ended == [wire.AckItem("e", 15, "raised", "no\\xffpe")]


def test_g11_a_task_module_failing_with_a_hostile_exception_is_named_in_a_bounded_error(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    # user code at import: its exception's repr raises, its text runs to megabytes with surrogates
    (tmp_path / "g11_hostile.py").write_text(
        "class Hostile(Exception):\n"
        "    def __repr__(self):\n"
        "        raise SystemExit('not from repr')\n"
        "raise Hostile('\\udcff' + 'x' * 5_000_000)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError) as raised:
        load_registries(["g11_hostile"])
    message = str(raised.value)
    assert message.startswith("cannot import task module 'g11_hostile' (from tasks entry 'g11_hostile'): "
                              "Hostile: \\xffxxx")
    assert message.endswith("... (truncated)") and len(message) < wire.MAX_ERROR_CHARS + 100
