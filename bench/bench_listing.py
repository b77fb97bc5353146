"""The operator's reads on a large journal: do ``status``, ``queues list`` and ``jobs list|show``
stay fast at 10^6 jobs?

Fills a fresh journal with ``--jobs`` jobs (1,000,000 by default) spread over four
queues and every state, as a journal that has run for a while looks (70 % succeeded,
15 % ready, 5 % dead, 5 % scheduled, 3 % failed, 2 % cancelled), then times:

* the journal's reads in this process (best of ``--repeat``): ``counts`` (what
  ``status`` and ``queues list`` read: the counts the journal keeps); ``oldest_ready``,
  ``list_jobs`` (first page, a page from a cursor half-way through, a state across
  queues, a state of one queue) and ``inspect``;
* the commands as a user runs them, once each, wall time including Python's start
  (about 0.3 s of it): ``status``, ``queues list``, ``jobs list`` (first and a later
  page), ``jobs show``.

SQLite at ``synchronous=FULL`` (the default); PostgreSQL too when ``--pg-url`` is
given (a throwaway schema, dropped at the end). The fill writes rows straight
into the table in one transaction: it is not what is measured.

    python bench/bench_listing.py                    # SQLite, 10^6 jobs
    python bench/bench_listing.py --pg-url postgresql://postgres@/postgres
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from actorq.journal.backends import open_journal  # noqa: E402
from actorq.journal.protocol import JobState  # noqa: E402

QUEUES = ("default", "emails", "reports", "images")
# per 100 jobs
MIX = ["succeeded"] * 70 + ["ready"] * 15 + ["dead"] * 5 + ["scheduled"] * 5 + ["failed"] * 3 + ["cancelled"] * 2
FINAL = {"succeeded", "dead", "failed", "cancelled"}
PAYLOAD = b"\x92\x92\x01\xa5hello\x80"


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def _row(i: int, now: float) -> tuple[Any, ...]:
    state = MIX[i % 100]
    queue = QUEUES[(i // 7) % len(QUEUES)]
    finished = now - 86_400 + i * 0.01 if state in FINAL else None
    run_at = now + 3_600 if state == "scheduled" else now - 86_400 + i * 0.01
    error = "ValueError: boom" if state in ("dead", "failed") else None
    attempts = 0 if state in ("ready", "scheduled") else 1
    return (f"{i:016x}{'0' * 16}", queue, f"bench.task{i % 3}", PAYLOAD, state, 0, run_at, attempts, 5,
            now - 86_400 + i * 0.01, finished, error)


def fill_sqlite(path: Path, jobs: int) -> None:
    open_journal(f"sqlite:///{path}").close()  # the schema, at its current version
    conn = sqlite3.connect(path)
    now = time.time()
    with conn:
        conn.executemany(
            "INSERT INTO actorq_jobs (id, queue, task, payload, state, priority, run_at, attempts, max_attempts,"
            " created_at, finished_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_row(i, now) for i in range(jobs)))
        conn.executemany("INSERT INTO actorq_errors (job_id, attempt, at, error) VALUES (?, 1, ?, ?)",
                         ((f"{i:016x}{'0' * 16}", now, "ValueError: boom") for i in range(jobs)
                          if MIX[i % 100] in ("dead", "failed")))
    conn.execute("ANALYZE")
    conn.close()


def fill_postgres(url: str, schema: str, jobs: int) -> None:
    import psycopg

    open_journal(url, schema=schema).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        mix = "ARRAY[" + ",".join(f"'{s}'" for s in MIX) + "]"
        queues = "ARRAY[" + ",".join(f"'{q}'" for q in QUEUES) + "]"
        conn.execute(
            "INSERT INTO actorq_jobs (id, queue, task, payload, state, priority, run_at, attempts, max_attempts,"
            " created_at, finished_at, last_error)"
            f" SELECT lpad(to_hex(i), 16, '0') || repeat('0', 16), ({queues})[mod(i / 7, 4) + 1],"
            " 'bench.task' || mod(i, 3), %s, s, 0,"
            " CASE WHEN s = 'scheduled' THEN now() + interval '1 hour'"
            "  ELSE now() - interval '1 day' + i * interval '10 ms' END,"
            " CASE WHEN s IN ('ready', 'scheduled') THEN 0 ELSE 1 END, 5,"
            " now() - interval '1 day' + i * interval '10 ms',"
            " CASE WHEN s IN ('succeeded', 'dead', 'failed', 'cancelled')"
            "  THEN now() - interval '1 day' + i * interval '10 ms' END,"
            " CASE WHEN s IN ('dead', 'failed') THEN 'ValueError: boom' END"
            f" FROM (SELECT i, ({mix})[mod(i, 100) + 1] AS s FROM generate_series(0, %s) AS i) g",
            (PAYLOAD, jobs - 1))
        conn.execute("INSERT INTO actorq_errors (job_id, attempt, at, error) SELECT id, 1, now(), last_error"
                     " FROM actorq_jobs WHERE state IN ('dead', 'failed')")
        conn.execute("VACUUM ANALYZE actorq_jobs")  # as autovacuum leaves it: the visibility map set
        conn.execute("VACUUM ANALYZE actorq_errors")


def measure(kind: str, url: str, schema: str, jobs: int, repeat: int, topology: Path) -> None:
    journal = open_journal(url, schema=schema, create=False)
    middle = f"{jobs // 2:016x}{'0' * 16}"
    dead_id = f"{85:016x}{'0' * 16}"  # MIX[85] is dead: it has an error row
    reads: list[tuple[str, Callable[[], Any]]] = [
        ("counts (status, queues list): the kept counts", journal.counts),
        ("oldest_ready", journal.oldest_ready),
        ("list_jobs first page (50)", lambda: journal.list_jobs(limit=50)),
        ("list_jobs page from a cursor half-way", lambda: journal.list_jobs(limit=50, after=middle)),
        ("list_jobs --state succeeded, first page", lambda: journal.list_jobs(state=JobState.SUCCEEDED, limit=50)),
        ("list_jobs --state succeeded, later page",
         lambda: journal.list_jobs(state=JobState.SUCCEEDED, limit=50, after=middle)),
        ("list_jobs --state dead --queue emails, later page",
         lambda: journal.list_jobs(state=JobState.DEAD, queue="emails", limit=50, after=middle)),
        ("list_jobs --queue emails (every state), later page",
         lambda: journal.list_jobs(queue="emails", limit=50, after=middle)),
        ("inspect (jobs show)", lambda: journal.inspect(dead_id)),
    ]
    print(f"\n{kind}: {jobs:,} jobs, reads in-process (best of {repeat})")
    for name, fn in reads:
        best, result = _best(fn, repeat)
        size = len(result) if hasattr(result, "__len__") else 1
        print(f"  {name:<56} {best * 1000:9.2f} ms  ({size} rows)")
    journal.close()
    print(f"{kind}: commands, wall time once each (Python start included)")
    commands = [("status", ["status"]), ("queues list", ["queues", "list"]), ("jobs list", ["jobs", "list"]),
                ("jobs list --after <middle>", ["jobs", "list", "--after", middle]),
                ("jobs list --state dead --after <middle>", ["jobs", "list", "--state", "dead", "--after", middle]),
                ("jobs show ID", ["jobs", "show", dead_id])]
    for name, argv in commands:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "actorq.node.cli", *argv, "--config", str(topology)],
                              capture_output=True, text=True)
        took = time.perf_counter() - start
        assert done.returncode == 0, done.stderr
        print(f"  actorq {name:<48} {took * 1000:9.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg-url", default=None, help="also on PostgreSQL at this URL (a throwaway schema)")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="fill the SQLite journal in this directory and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-listing-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not args.no_sqlite:
            path = work / "jobs.db"
            start = time.perf_counter()
            fill_sqlite(path, args.jobs)
            print(f"sqlite: filled {args.jobs:,} jobs in {time.perf_counter() - start:.1f} s "
                  f"({os.path.getsize(path) / 1e6:.0f} MB, synchronous=full)")
            topology = work / "sqlite.toml"
            topology.write_text(f'[journal]\nurl = "sqlite:///{path}"\n')
            measure("sqlite", f"sqlite:///{path}", "actorq", args.jobs, args.repeat, topology)
        if args.pg_url:
            import psycopg

            schema = f"bench_listing_{os.getpid()}"
            start = time.perf_counter()
            try:
                fill_postgres(args.pg_url, schema, args.jobs)
                print(f"\npostgres: filled {args.jobs:,} jobs in {time.perf_counter() - start:.1f} s")
                topology = work / "pg.toml"
                topology.write_text(f'[journal]\nurl = "{args.pg_url}"\nschema = "{schema}"\n')
                measure("postgres", args.pg_url, schema, args.jobs, args.repeat, topology)
            finally:
                with psycopg.connect(args.pg_url, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
