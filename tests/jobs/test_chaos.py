"""Random-kill soak (ACCEPTANCE C14): Jepsen's ``:kill`` and ``:pause`` nemesis on worker processes.

A producer enqueues durable jobs at a steady rate into a node embedded in the
test process, while a nemesis, every 1 to 5 seconds, picks a random worker
process and either SIGKILLs it or SIGSTOPs it for a while and then SIGCONTs it.
Pauses are drawn on both sides of the heartbeat timeout: a short one only
delays the worker; a long one makes the dispatcher declare it lost, hand its
jobs to others and fence its late acks. Then the faults stop, the queue
drains, and the run is judged as every chaos test is::

    producer ── enqueue_many (durable) ──▶ node ──▶ worker processes ──▶ ledger
    nemesis ─── SIGKILL | SIGSTOP … SIGCONT ──────▶ a random worker
    after the drain: total-queue check, journal invariants, every journal error is a
    crash or a pause, workers back to the topology size, node RSS bounded, no leftovers

The dispatcher, journal writer and scheduler live in the test process, so the
actor processes the nemesis can hit are the workers.

Run it (about a minute by default). The seed is printed; ``ACTORQ_SEED`` replays the
nemesis's choices and the producer's jobs, though not the processes' timing::

    pytest -m chaos tests/jobs/test_chaos.py -s
    ACTORQ_CHAOS_SECONDS=1200 pytest -m chaos tests/jobs/test_chaos.py -s   # a 20-minute soak
    ACTORQ_CHAOS_RATE=500 ...                                               # jobs/s (default 200)
    ACTORQ_CHAOS_FAULTS=kill ...                                            # only kills (or only pause)

Nothing here asserts a timing: the run's figures are printed, and waits are
bounded polls under the pytest timeout, which grows with ``ACTORQ_CHAOS_SECONDS``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from actorq import Job, Node
from actorq.testing import Ledger, check_total_queue, eventually, job_history, journal_invariants, live_children

SOAK_SECONDS = float(os.environ.get("ACTORQ_CHAOS_SECONDS", "60"))
SOAK_RATE = int(os.environ.get("ACTORQ_CHAOS_RATE", "200"))
SOAK_FAULTS = frozenset(os.environ.get("ACTORQ_CHAOS_FAULTS", "kill,pause").replace(" ", "").split(","))

PROCESSES = 2
HEARTBEAT_INTERVAL = 0.1
HEARTBEAT_TIMEOUT = 1.5
DRAIN_TIMEOUT = 120.0

TASKS = """
import time

started = Ledger(str(ledger.path) + ".started")


def _started():
    ctx = current_job()
    started.record(ctx.id, ctx.attempt, os.getpid(), incarnation())


@registry.task("chaos.async")
async def work_async(ms):
    _started()
    await asyncio.sleep(ms / 1000)
    record()


@registry.task("chaos.sync")
def work_sync(ms):
    _started()  # a sync job's thread cannot be cancelled: after a pause it runs on, and its ack is fenced
    time.sleep(ms / 1000)
    record()
"""

WORKER_DIED_KILLED = "worker died (killed)"
WORKER_UNRESPONSIVE = "worker unresponsive"


@dataclass
class FaultLog:
    """What the nemesis did: one entry per fault, for the printed summary."""

    kills: list[int] = field(default_factory=list)
    pauses: list[tuple[int, float]] = field(default_factory=list)
    missed: int = 0  # the victim was already gone when the signal went out

    def describe(self) -> str:
        long = sum(1 for _, seconds in self.pauses if seconds > HEARTBEAT_TIMEOUT)
        return (f"{len(self.kills)} kills, {len(self.pauses)} pauses ({long} longer than the "
                f"{HEARTBEAT_TIMEOUT:g} s heartbeat timeout), {self.missed} signals to a worker already gone")


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


async def _producer(node: Node, rng: random.Random, until: float, rate: int,
                    accepted: set[str], attempted: set[str]) -> None:
    """Enqueue `rate` jobs/s in tenths of a second, durably, until `until` (open loop)."""
    tick = 0.1
    per_tick = max(1, round(rate * tick))
    queue = node.queue()
    start = time.monotonic()
    ticks = 0
    while time.monotonic() < until:
        jobs = [Job("chaos.sync" if rng.random() < 0.2 else "chaos.async", [rng.randint(5, 50)])
                for _ in range(per_tick)]
        try:
            accepted.update(await queue.enqueue_many(jobs))
        except Exception as exc:  # an unknown outcome: allowed, and counted as "recovered" if it ran
            print(f"enqueue of {len(jobs)} jobs failed: {exc!r}")
            attempted.update(job.id for job in jobs)
        ticks += 1
        await asyncio.sleep(max(0.0, start + ticks * tick - time.monotonic()))


async def _nemesis(node: Node, rng: random.Random, until: float, gap: tuple[float, float],
                   kinds: list[str], faults: FaultLog) -> None:
    """Until `until`: wait `gap` seconds, then SIGKILL or pause (one of `kinds`) a random worker."""
    while True:
        await asyncio.sleep(rng.uniform(*gap))  # fault timing, not a wait for an outcome
        if time.monotonic() >= until:
            return
        pids = sorted(node.worker_pids())
        if not pids:
            continue
        victim = rng.choice(pids)
        assert psutil.Process(victim).ppid() == os.getpid(), "the nemesis hits only this node's workers"
        if rng.choice(kinds) == "kill":
            try:
                os.kill(victim, signal.SIGKILL)
                faults.kills.append(victim)
            except ProcessLookupError:
                faults.missed += 1
            continue
        # short pauses only delay the worker; long ones make it lost and fence its late acks
        pause = rng.uniform(0.2, 2.0 * HEARTBEAT_TIMEOUT)
        try:
            os.kill(victim, signal.SIGSTOP)
        except ProcessLookupError:
            faults.missed += 1
            continue
        try:
            await asyncio.sleep(pause)
        finally:
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
        faults.pauses.append((victim, pause))


def _stuck(topo, node: Node) -> str:
    """Why a drain did not finish: the jobs still leased, by owner, and what the node knows of each."""
    conn = sqlite3.connect(topo.journal_path.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT lease_owner, count(*), min(id) FROM actorq_jobs WHERE state = 'leased'"
                            " GROUP BY lease_owner").fetchall()
    finally:
        conn.close()
    pids = node.worker_pids()
    owners = "; ".join(
        f"{n} leased by {owner} (its process is {'a running worker' if int(owner.split('/')[1]) in pids else 'gone'};"
        f" e.g. job {example})" for owner, n, example in rows)
    return (f"{owners or 'no job leased'}; the dispatcher has {node.runtime.dispatcher.worker_count} workers registered "
            f"holding {node.runtime.dispatcher.in_flight} jobs")


async def _soak(topology, rng: random.Random, seconds: float, rate: int, gap: tuple[float, float],
                kinds: list[str]) -> None:
    topo = topology(TASKS, processes=PROCESSES, concurrency=8, prefetch=8, intensity=1000, period=60.0,
                    heartbeat_interval=HEARTBEAT_INTERVAL, heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    log_level="warning")
    started = Ledger(str(topo.ledger.path) + ".started")
    accepted: set[str] = set()
    attempted: set[str] = set()
    faults = FaultLog()
    print(f"C14 soak: {seconds:g} s of faults, {rate} jobs/s, {PROCESSES} worker processes x 8 slots, "
          f"heartbeat {HEARTBEAT_INTERVAL:g} s / timeout {HEARTBEAT_TIMEOUT:g} s, "
          f"lease timeout {topo.config.dispatcher.lease_timeout:g} s, a fault ({' or '.join(kinds)}) every "
          f"{gap[0]:g}-{gap[1]:g} s")
    async with Node(topo.config) as node:
        await eventually(lambda: node.runtime.dispatcher.worker_count == PROCESSES, timeout=30, message="workers up")
        rss_start = _rss_mb()
        began = time.monotonic()
        until = began + seconds
        # one stream each: the two tasks interleave by timing, but each one's draws replay from the seed
        producer_rng, nemesis_rng = random.Random(rng.getrandbits(64)), random.Random(rng.getrandbits(64))
        producer = asyncio.create_task(_producer(node, producer_rng, until, rate, accepted, attempted))
        nemesis = asyncio.create_task(_nemesis(node, nemesis_rng, until, gap, kinds, faults))
        try:
            await asyncio.gather(producer, nemesis)
        finally:
            for task in (producer, nemesis):
                task.cancel()
            await asyncio.gather(producer, nemesis, return_exceptions=True)
        print(f"faults: {faults.describe()}")
        print(f"pauses (s): {[round(seconds, 1) for _, seconds in faults.pauses]}")
        assert node.failure is None, node.failure
        try:
            counts = await node.wait_idle(timeout=DRAIN_TIMEOUT)
        except TimeoutError as exc:
            raise AssertionError(f"the queue did not drain: {exc}; {_stuck(topo, node)}") from None
        drained = time.monotonic() - began
        await eventually(lambda: len(node.worker_pids()) == PROCESSES and node.runtime.dispatcher.worker_count == PROCESSES,
                         timeout=30, message=f"{PROCESSES} workers running and registered again")
        children = live_children()
        in_flight = node.runtime.dispatcher.in_flight  # jobs the dispatcher believes workers hold: 0 when idle
        gc.collect()
        rss_end = _rss_mb()
        stats = node.runtime.dispatcher.stats  # read before the stop, whose worker exits are counted too
        seen = (f"dispatcher: {stats.reclaimed} jobs reclaimed in {stats.reclaim_events} reclaims, "
                f"{stats.lost_workers} workers lost (heartbeat), {stats.rejoined} rejoined; "
                f"{node.runtime.worker_restarts} worker restarts; {stats.unroutable} unroutable sends; "
                f"{sum(stats.malformed.values())} malformed frames; {in_flight} jobs held by workers after the drain")
        stale_acks = node.runtime.writer.stats.stale_acks
        assert node.failure is None, node.failure
        last_workers = list(node.runtime.worker_processes())
        stopping = time.monotonic()
    stop_seconds = time.monotonic() - stopping
    exits = Counter(str(child.exited.result()) for child in last_workers)
    print(f"node stop took {stop_seconds:.1f} s; worker exits at stop: {dict(exits)}")
    print(f"{seen}; {stale_acks} stale acks fenced")
    # a drained worker holds nothing and stops when asked (not killed at shutdown_timeout)
    assert in_flight == 0, seen
    assert set(exits) <= {"normal", "shutdown"}, exits
    runs = topo.ledger.read()
    starts = started.read()
    finished = {(e.job_id, e.attempt) for e in runs}
    interrupted = sum(1 for e in starts if (e.job_id, e.attempt) not in finished)
    print(f"{len(accepted)} jobs accepted, {len(attempted)} of unknown outcome; {len(starts)} starts, "
          f"{interrupted} never finished (killed or cancelled); faults and drain took {drained:.1f} s")
    print(f"node RSS {rss_start:.1f} MB at start, {rss_end:.1f} MB at the end")

    check = check_total_queue(accepted, runs, {j for j, s in topo.states().items() if s == "succeeded"},
                              attempted=attempted)
    print(check.summary())
    print(f"duplicates: {len(check.duplicated)} jobs ran more than once ({check.extra_runs} extra runs); "
          f"stale acks: {stale_acks}")
    assert check.valid, check.summary()
    assert counts == {"default": {"succeeded": len(accepted) + len(check.recovered)}}, counts
    problems = journal_invariants(topo.journal_path)
    assert problems == [], problems
    # each failed attempt is a crash or a pause, recorded with its reason, and counted once
    reasons: Counter[str] = Counter()
    for job_id, (state, attempts, errors) in job_history(topo.journal_path).items():
        assert state == "succeeded" and attempts == len(errors) + 1, (job_id, state, attempts, errors)
        for error in errors:
            reason = error.split(" (no heartbeat")[0]
            assert reason in (WORKER_DIED_KILLED, WORKER_UNRESPONSIVE), (job_id, errors)
            reasons[reason] += 1
    print(f"journal errors by reason: {dict(reasons)}")
    assert len(children) == PROCESSES, [c.pid for c in children]
    assert rss_end < 2 * rss_start + 50, f"node RSS grew from {rss_start:.1f} MB to {rss_end:.1f} MB"
    await eventually(lambda: not live_children(), timeout=10, message="no worker process left after stop")


# -- C14 -------------------------------------------------------------------------------------
@pytest.mark.chaos
@pytest.mark.timeout(SOAK_SECONDS + DRAIN_TIMEOUT + 120)
async def test_c14_random_kill_and_pause_soak(topology, rng):
    kinds = sorted(SOAK_FAULTS)
    assert kinds and set(kinds) <= {"kill", "pause"}, f"ACTORQ_CHAOS_FAULTS: expected kill, pause or both, got {kinds}"
    await _soak(topology, rng, SOAK_SECONDS, SOAK_RATE, gap=(1.0, 5.0), kinds=kinds)



@pytest.mark.timeout(120)
async def test_c14_ci_sized_kills_and_pauses(topology, rng):
    # the soak's CI tier: a few seconds of SIGKILLs and SIGSTOPs under load, every check of the soak
    await _soak(topology, rng, 5.0, 200, gap=(0.5, 1.5), kinds=["kill", "pause"])
