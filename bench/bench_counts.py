"""Queue figures at 10^6 jobs: what ``status`` and ``queues list`` cost to read, before and after
the journal kept its counts.

Fills a fresh journal with ``--jobs`` jobs (1,000,000 by default: 90 % succeeded, 10 % ready,
over four queues) by direct SQL inserts (not what is measured), then prints:

* the plan of the counts statement (SQLite's ``EXPLAIN QUERY PLAN``, PostgreSQL's ``EXPLAIN``);
* in-process reads, the median of ``--repeat``: ``counts()`` (today: the kept counts; an actorq
  before schema 14 / migration 016: a GROUP BY over every job), the same GROUP BY
  (``_scan_counts``, when the journal has it), ``queue_stats(60)`` and ``oldest_ready``;
* ``actorq status`` and ``actorq queues list``, the median wall time of ``--repeat`` runs as a
  user runs them (Python's start included).

``--root DIR`` runs the actorq of another checkout (an older one: the "before" figures); its
journal then has that version's schema. SQLite at ``synchronous=FULL``; PostgreSQL too with
``--pg-url`` (a throwaway schema, dropped at the end).

    python bench/bench_counts.py                                   # this checkout, SQLite
    python bench/bench_counts.py --root ../older --pg-url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

QUEUES = ("default", "emails", "reports", "images")
PAYLOAD = b"\x92\x92\x01\xa5hello\x80"


def _median(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _row(i: int, now: float) -> tuple[Any, ...]:
    ready = i % 10 == 0
    at = now - 86_400 + i * 0.01
    return (f"{i:016x}{'0' * 16}", QUEUES[(i // 7) % len(QUEUES)], "bench.task", PAYLOAD,
            "ready" if ready else "succeeded", at, 0 if ready else 1, 5, at, None if ready else at)


def fill_sqlite(open_journal: Callable[..., Any], path: Path, jobs: int) -> None:
    open_journal(f"sqlite:///{path}").close()  # the schema of the actorq under test
    conn = sqlite3.connect(path)
    now = time.time()
    with conn:  # with schema 14 the counts triggers run for each row, as they would in service
        conn.executemany(
            "INSERT INTO actorq_jobs (id, queue, task, payload, state, priority, run_at, attempts, max_attempts,"
            " created_at, finished_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)", (_row(i, now) for i in range(jobs)))
    conn.execute("ANALYZE")
    conn.close()


def fill_postgres(open_journal: Callable[..., Any], url: str, schema: str, jobs: int) -> None:
    import psycopg

    open_journal(url, schema=schema).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        queues = "ARRAY[" + ",".join(f"'{q}'" for q in QUEUES) + "]"
        conn.execute(
            "INSERT INTO actorq_jobs (id, queue, task, payload, state, priority, run_at, attempts, max_attempts,"
            " created_at, finished_at)"
            f" SELECT lpad(to_hex(i), 16, '0') || repeat('0', 16), ({queues})[mod(i / 7, 4) + 1], 'bench.task', %s,"
            " CASE WHEN mod(i, 10) = 0 THEN 'ready' ELSE 'succeeded' END, 0, now() - interval '1 day' + i * interval '10 ms',"
            " CASE WHEN mod(i, 10) = 0 THEN 0 ELSE 1 END, 5, now() - interval '1 day' + i * interval '10 ms',"
            " CASE WHEN mod(i, 10) = 0 THEN NULL ELSE now() - interval '1 day' + i * interval '10 ms' END"
            " FROM generate_series(0, %s) AS i", (PAYLOAD, jobs - 1))
        conn.execute("VACUUM ANALYZE actorq_jobs")  # as autovacuum leaves it: the visibility map set
        if conn.execute("SELECT to_regproc('actorq_fold_figures') IS NOT NULL").fetchone()[0]:
            conn.execute("SELECT actorq_fold_figures()")  # as a node's maintain leaves it


def plan(journal: Any) -> str:
    statement = journal._sql.counts if hasattr(journal, "_sql") else _sqlite_statements().counts
    if hasattr(journal, "_sql"):
        rows = journal._conn.execute("EXPLAIN " + statement).fetchall()
        return "\n    ".join(r[0] for r in rows)
    return "\n    ".join(r[3] for r in journal._conn.execute("EXPLAIN QUERY PLAN " + statement))


def _sqlite_statements() -> Any:
    from actorq.journal._sqlitesql import STATEMENTS

    return STATEMENTS


def measure(kind: str, url: str, schema: str, repeat: int, topology: Path, root: Path) -> None:
    from actorq.journal.backends import open_journal

    journal = open_journal(url, schema=schema, create=False)
    print(f"{kind}: the counts statement's plan\n    {plan(journal)}")
    reads: list[tuple[str, Callable[[], Any]]] = [("counts()", journal.counts)]
    if hasattr(journal, "_scan_counts"):
        reads.append(("GROUP BY over every job (_scan_counts, the old counts)", journal._scan_counts))
    if hasattr(journal, "queue_stats"):
        reads.append(("queue_stats(60)", lambda: journal.queue_stats(60)))
    reads.append(("oldest_ready()", journal.oldest_ready))
    print(f"{kind}: reads in-process (median of {repeat})")
    for name, fn in reads:
        print(f"  {name:<58} {_median(fn, repeat) * 1000:9.2f} ms")
    journal.close()
    print(f"{kind}: commands, wall time (median of {repeat}, Python's start included)")
    env = {**os.environ, "PYTHONPATH": str(root)}
    for name, argv in (("status", ["status"]), ("queues list", ["queues", "list"])):
        def run() -> None:
            done = subprocess.run([sys.executable, "-m", "actorq.node.cli", *argv, "--config", str(topology)],
                                  capture_output=True, text=True, env=env, cwd=root)
            assert done.returncode == 0, done.stderr
        print(f"  actorq {name:<51} {_median(run, repeat) * 1000:9.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg-url", default=None, help="also on PostgreSQL at this URL (a throwaway schema)")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the actorq checkout to measure (default: this one)")
    args = parser.parse_args()
    root = args.root.resolve()
    sys.path.insert(0, str(root))
    from actorq.journal.backends import open_journal

    print(f"actorq from {root} | {args.jobs:,} jobs: 90 % succeeded, 10 % ready, {len(QUEUES)} queues")
    work = Path(tempfile.mkdtemp(prefix="bench-counts-"))
    try:
        if not args.no_sqlite:
            path = work / "jobs.db"
            start = time.perf_counter()
            fill_sqlite(open_journal, path, args.jobs)
            print(f"sqlite: filled in {time.perf_counter() - start:.1f} s ({os.path.getsize(path) / 1e6:.0f} MB)")
            topology = work / "sqlite.toml"
            topology.write_text(f'[journal]\nurl = "sqlite:///{path}"\n')
            measure("sqlite", f"sqlite:///{path}", "actorq", args.repeat, topology, root)
        if args.pg_url:
            import psycopg

            schema = f"bench_counts_{os.getpid()}"
            start = time.perf_counter()
            try:
                fill_postgres(open_journal, args.pg_url, schema, args.jobs)
                print(f"postgres: filled in {time.perf_counter() - start:.1f} s")
                topology = work / "pg.toml"
                topology.write_text(f'[journal]\nurl = "{args.pg_url}"\nschema = "{schema}"\n')
                measure("postgres", args.pg_url, schema, args.repeat, topology, root)
            finally:
                with psycopg.connect(args.pg_url, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
