"""What flow control costs: end-to-end throughput with no rules, 10,000 distinct ordering
keys, one concurrency key with a limit of 10, 1,000 concurrency keys with a limit of 10 each,
the same keys on a task whose rate per key (``key_rate``) is far above the achieved rate, and a
queue rate limit set far above the achieved rate, on each journal in the same run.

Each rule is one `bench_e2e.run` (a node embedded in this process, real worker processes,
no-op jobs told all at once); rounds alternate the order of the rules. Printed: jobs/s
and the ratio to no keys on the same journal, median of ``--repeat`` runs.

examples:
  python bench/bench_keys.py --jobs 20000
  python bench/bench_keys.py --journal sqlite --journal postgresql://postgres@127.0.0.1:5432/postgres

A concurrency key with a limit of 10 runs at most 10 jobs at once whatever the slots: its
figure is bound by the limit (10 jobs per lease-run-ack cycle), not by the claim's cost.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_e2e  # noqa: E402
from actorq._kernel.loop import new_event_loop  # noqa: E402


QUEUE_RATE = "1000000/s"  # the "queue-rate" rule: a bucket that never runs dry at these rates
RULES = (*bench_e2e.KEY_RULES, "queue-rate")


def main() -> None:
    """Measure each journal under each rule and print the figures."""
    parser = bench_e2e.build_parser()
    parser.description = __doc__
    args = parser.parse_args()
    journals = list(dict.fromkeys(args.journal or [bench_e2e.SQLITE]))
    print(f"{args.jobs:,} no-op jobs per run | {args.processes} worker processes x {args.concurrency} slots | "
          f"SQLite synchronous={args.synchronous}")
    for journal in journals:
        print(bench_e2e.describe_journal(journal, args.synchronous, args.history))
    rates: dict[tuple[str, str], list[float]] = {}
    for i in range(args.repeat):
        rules = RULES if i % 2 == 0 else RULES[::-1]
        for journal in journals:
            for rule in rules:
                args.keys, args.queue_rate = (rule, "") if rule in bench_e2e.KEY_RULES else ("none", QUEUE_RATE)
                with asyncio.Runner(loop_factory=new_event_loop) as runner:
                    r = runner.run(bench_e2e.run(args, journal))
                rates.setdefault((journal, rule), []).append(r["jobs_per_s"])
                print(f"run {i + 1} [{bench_e2e.backend_name(journal)}, {rule}]: {r['jobs_per_s']:,.0f} "
                      f"jobs/s, p50 {r['p50_ms']:.1f} ms, {r['jobs_per_commit']:.1f} jobs per commit", flush=True)
    print(f"median of {args.repeat} run{'s' if args.repeat > 1 else ''} (ratio to no rules on the same journal):")
    for journal in journals:
        base = statistics.median(rates[(journal, "none")])
        for rule in RULES:
            rate = statistics.median(rates[(journal, rule)])
            print(f"  {bench_e2e.backend_name(journal):<10} {rule:<12} {rate:>9,.0f} jobs/s  {rate / base:.2f}x")


if __name__ == "__main__":
    main()
