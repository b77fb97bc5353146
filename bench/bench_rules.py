"""What the rules in the lease cost the journal: a queue's rate, a task's concurrency and rate,
a task's circuit breaker, each against a journal with no rules at all.

Two fresh journals side by side on one backend: ``plain`` (no rule anywhere: every lease is
today's one statement) and ``rules`` (the rules below, set far above anything the run reaches,
so they never bind and the difference is their cost). Each round leases ``--batch`` jobs and
completes them, for each variant in turn (the order alternates each round):

* ``none``: the plain journal's queue.
* ``queue rate``: a queue with ``rate = "1000000000/s"`` (its bucket read, spent and written).
* ``task rules``: a queue whose jobs are of a task with ``concurrency=1000000, rate="1000000000/s"``
  (its own statement under its room, then the others' statement leaving it out).
* ``breaker``: a queue whose jobs are of a task with a closed circuit breaker (its state read in
  the lease; the completion's statement that closes a half-open breaker).
* ``bound task``: the documented cost of a rule that binds in a shared queue. The queue holds
  ``--backlog`` jobs of a task at its concurrency (1, held), ahead of the jobs leased: each
  lease's statement for the other tasks passes over that backlog.

Journals (``--journal``, may be given several times): ``sqlite`` (a fresh file, WAL, synchronous
FULL) or a ``postgresql://`` URL (a fresh schema, dropped afterwards). Figures vary on shared
machines: compare the variants of one run.

  python bench/bench_rules.py --journal sqlite --journal postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from actorq.ids import new_id  # noqa: E402
from bench_clauses import journal_at  # noqa: E402  (a fresh journal, removed after)
from actorq.journal.protocol import CircuitBreaker, NewJob, QueueLimits, TaskDefaults  # noqa: E402

PAYLOAD = b"\x92\x90\x80"
NEVER = "1000000000/s"  # a rate no run reaches: its bucket never binds
VARIANTS = {"none": ("plain", "free", "bench.noop"), "queue rate": ("rules", "rated", "bench.noop"),
            "task rules": ("rules", "tasked", "bench.ruled"), "breaker": ("rules", "guarded", "bench.guarded"),
            "bound task": ("rules", "shared", "bench.noop")}


def jobs(queue: str, task: str, n: int) -> list[NewJob]:
    return [NewJob(new_id(), queue, task, PAYLOAD) for _ in range(n)]


def lease_round(journal: Any, queue: str, batch: int) -> float:
    start = time.perf_counter()
    with journal.transaction():  # as a node's writer does: one group commit
        leased = journal.lease([queue], "bench/1/a", batch, 300.0)
    with journal.transaction():
        journal.complete([(j.id, j.lease_id) for j in leased])
    took = time.perf_counter() - start
    assert len(leased) == batch, (queue, len(leased))
    return took


def measure(where: str, args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        journals = {"plain": stack.enter_context(journal_at(where)), "rules": stack.enter_context(journal_at(where))}
        rules = journals["rules"]
        rules.declare_queues([QueueLimits("rated", rate=NEVER)])
        rules.declare_tasks([TaskDefaults("bench.ruled", "tasked", 0, 3, concurrency=1_000_000, rate=NEVER),
                             TaskDefaults("bench.guarded", "guarded", 0, 3, circuit_breaker=CircuitBreaker()),
                             TaskDefaults("bench.capped", "shared", 0, 3, concurrency=1)])
        for start in range(0, args.backlog + 1, 1000):  # the capped task's backlog, ahead in id order
            rules.enqueue(jobs("shared", "bench.capped", min(1000, args.backlog + 1 - start)))
        assert len(rules.lease(["shared"], "bench/8/y", 10, 3600.0)) == 1  # at its limit from now on
        for name, (journal, queue, task) in VARIANTS.items():
            journals[journal].enqueue(jobs(queue, task, args.batch * args.rounds))
            # other jobs held leased, as a node in service has them (what a concurrency counts)
            journals[journal].enqueue(jobs(f"held-{queue}", "bench.noop", args.in_flight))
            journals[journal].lease([f"held-{queue}"], "bench/9/z", args.in_flight, 3600.0)
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        order = list(VARIANTS)
        for i in range(args.rounds):
            for name in (order if i % 2 == 0 else order[::-1]):
                journal, queue, _task = VARIANTS[name]
                times[name].append(lease_round(journals[journal], queue, args.batch))
        us = {name: statistics.median(v) / args.batch * 1e6 for name, v in times.items()}
        label = "SQLite FULL" if where == "sqlite" else "PostgreSQL"
        print(f"{label}: lease + complete, a job ({args.batch} a lease, {args.in_flight} other jobs leased):")
        for name in VARIANTS:
            versus = "" if name == "none" else f"  {us[name] / us['none'] - 1:+.0%}"
            print(f"  {name:<11} {us[name]:7.1f} us{versus}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journal", action="append", metavar="sqlite|URL")
    parser.add_argument("--batch", type=int, default=64, help="jobs per lease (default 64)")
    parser.add_argument("--rounds", type=int, default=60, help="rounds per variant (default 60)")
    parser.add_argument("--in-flight", type=int, default=512, help="other jobs held leased (default 512)")
    parser.add_argument("--backlog", type=int, default=10_000,
                        help="jobs of the bound task waiting in the shared queue (default 10000)")
    args = parser.parse_args()
    for where in args.journal or ["sqlite"]:
        measure(where, args)


if __name__ == "__main__":
    main()
