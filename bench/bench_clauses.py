"""What two lifecycle checks cost the journal: the paused-queue clause of the lease, and the cancel poll.

1. **The paused-queue clause.** Every lease statement skips the queues listed in
   the paused-queue table (``AND queue NOT IN (SELECT queue FROM ...paused...)``).
   This measures lease + complete rounds of ``--batch`` jobs through a real
   journal with the statement as shipped against the same statement without the
   clause, alternating the two in pairs on the same journal, with an empty
   paused-queue table (the common case) and with ``--paused`` other queues paused.
2. **The cancel poll.** Once a second each dispatcher asks the journal which of
   the jobs its workers hold were cancelled (`Journal.cancelled`). This times
   that call for ``--held`` ids on a journal of ``--history`` finished jobs: its
   cost per second of a node's life is the time of one call.

Journals (``--journal``, may be given several times): ``sqlite`` (a fresh file,
WAL, synchronous FULL) or a ``postgresql://`` URL (a fresh schema, dropped
afterwards). Nothing is checked against a figure; figures vary on shared
machines, so compare the two variants of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from actorq.ids import new_id  # noqa: E402
from actorq.journal import open_journal  # noqa: E402
from actorq.journal import sqlite as sqlite_journal  # noqa: E402
from actorq.journal.protocol import NewJob  # noqa: E402

PAUSED_CLAUSE_SQLITE = "  AND queue NOT IN (SELECT queue FROM actorq_paused_queues)"
PAUSED_CLAUSE_PG = " AND queue NOT IN (SELECT queue FROM {paused})"

EPILOG = """\
examples:
  python bench/bench_clauses.py
  python bench/bench_clauses.py --journal sqlite --journal postgresql://postgres@127.0.0.1:5432/postgres
  python bench/bench_clauses.py --jobs 20000 --pairs 7 --held 2000
"""


@contextlib.contextmanager
def journal_at(spec: str) -> Iterator[Any]:
    """A fresh journal for `spec` (``sqlite`` or a PostgreSQL URL), removed afterwards."""
    if spec == "sqlite":
        with tempfile.TemporaryDirectory(prefix="actorq-clauses-") as tmp:
            journal = open_journal(f"sqlite:///{Path(tmp) / 'journal.db'}", synchronous="full")
            try:
                yield journal
            finally:
                journal.close()
        return
    import psycopg
    schema = f"bench_clauses_{secrets.token_hex(4)}"
    journal = open_journal(spec, schema=schema)
    try:
        yield journal
    finally:
        journal.close()
        with psycopg.connect(spec, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def without_clause(journal: Any) -> Callable[[], None]:
    """Make `journal` lease with statements lacking the paused-queue clause; returns the undo."""
    if hasattr(journal, "_sql"):  # PostgreSQL: statements per journal instance
        shipped = journal._sql
        lease = shipped.lease.replace(PAUSED_CLAUSE_PG.format(paused=_paused_table(shipped)), "")
        lease_queues = shipped.lease_queues.replace(PAUSED_CLAUSE_PG.format(paused=_paused_table(shipped)), "")
        if lease == shipped.lease or lease_queues == shipped.lease_queues:
            raise SystemExit("bench_clauses: the PostgreSQL lease statements no longer carry the clause measured here")
        journal._sql = dataclasses.replace(shipped, lease=lease, lease_queues=lease_queues)

        def undo_pg() -> None:
            journal._sql = shipped
        return undo_pg
    shipped_sql = sqlite_journal.SQL
    lease = shipped_sql.lease.replace(PAUSED_CLAUSE_SQLITE, "")
    if lease == shipped_sql.lease:
        raise SystemExit("bench_clauses: the SQLite lease statement no longer carries the clause measured here")
    sqlite_journal.SQL = dataclasses.replace(shipped_sql, lease=lease)

    def undo_sqlite() -> None:
        sqlite_journal.SQL = shipped_sql
    return undo_sqlite


def _paused_table(sql: Any) -> str:
    """The qualified paused-queue table name inside PostgreSQL statements."""
    start = sql.lease.index("SELECT queue FROM ") + len("SELECT queue FROM ")
    return str(sql.lease[start:sql.lease.index(")", start)])


def fill(journal: Any, count: int, queue: str = "default") -> None:
    """Enqueue `count` ready jobs in batches of 1,000."""
    for start in range(0, count, 1000):
        journal.enqueue([NewJob(new_id(), queue, "noop", b"\x90") for _ in range(min(1000, count - start))])


def drain(journal: Any, batch: int) -> tuple[float, int]:
    """Lease and complete every ready job of ``default`` in rounds of `batch`; (lease seconds, jobs)."""
    spent, done = 0.0, 0
    while True:
        started = time.perf_counter()
        leased = journal.lease(["default"], "bench-owner", batch, 30.0)
        spent += time.perf_counter() - started
        if not leased:
            return spent, done
        journal.complete([(job.id, job.lease_id) for job in leased])
        done += len(leased)


def measure_clause(journal: Any, args: argparse.Namespace, label: str) -> None:
    """Print lease µs per job with and without the clause, paired rounds."""
    shipped, bare = [], []
    for pair in range(args.pairs):
        order = ("shipped", "bare") if pair % 2 == 0 else ("bare", "shipped")
        for variant in order:
            fill(journal, args.jobs)
            undo = without_clause(journal) if variant == "bare" else (lambda: None)
            try:
                spent, done = drain(journal, args.batch)
            finally:
                undo()
            (shipped if variant == "shipped" else bare).append(spent / max(1, done) * 1e6)
    ratios = [s / b for s, b in zip(shipped, bare)]
    print(f"  {label:<34} lease µs/job: with clause {statistics.median(shipped):6.2f}"
          f"   without {statistics.median(bare):6.2f}   ratio by pair (median) {statistics.median(ratios):.3f}"
          f"   [{min(ratios):.3f}–{max(ratios):.3f}]")


def measure_cancel_poll(journal: Any, args: argparse.Namespace) -> None:
    """Print the time of one `cancelled` call for `--held` leased ids."""
    fill(journal, args.held, queue="held")
    held = [job.id for job in journal.lease(["held"], "bench-holder", args.held, 600.0)]
    for job_id in held[: max(1, len(held) // 100)]:  # 1 % of them cancelled
        journal.cancel(job_id)
    times = []
    for _ in range(args.polls):
        started = time.perf_counter()
        found = journal.cancelled(held)
        times.append(time.perf_counter() - started)
    print(f"  cancel poll, {len(held):,} held ids ({len(found)} cancelled): "
          f"{statistics.median(times) * 1e3:.2f} ms a call (median of {args.polls}),"
          f" once a second per node = {statistics.median(times) * 100:.3f} % of one core")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journal", action="append", help="sqlite (default) or a postgresql:// URL; repeatable")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs drained per round (default 10000)")
    parser.add_argument("--batch", type=int, default=64, help="jobs per lease (default 64, the writer's turn)")
    parser.add_argument("--pairs", type=int, default=5, help="paired rounds per case (default 5)")
    parser.add_argument("--paused", type=int, default=20, help="other queues paused in the second case (default 20)")
    parser.add_argument("--history", type=int, default=100_000, help="finished jobs before the cancel poll (default 100000)")
    parser.add_argument("--held", type=int, default=1_000, help="held job ids the cancel poll asks about (default 1000)")
    parser.add_argument("--polls", type=int, default=50, help="cancel poll calls timed (default 50)")
    args = parser.parse_args(argv)
    for name in ("jobs", "batch", "pairs", "held", "polls"):
        if not 1 <= getattr(args, name) <= 10_000_000:
            parser.error(f"--{name} must be between 1 and 10,000,000")
    if not 0 <= args.paused <= 10_000 or not 0 <= args.history <= 10_000_000:
        parser.error("--paused must be in [0, 10000] and --history in [0, 10000000]")
    for spec in args.journal or ["sqlite"]:
        name = "sqlite (FULL)" if spec == "sqlite" else "postgresql"
        print(f"{name}: {args.jobs:,} jobs a round, leases of {args.batch}, {args.pairs} pairs", flush=True)
        with journal_at(spec) as journal:
            fill(journal, args.history)
            drain(journal, 1000)  # history: finished jobs the statements walk past
            measure_clause(journal, args, "no queue paused")
            for index in range(args.paused):
                journal.pause_queue(f"other-{index}")
            measure_clause(journal, args, f"{args.paused} other queues paused")
            measure_cancel_poll(journal, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
