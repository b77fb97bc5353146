"""Crash recovery: time from a worker's SIGKILL until the jobs it was running run again.

A node runs embedded in this process (journal writer, dispatcher, scheduler)
with real worker processes, under a steady load of short jobs. Every task
appends its start and its end to an independent ledger (`actorq.testing.Ledger`,
one ``O_APPEND`` file). Every ``--interval`` seconds the script SIGKILLs a random
worker, ``--kills`` times, then drains the queue and reads the ledger back::

    kill ──▶ pool sees the death (pidfd) ──▶ reclaim committed ──▶ leased again ──▶ next attempt starts
    │◀──────────── kill-to-reclaim ───────────▶│
    │◀─────────────────────────── kill-to-rerun (per interrupted job) ─────────────────────▶│

For each kill, the *interrupted* jobs are those the victim had started and not
finished; for each, kill-to-rerun is the time from the kill to the start of the
job's next attempt. The script prints p50, p99 and max over all interrupted jobs,
kill-to-reclaim (from the dispatcher's reclaim callback), duplicates per kill
(jobs that ran to completion more than once, divided by kills: a job can finish
and die before its ack leaves), and totals. Prefetched jobs the victim held but
had not started are reclaimed too; they are not counted, since nothing of them ran.

``--pause`` SIGSTOPs the victim instead, for ``--pause-for`` seconds (by default the
heartbeat timeout plus 1 s), then SIGCONTs it: the dispatcher must notice the
silence, so the figure is pause-to-rerun and includes the heartbeat timeout. The
resumed worker's late acks are fenced; its jobs also finish there, so pauses make
duplicates.

    python bench/bench_recovery.py                                  # 20 kills, 1 s apart
    python bench/bench_recovery.py --kills 50 --rate 500 --task-ms 20
    python bench/bench_recovery.py --processes 1                    # every kill leaves no worker
    python bench/bench_recovery.py --pause --kills 10               # heartbeat 0.1 s, timeout 1.5 s

Timestamps are wall-clock (``time.time()``) in this process and in the workers,
so they share one clock. Figures vary ±20-40 % on shared machines: compare runs
made together.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import actorq  # noqa: E402
from actorq._kernel.loop import new_event_loop  # noqa: E402
from actorq.node.config import parse_config  # noqa: E402
from actorq.testing import Ledger, LedgerEntry, check_total_queue  # noqa: E402
from stats import percentile  # noqa: E402

TASKS = '''\
"""Tasks of bench_recovery.py: record the start and the end of every attempt."""
import asyncio

from actorq import TaskRegistry, current_job
from actorq.testing import Ledger

registry = TaskRegistry()
ledger = Ledger({ledger!r})


@registry.task("recovery.work")
async def work(ms):
    ctx = current_job()
    ledger.record(ctx.id, ctx.attempt, tag="start")
    await asyncio.sleep(ms / 1000)
    ledger.record(ctx.id, ctx.attempt, tag="end")
'''

PAUSE_HEARTBEAT = (0.1, 1.5)  # interval, timeout: what --pause uses unless told otherwise


@dataclass
class Fault:
    """One SIGKILL or pause of a worker process."""

    pid: int
    at: float  # time.time() just before the signal
    resumed: float | None = None  # --pause: when SIGCONT went out


@dataclass
class Run:
    """What one measurement saw, for `analyse`."""

    settings: str
    faults: list[Fault]
    entries: list[LedgerEntry]
    reclaims: list[tuple[float, int, int]]  # (time, pid of the owner, jobs returned to ready)
    accepted: set[str]
    succeeded: set[str]
    seconds: float
    restarts: int
    lost_workers: int
    stale_acks: int
    stop_seconds: float
    unrerun: list[str] = field(default_factory=list)


async def run(args: argparse.Namespace) -> Run:
    """One measurement in a fresh temporary directory, removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="actorq-bench-recovery-"))
    try:
        return await _measure(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _config(args: argparse.Namespace, workdir: Path, ledger: Ledger) -> actorq.Config:
    (workdir / "recovery_tasks.py").write_text(TASKS.format(ledger=str(ledger.path)))
    heartbeat = {"heartbeat_interval": args.heartbeat_interval, "heartbeat_timeout": args.heartbeat_timeout}
    return parse_config(
        {
            "node": {"name": "bench", "tasks": ["recovery_tasks"], "log_level": args.log_level},
            "journal": {"url": f"sqlite:///{workdir / 'bench.db'}", "synchronous": args.synchronous},
            "workers": {"processes": args.processes, "concurrency": args.concurrency, "prefetch": args.prefetch,
                        "intensity": args.kills + 10, "period": 60.0,
                        **{k: v for k, v in heartbeat.items() if v is not None}},
        },
        source="bench_recovery",
        path=workdir / "topology.toml",  # tasks are found next to it
    )


async def _producer(node: actorq.Node, args: argparse.Namespace, accepted: set[str], stop: asyncio.Event) -> None:
    """Durable enqueues at ``--rate`` jobs/s, in twentieths of a second (open loop)."""
    tick = 0.05
    per_tick = max(1, round(args.rate * tick))
    queue = node.queue()
    start = time.monotonic()
    ticks = 0
    while not stop.is_set():
        jobs = [actorq.Job("recovery.work", [args.task_ms]) for _ in range(per_tick)]
        accepted.update(await queue.enqueue_many(jobs))
        ticks += 1
        await asyncio.sleep(max(0.0, start + ticks * tick - time.monotonic()))


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout:g} s: {what}")
        await asyncio.sleep(0.01)


async def _measure(args: argparse.Namespace, workdir: Path) -> Run:
    ledger = Ledger(workdir / "ledger.txt")
    config = _config(args, workdir, ledger)
    rng = random.Random(args.seed)
    faults: list[Fault] = []
    reclaims: list[tuple[float, int, int]] = []
    accepted: set[str] = set()
    hb = config.workers
    pause_for = args.pause_for if args.pause_for is not None else hb.heartbeat_timeout + 1.0
    settings = (f"heartbeat interval {hb.heartbeat_interval:g} s, heartbeat timeout {hb.heartbeat_timeout:g} s, "
                f"lease timeout {config.dispatcher.lease_timeout:g} s")
    node = actorq.Node(config)
    await node.start()
    try:
        assert node.runtime.dispatcher is not None and node.runtime.writer is not None

        def reclaimed(owner: str, count: int) -> None:  # runs on this loop when the reclaim is committed
            reclaims.append((time.time(), int(owner.split("/")[1]), count))

        node.runtime.dispatcher.on_reclaimed = reclaimed
        dispatcher = node.runtime.dispatcher

        def all_up() -> bool:
            return len(node.worker_pids()) == args.processes and dispatcher.worker_count == args.processes

        await _until(all_up, 30, "workers up")
        stop = asyncio.Event()
        producer = asyncio.create_task(_producer(node, args, accepted, stop))
        began = time.monotonic()
        try:
            for k in range(args.kills):
                await asyncio.sleep(args.interval)
                if producer.done():
                    producer.result()  # an enqueue failed: report it
                await _until(all_up, 30, "every worker up and registered")
                victim = rng.choice(sorted(node.worker_pids()))
                fault = Fault(victim, time.time())
                if args.pause:
                    os.kill(victim, signal.SIGSTOP)
                    try:
                        await asyncio.sleep(pause_for)
                    finally:
                        os.kill(victim, signal.SIGCONT)
                        fault.resumed = time.time()
                else:
                    os.kill(victim, signal.SIGKILL)
                faults.append(fault)
                print(f"  {'pause' if args.pause else 'kill'} {k + 1}/{args.kills}: pid {victim}; "
                      f"{node.progress().succeeded:,} jobs done so far", file=sys.stderr)
            await asyncio.sleep(args.interval)  # the last victim's jobs rerun under load too
        finally:
            stop.set()
            await asyncio.gather(producer, return_exceptions=True)
        print(f"  draining {len(accepted):,} jobs ...", file=sys.stderr)
        try:
            counts = await node.wait_idle(timeout=args.drain_timeout)
        except TimeoutError as exc:  # report what is stuck, then measure what did run
            counts = await node.counts()
            print(f"  DRAIN FAILED: {exc}; {_leased_by_owner(workdir / 'bench.db', node)}", file=sys.stderr)
        seconds = time.monotonic() - began
        restarts, lost = node.runtime.worker_restarts, dispatcher.stats.lost_workers
        stale = node.runtime.writer.stats.stale_acks
        dispatcher.on_reclaimed = None
    finally:
        stopping = time.monotonic()
        await node.stop()
    stop_seconds = time.monotonic() - stopping
    if counts.get("default", {}).keys() - {"succeeded"}:
        print(f"  journal counts after the drain: {counts}", file=sys.stderr)
    conn = sqlite3.connect(workdir / "bench.db")
    succeeded = {row[0] for row in conn.execute("SELECT id FROM actorq_jobs WHERE state = 'succeeded'")}
    conn.close()
    return Run(settings, faults, ledger.read(), reclaims, accepted, succeeded, seconds,
               restarts, lost, stale, stop_seconds)


def _leased_by_owner(db: Path, node: actorq.Node) -> str:
    """The jobs still leased, by owner, and whether each owner's process is still running."""
    conn = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT lease_owner, count(*) FROM actorq_jobs WHERE state = 'leased'"
                            " GROUP BY lease_owner").fetchall()
    finally:
        conn.close()
    pids = node.worker_pids()

    def process(owner: str) -> str:
        return "a running worker" if int(owner.split("/")[1]) in pids else "gone"

    return "; ".join(f"{n} jobs leased by {owner} ({process(owner)})" for owner, n in rows) or "no job leased"


def analyse(run: Run) -> dict[str, float]:
    """Per fault: the victim's interrupted jobs and when each ran again; then the totals."""
    starts: dict[str, list[LedgerEntry]] = defaultdict(list)
    ended: dict[tuple[str, int], float] = {}
    completions: Counter[str] = Counter()
    for e in run.entries:
        if e.tag == "start":
            starts[e.job_id].append(e)
        else:
            ended[(e.job_id, e.attempt)] = e.at
            completions[e.job_id] += 1
    rerun_ms: list[float] = []
    per_fault: list[int] = []
    for fault in run.faults:
        interrupted = 0
        for job_id, job_starts in starts.items():
            for s in job_starts:
                if s.pid != fault.pid or s.at > fault.at or ended.get((job_id, s.attempt), float("inf")) <= fault.at:
                    continue
                later = [t.at for t in job_starts if t.attempt > s.attempt]
                if any(t <= fault.at for t in later):
                    continue  # interrupted by an earlier pause of this worker, and already run again
                interrupted += 1
                if later:
                    rerun_ms.append((min(later) - fault.at) * 1000.0)
                else:
                    run.unrerun.append(job_id)
        per_fault.append(interrupted)
    reclaim_ms = []
    for fault in run.faults:
        after = [t for t, pid, _ in run.reclaims if pid == fault.pid and t >= fault.at]
        if after:
            reclaim_ms.append((min(after) - fault.at) * 1000.0)
    duplicated = {job_id: n for job_id, n in completions.items() if n > 1}
    check = check_total_queue(run.accepted, [e for e in run.entries if e.tag == "end"], run.succeeded)
    faults = max(1, len(run.faults))
    return {
        "faults": len(run.faults),
        "interrupted": len(rerun_ms) + len(run.unrerun),
        "interrupted_max": max(per_fault, default=0),
        "rerun_p50": percentile(rerun_ms, 50) if rerun_ms else float("nan"),
        "rerun_p99": percentile(rerun_ms, 99) if rerun_ms else float("nan"),
        "rerun_max": max(rerun_ms, default=float("nan")),
        "reclaim_p50": percentile(reclaim_ms, 50) if reclaim_ms else float("nan"),
        "reclaim_max": max(reclaim_ms, default=float("nan")),
        "reclaimed": sum(n for _, _, n in run.reclaims),
        "duplicated": len(duplicated),
        "dup_per_fault": len(duplicated) / faults,
        "jobs": len(run.accepted),
        "runs": check.runs,
        "valid": check.valid,
        "summary": check.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="faults to inject (default 20)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds of load before each fault, and after the last (default 1.0)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="job slots per worker process (default 8)")
    parser.add_argument("--prefetch", type=int, default=8, help="jobs buffered per worker beyond its slots (default 8)")
    parser.add_argument("--rate", type=int, default=200, help="jobs enqueued per second, durably (default 200)")
    parser.add_argument("--task-ms", type=float, default=50.0, help="each job sleeps this long (default 50)")
    parser.add_argument("--seed", type=int, default=None, help="victim choice (default: random, printed)")
    parser.add_argument("--pause", action="store_true",
                        help="SIGSTOP the victim for --pause-for seconds, then SIGCONT it, instead of SIGKILL")
    parser.add_argument("--pause-for", type=float, default=None,
                        help="seconds a paused worker stays stopped (default: heartbeat timeout + 1)")
    parser.add_argument("--heartbeat-interval", type=float, default=None,
                        help=f"workers.heartbeat_interval (default: the topology default; with --pause, "
                             f"{PAUSE_HEARTBEAT[0]:g})")
    parser.add_argument("--heartbeat-timeout", type=float, default=None,
                        help=f"workers.heartbeat_timeout (default: the topology default; with --pause, "
                             f"{PAUSE_HEARTBEAT[1]:g})")
    parser.add_argument("--synchronous", default="full", choices=["full", "normal", "extra"])
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="seconds allowed to drain (default 120)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="show the node's and the workers' warnings")
    args = parser.parse_args()
    if args.pause:
        if args.heartbeat_interval is None and args.heartbeat_timeout is None:
            args.heartbeat_interval, args.heartbeat_timeout = PAUSE_HEARTBEAT
    args.log_level = "warning" if args.verbose else "error"
    logging.getLogger("actorq").setLevel(logging.WARNING if args.verbose else logging.ERROR)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    capacity = args.processes * args.concurrency * 1000.0 / args.task_ms
    print(f"actorq {actorq.__version__} | Python {platform.python_version()} | SQLite {sqlite3.sqlite_version} "
          f"| {os.cpu_count()} CPUs | synchronous={args.synchronous} | {args.processes} worker processes x "
          f"{args.concurrency} slots, prefetch {args.prefetch} | {args.rate} jobs/s of {args.task_ms:g} ms "
          f"({args.rate / capacity:.0%} of the slots) | {args.kills} {'pauses' if args.pause else 'SIGKILLs'}, "
          f"{args.interval:g} s apart | seed {args.seed}")
    for i in range(args.repeat):
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            result = runner.run(run(args))
        if i == 0:
            pause = f", paused {result.faults[0].resumed - result.faults[0].at:.1f} s each" if (
                args.pause and result.faults) else ""
            print(f"settings: {result.settings}{pause}")
        r = analyse(result)
        what = "pause" if args.pause else "kill"
        print(f"run {i + 1}: {r['faults']} {what}s interrupted {r['interrupted']} running jobs "
              f"(at most {r['interrupted_max']} per {what}) | {what}-to-rerun p50 {r['rerun_p50']:.0f} ms, "
              f"p99 {r['rerun_p99']:.0f} ms, max {r['rerun_max']:.0f} ms | {what}-to-reclaim p50 "
              f"{r['reclaim_p50']:.0f} ms, max {r['reclaim_max']:.0f} ms ({r['reclaimed']} jobs reclaimed) | "
              f"duplicates {r['duplicated']} ({r['dup_per_fault']:.2f} per {what}) | "
              f"{r['jobs']:,} jobs, {r['runs']:,} completions in {result.seconds:.1f} s | "
              f"{result.restarts} worker restarts, {result.lost_workers} workers lost, "
              f"{result.stale_acks} stale acks | node stop {result.stop_seconds:.1f} s")
        if result.unrerun:
            print(f"  {len(result.unrerun)} interrupted jobs never ran again: {sorted(set(result.unrerun))[:5]}")
        if not r["valid"]:
            print(f"  {r['summary']}")


if __name__ == "__main__":
    main()
