"""End-to-end throughput of one node on SQLite: durable jobs/s, latency, jobs per commit.

A node runs embedded in this process (journal writer, dispatcher, scheduler)
with real worker processes. The producer `tell`s N no-op jobs while the
workers run. A job counts when its ``succeeded`` state is committed. Latency is
enqueue-to-ack: from the job id's creation time to the commit of its success
(``finished_at``), both read from the journal afterwards.

    python bench/bench_e2e.py --jobs 100000 --processes 2 --concurrency 256
    python bench/bench_e2e.py --jobs 50000 --rate 10000     # latency at a steady load

Figures vary ±20-40 % on shared machines: compare runs made together.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import actorq  # noqa: E402
from actorq._kernel.loop import new_event_loop  # noqa: E402
from actorq.ids import id_time  # noqa: E402
from actorq.node.config import parse_config  # noqa: E402
from stats import percentile  # noqa: E402


async def run(args: argparse.Namespace) -> dict[str, float]:
    """One measurement in a fresh temporary directory, removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="actorq-bench-"))
    try:
        return await _measure(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _measure(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    db = workdir / "bench.db"
    config = parse_config(
        {
            "node": {"name": "bench", "tasks": ["bench_tasks:registry"], "log_level": "warning"},
            "journal": {"url": f"sqlite:///{db}", "synchronous": args.synchronous},
            "workers": {"processes": args.processes, "concurrency": args.concurrency,
                        "prefetch": args.concurrency},
        },
        source="bench",
        path=HERE / "topology.toml",
    )
    task = "bench.noop_sync" if args.sync else "bench.noop"
    async with actorq.Node(config) as node:
        while node.progress().workers < args.processes:
            await asyncio.sleep(0.01)
        queue = node.queue("default")
        start = time.monotonic()
        commits0 = node.writer.stats.commits
        acked0 = node.writer.stats.jobs_acked
        sent = 0
        chunk = 1000 if not args.rate else max(1, args.rate // 200)  # paced: 200 chunks a second
        while sent < args.jobs:
            n = min(chunk, args.jobs - sent)
            for _ in range(n):
                queue.tell(actorq.Job(task))
            sent += n
            if args.rate:  # open loop at a fixed rate: latency without a flood's queueing
                await asyncio.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
            else:
                await asyncio.sleep(0)  # let the dispatcher and acks run while producing
            if args.progress and sent % 20000 == 0:
                print(f"  sent {sent:,}  succeeded {node.progress().succeeded:,}", file=sys.stderr)
        while node.writer.stats.jobs_acked - acked0 < args.jobs:  # successes committed so far
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - start
        commits = node.writer.stats.commits - commits0
    conn = sqlite3.connect(db)
    latencies = [(finished - id_time(job_id)) * 1000.0
                 for job_id, finished in conn.execute("SELECT id, finished_at FROM actorq_jobs")]
    conn.close()
    return {
        "jobs": args.jobs,
        "seconds": elapsed,
        "jobs_per_s": args.jobs / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "commits": commits,
        "jobs_per_commit": args.jobs / max(commits, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--synchronous", default="full", choices=["full", "normal", "extra"])
    parser.add_argument("--sync", action="store_true", help="use a sync task (thread pool) instead of an async one")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rate", type=int, default=0, help="send at this many jobs/s instead of all at once")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    print(f"actorq {actorq.__version__} | Python {platform.python_version()} | SQLite {sqlite3.sqlite_version} "
          f"| {os.cpu_count()} CPUs | synchronous={args.synchronous} | {args.processes} worker processes x "
          f"{args.concurrency} slots | {'sync' if args.sync else 'async'} no-op tasks | "
          f"{'paced at %d jobs/s' % args.rate if args.rate else 'all jobs told at once'}")
    for i in range(args.repeat):
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            r = runner.run(run(args))
        print(f"run {i + 1}: {r['jobs']:,} jobs in {r['seconds']:.2f} s = {r['jobs_per_s']:,.0f} durable jobs/s end to end | "
              f"enqueue-to-ack p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms | "
              f"{r['commits']:,} commits, {r['jobs_per_commit']:.1f} jobs per commit")


if __name__ == "__main__":
    main()
