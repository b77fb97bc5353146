"""What queue limits cost the journal: the lease of a queue with a concurrency limit, and
the enqueue of a queue with a max_depth, each against the same queue without the rule.

Rounds alternate the two variants in pairs on one journal (a queue ``free`` with no rule
beside ``limited`` with the rule set above anything the run reaches, so it never binds):

1. **lease**: ``--batch`` jobs leased and completed per round, ``--in-flight`` other
   jobs held leased meanwhile (what the limited lease counts: the journal's leases).
2. **enqueue**: ``--batch`` jobs inserted per round into a queue already ``--depth``
   deep (what the depth check counts).

Journals (``--journal``, may be given several times): ``sqlite`` (a fresh file, WAL,
synchronous FULL) or a ``postgresql://`` URL (a fresh schema, dropped afterwards).
Figures vary on shared machines: compare the two variants of one run.

  python bench/bench_queue_limits.py --journal sqlite --journal postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from actorq.ids import new_id  # noqa: E402
from bench_clauses import journal_at as journal_on  # noqa: E402  (a fresh journal, removed after)
from actorq.journal.protocol import NewJob, QueueLimits  # noqa: E402

PAYLOAD = b"\x92\x90\x80"




def jobs(queue: str, n: int) -> list[NewJob]:
    return [NewJob(new_id(), queue, "bench.noop", PAYLOAD) for _ in range(n)]


def lease_round(journal: Any, queue: str, batch: int) -> float:
    start = time.perf_counter()
    leased = journal.lease([queue], "bench/1/a", batch, 300.0)
    journal.complete([(j.id, j.lease_id) for j in leased])
    took = time.perf_counter() - start
    assert len(leased) == batch, (queue, len(leased))
    return took


def enqueue_round(journal: Any, queue: str, batch: int) -> float:
    rows = jobs(queue, batch)
    start = time.perf_counter()
    journal.enqueue(rows)
    return time.perf_counter() - start


def measure(where: str, args: argparse.Namespace) -> None:
    with journal_on(where) as journal:
        journal.declare_queues([QueueLimits("limited", concurrency=1_000_000),
                                QueueLimits("deep_limited", max_depth=1_000_000_000)])
        journal.enqueue(jobs("held", args.in_flight))
        assert len(journal.lease(["held"], "bench/9/z", args.in_flight, 3600.0)) == args.in_flight
        for queue in ("free", "limited"):
            journal.enqueue(jobs(queue, args.batch * args.rounds))
        for queue in ("deep_free", "deep_limited"):
            for _ in range(0, args.depth, 1000):
                journal.enqueue(jobs(queue, 1000))
        times: dict[str, list[float]] = {k: [] for k in ("free", "limited", "deep_free", "deep_limited")}
        for i in range(args.rounds):
            pair = ("free", "limited") if i % 2 == 0 else ("limited", "free")
            for queue in pair:
                times[queue].append(lease_round(journal, queue, args.batch))
            pair = ("deep_free", "deep_limited") if i % 2 == 0 else ("deep_limited", "deep_free")
            for queue in pair:
                times[queue].append(enqueue_round(journal, queue, args.batch))
        us = {k: statistics.median(v) / args.batch * 1e6 for k, v in times.items()}
        name = "SQLite FULL" if where == "sqlite" else "PostgreSQL"
        print(f"{name}: lease+complete {us['free']:.1f} us a job without a rule, {us['limited']:.1f} us with "
              f"concurrency ({args.in_flight} other jobs leased): {us['limited'] / us['free'] - 1:+.0%}")
        print(f"{name}: enqueue {us['deep_free']:.1f} us a job without a rule, {us['deep_limited']:.1f} us with "
              f"max_depth ({args.depth:,} waiting): {us['deep_limited'] / us['deep_free'] - 1:+.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journal", action="append", metavar="sqlite|URL")
    parser.add_argument("--batch", type=int, default=256, help="jobs per lease or enqueue (default 256)")
    parser.add_argument("--rounds", type=int, default=40, help="rounds per variant (default 40)")
    parser.add_argument("--in-flight", type=int, default=512, help="other jobs held leased (default 512)")
    parser.add_argument("--depth", type=int, default=10_000, help="waiting jobs before the enqueues (default 10000)")
    args = parser.parse_args()
    for where in args.journal or ["sqlite"]:
        measure(where, args)


if __name__ == "__main__":
    main()
