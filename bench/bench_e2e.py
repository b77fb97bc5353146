"""End-to-end throughput of one node: durable jobs/s, latency, jobs per commit, on SQLite or PostgreSQL.

A node runs embedded in this process (journal writer, dispatcher, scheduler,
and on PostgreSQL the LISTEN/NOTIFY listener) with real worker processes. The
producer `tell`s N no-op jobs while the workers run. A job counts when its
``succeeded`` state is committed (the writer's committed-ack counter). Latency
is enqueue-to-ack: from the job id's creation time to its ``finished_at``, both
read from the journal afterwards.

Journals (``--journal``, may be given several times; rounds alternate the order):

  sqlite            a fresh SQLite file in a temporary directory (the default),
                    WAL mode, ``--synchronous`` (default full)
  postgresql://...  a fresh schema in that database, dropped afterwards; the
                    server's own ``synchronous_commit`` and ``fsync`` apply and
                    are printed. Before each run the schema gets ``--history``
                    finished jobs (default 10000) and an ANALYZE, so the planner
                    sees what it sees in a journal in service; ``--history 0``
                    measures a schema it has no statistics for (a new journal's
                    first minute, until autovacuum's first pass)

``finished_at`` is taken before the commit on both: SQLite stores the writer's
clock at the statement, PostgreSQL its ``now()``, the start of the writer's
transaction. Both come from this machine's clock, as the id's time does.

Figures vary ±20-40 % on shared machines: compare runs made together.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import actorq  # noqa: E402
from actorq._kernel.loop import new_event_loop  # noqa: E402
from actorq.ids import id_time  # noqa: E402
from actorq.node.config import parse_config, redact_url  # noqa: E402
from stats import percentile  # noqa: E402

SQLITE = "sqlite"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
PROGRESS_EVERY = 2.0  # seconds between progress lines on stderr

EPILOG = """\
examples:
  python bench/bench_e2e.py --jobs 100000 --processes 2 --concurrency 256
  python bench/bench_e2e.py --jobs 50000 --rate 10000          # latency at a steady load
  python bench/bench_e2e.py --journal postgresql://postgres@127.0.0.1:5432/postgres
  python bench/bench_e2e.py --journal sqlite --journal postgresql://postgres@127.0.0.1:5432/postgres \\
      --jobs 50000 --repeat 2                                   # both backends in one run, with a summary
  python bench/bench_e2e.py --journal postgresql://postgres@127.0.0.1:5432/postgres --history 0
                                                                # a schema without planner statistics

Each run uses a fresh SQLite file or a fresh PostgreSQL schema (bench_<pid>_<hex>),
removed afterwards, also on Ctrl-C or failure. The role in the URL needs CREATE on
the database. Progress goes to stderr every 2 s (--quiet: none); results go to stdout.
"""


# -- journals ---------------------------------------------------------------------------
def is_postgres(journal: str) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) journal."""
    return journal.startswith(POSTGRES_SCHEMES)


def backend_name(journal: str) -> str:
    """``PostgreSQL`` or ``SQLite``: the label printed with every figure."""
    return "PostgreSQL" if is_postgres(journal) else "SQLite"


def journal_arg(text: str) -> str:
    """argparse type for ``--journal``: ``sqlite`` or a ``postgresql://`` URL."""
    if text == SQLITE or is_postgres(text):
        return text
    raise argparse.ArgumentTypeError(
        f"expected 'sqlite' (a fresh temporary file) or a postgresql:// URL, got {redact_url(text)!r}")


def new_schema_name() -> str:
    """A schema name no other run uses: ``bench_<pid>_<6 hex digits>``."""
    return f"bench_{os.getpid()}_{secrets.token_hex(3)}"


def drop_schema(url: str, schema: str) -> None:
    """Drop `schema` and everything in it; on failure say on stderr what is left behind."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET lock_timeout = '20s'")  # a session still inside it fails this, not hangs it
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except psycopg.Error as exc:
        print(f"bench: could not drop schema {schema!r} at {redact_url(url)}: {' '.join(str(exc).split())}; "
              f"drop it by hand: DROP SCHEMA \"{schema}\" CASCADE", file=sys.stderr)


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new schema name for one measurement; the schema is dropped on the way out, whatever happened."""
    schema = new_schema_name()
    try:
        yield schema
    finally:
        drop_schema(url, schema)


DEFAULT_HISTORY = 10_000
HISTORY_QUEUE = "bench-history"  # the queue of the finished jobs `seed_history` adds; never leased


def seed_history(url: str, schema: str, jobs: int) -> None:
    """Migrate `schema`, add `jobs` finished jobs to it (queue ``bench-history``), and ANALYZE it.

    A journal in service has finished jobs and planner statistics (autovacuum analyzes it).
    A schema that was never analyzed has neither: until autovacuum's first pass (up to
    ``autovacuum_naptime``, 1 min by default) the planner guesses a tiny table, and a lease
    on a long ready queue then sorts every ready row instead of walking the ready index.
    """
    import psycopg

    from actorq.journal import migrate

    migrate(url, schema)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            f'INSERT INTO "{schema}".actorq_jobs (id, queue, task, payload, state, run_at, attempts, max_attempts,'
            " finished_at) SELECT lpad(to_hex(n), 32, '0'), %s, 'bench.noop', '\\x9290'::bytea, 'succeeded',"
            " now(), 1, 1, now() FROM generate_series(1, %s) AS n", (HISTORY_QUEUE, jobs))
        conn.execute(f'ANALYZE "{schema}".actorq_jobs')


def postgres_facts(url: str) -> str:
    """The server's version and durability settings, read back from a connection."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        version, sync_commit, fsync, plan_cache = conn.execute(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit'),"
            " current_setting('fsync'), current_setting('plan_cache_mode')").fetchone()  # type: ignore[misc]
        where = f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}"
    # PGOPTIONS reaches every connection of this process and of the nodes it starts.
    options = f", PGOPTIONS={os.environ['PGOPTIONS']!r}" if os.environ.get("PGOPTIONS") else ""
    return (f"PostgreSQL {version} at {where} (synchronous_commit={sync_commit}, fsync={fsync}, "
            f"server plan_cache_mode={plan_cache}{options}, the journal's own connections force custom plans, "
            f"psycopg {psycopg.__version__})")


def autoanalyze_count(url: str, schema: str) -> int:
    """How many times autovacuum has ANALYZEd the schema's jobs table (a new plan for every statement)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT autoanalyze_count FROM pg_stat_user_tables"
                           " WHERE schemaname = %s AND relname = 'actorq_jobs'", (schema,)).fetchone()
    return int(row[0]) if row else 0


def describe_journal(journal: str, synchronous: str, history: int = 0) -> str:
    """One line naming the backend, its durability settings and how each run's storage starts."""
    if is_postgres(journal):
        start = (f"seeded with {history:,} finished jobs and ANALYZEd" if history
                 else "never analyzed (no planner statistics)")
        return f"journal {postgres_facts(journal)} | a fresh schema per run, {start}"
    return f"journal SQLite {sqlite3.sqlite_version} | a fresh temporary file per run, WAL, synchronous={synchronous}"


def _node_config(args: argparse.Namespace, journal: str, schema: str | None, workdir: Path) -> actorq.Config:
    if schema is None:
        section = {"url": f"sqlite:///{workdir / 'bench.db'}", "synchronous": args.synchronous}
    else:
        section = {"url": journal, "schema": schema}
    # The topology "file" sits in workdir: a node file of PostgreSQL nodes lands beside it, and
    # workers import the tasks from it, so the task module is copied there.
    shutil.copy2(HERE / "bench_tasks.py", workdir / "bench_tasks.py")
    limits = {key: value for key, value in (("concurrency", getattr(args, "queue_concurrency", 0)),
                                             ("max_depth", getattr(args, "queue_max_depth", 0)),
                                             ("rate", getattr(args, "queue_rate", ""))) if value}
    return parse_config(
        {
            "node": {"name": "bench", "tasks": ["bench_tasks:registry"], "log_level": "warning"},
            "journal": section,
            "workers": {"processes": args.processes, "concurrency": args.concurrency,
                        "prefetch": args.concurrency},
            **({"queues": {"default": limits}} if limits else {}),
        },
        source="bench",
        path=workdir / "topology.toml",
    )


# -- the measurement ---------------------------------------------------------------------------
async def run(args: argparse.Namespace, journal: str = SQLITE) -> dict[str, float]:
    """One measurement on `journal` (``sqlite`` or a PostgreSQL URL) in fresh storage, removed afterwards.

    Args:
        args: jobs, processes, concurrency, synchronous, sync, rate, progress (and optionally
            timeout, and history for PostgreSQL).
        journal: ``sqlite`` for a temporary file, or a ``postgresql://`` URL for a fresh schema.

    Returns:
        jobs, seconds, jobs_per_s, p50_ms, p99_ms, commits, jobs_per_commit, and autoanalyzed
        (autovacuum's ANALYZEs of the PostgreSQL table during the run; 0 on SQLite).

    Raises:
        TimeoutError: not every job succeeded within ``args.timeout`` seconds.
        RuntimeError: the node failed.
    """
    workdir = Path(tempfile.mkdtemp(prefix="actorq-bench-"))
    try:
        if not is_postgres(journal):
            return await _measure(args, journal, None, workdir)
        with fresh_schema(journal) as schema:
            history = getattr(args, "history", 0)
            if history:
                seed_history(journal, schema, history)
            return await _measure(args, journal, schema, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _measure(args: argparse.Namespace, journal: str, schema: str | None, workdir: Path) -> dict[str, float]:
    config = _node_config(args, journal, schema, workdir)
    task = "bench.value" if args.returns else "bench.noop_sync" if args.sync else "bench.noop"
    if getattr(args, "keys", "none") == "key-rate-spread":  # the same keys, a task with a key rate never reached
        task = "bench.noop_key_rate"
    label = backend_name(journal)
    progress = getattr(args, "progress", False)
    timeout = getattr(args, "timeout", 0.0) or float("inf")
    keys = getattr(args, "keys", "none")
    async with actorq.Node(config) as node:
        assert node.runtime.writer is not None
        deadline = time.monotonic() + timeout

        def check(what: str) -> None:
            if node.failure:
                raise RuntimeError(f"{label}: the node failed while {what}: {node.failure}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: no result after {timeout:g} s ({what})")

        while node.progress().workers < args.processes:
            check("waiting for its workers")
            await asyncio.sleep(0.01)
        queue = node.queue("default")
        analyzed0 = autoanalyze_count(journal, schema) if schema else 0
        start = time.monotonic()
        deadline = start + timeout
        commits0 = node.runtime.writer.stats.commits
        acked0 = node.runtime.writer.stats.jobs_acked
        enqueued0 = node.runtime.writer.stats.jobs_enqueued
        next_report = start + PROGRESS_EVERY

        def report(sent: int) -> None:
            nonlocal next_report
            now = time.monotonic()
            if progress and now >= next_report:
                next_report = now + PROGRESS_EVERY
                stats = node.runtime.writer.stats
                print(f"  [{label}] {now - start:5.1f} s: told {sent:,}/{args.jobs:,}, enqueues committed "
                      f"{stats.jobs_enqueued - enqueued0:,}, durable successes {stats.jobs_acked - acked0:,}",
                      file=sys.stderr, flush=True)

        sent = 0
        chunk = 1000 if not args.rate else max(1, args.rate // 200)  # paced: 200 chunks a second
        while sent < args.jobs:
            n = min(chunk, args.jobs - sent)
            for i in range(sent, sent + n):
                queue.tell(actorq.Job(task, **job_keys(keys, i)))
            sent += n
            if args.rate:  # open loop at a fixed rate: latency without a flood's queueing
                await asyncio.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
            else:
                await asyncio.sleep(0)  # let the dispatcher and acks run while producing
            report(sent)
        while node.runtime.writer.stats.jobs_acked - acked0 < args.jobs:  # successes committed so far
            check(f"waiting for successes ({node.runtime.writer.stats.jobs_acked - acked0:,}/{args.jobs:,})")
            await asyncio.sleep(0.005)
            report(sent)
        elapsed = time.monotonic() - start
        commits = node.runtime.writer.stats.commits - commits0
    analyzed = autoanalyze_count(journal, schema) - analyzed0 if schema else 0
    latencies = [(finished - id_time(job_id)) * 1000.0 for job_id, finished in _finish_times(config, schema)]
    if len(latencies) != args.jobs:
        raise RuntimeError(f"{label}: expected {args.jobs:,} succeeded jobs in the journal, found {len(latencies):,}")
    return {
        "jobs": args.jobs,
        "seconds": elapsed,
        "jobs_per_s": args.jobs / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "commits": commits,
        "jobs_per_commit": args.jobs / max(commits, 1),
        "autoanalyzed": analyzed,
    }


KEY_RULES = ("none", "ordering", "concurrency", "concurrency-spread", "key-rate-spread")
ORDERING_KEYS = 10_000  # distinct ordering keys of `--keys ordering`
CONCURRENCY_LIMIT = 10  # the one concurrency key's limit of `--keys concurrency`


def job_keys(rule: str, n: int) -> dict[str, object]:
    """The flow-control keys of the `n`-th job under `rule`: none; one of `ORDERING_KEYS`
    ordering keys, in turn; one concurrency key with a limit of `CONCURRENCY_LIMIT`; or one of
    1,000 concurrency keys, in turn, with that limit each."""
    if rule == "ordering":
        return {"ordering_key": f"customer-{n % ORDERING_KEYS}"}
    if rule == "concurrency":
        return {"concurrency_key": "tenant", "concurrency_limit": CONCURRENCY_LIMIT}
    if rule in ("concurrency-spread", "key-rate-spread"):  # the claim's cost where no limit binds: 1,000 keys in turn
        return {"concurrency_key": f"tenant-{n % 1000}", "concurrency_limit": CONCURRENCY_LIMIT}
    return {}


def _finish_times(config: actorq.Config, schema: str | None) -> list[tuple[str, float]]:
    """(id, finished_at as Unix seconds) of every succeeded job, read from the journal."""
    if schema is None:
        db = sqlite3.connect(config.journal.sqlite_path)
        try:
            return db.execute("SELECT id, finished_at FROM actorq_jobs WHERE state = 'succeeded'").fetchall()
        finally:
            db.close()
    import psycopg

    with psycopg.connect(config.journal.url, connect_timeout=10) as conn:
        return conn.execute(  # type: ignore[return-value]
            f'SELECT id, extract(epoch FROM finished_at)::float8 FROM "{schema}".actorq_jobs'
            " WHERE state = 'succeeded' AND queue = 'default'").fetchall()


# -- the command ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journal", action="append", type=journal_arg, metavar="sqlite|URL",
                        help="where the journal lives: 'sqlite' (default) or a postgresql:// URL; "
                             "give it twice to measure both in one run")
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per run (default 100000)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=256,
                        help="slots per worker process, also its prefetch (default 256)")
    parser.add_argument("--synchronous", default="full", choices=["full", "normal", "extra"],
                        help="SQLite only: PRAGMA synchronous (default full)")
    parser.add_argument("--sync", action="store_true", help="use a sync task (thread pool) instead of an async one")
    parser.add_argument("--returns", action="store_true",
                        help="use a task that returns a small value, stored as the job's result")
    parser.add_argument("--repeat", type=int, default=1, help="runs per journal (default 1)")
    parser.add_argument("--rate", type=int, default=0, help="send at this many jobs/s instead of all at once")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="give up on a run after this many seconds (default 300)")
    parser.add_argument("--history", type=int, default=DEFAULT_HISTORY, metavar="N",
                        help="PostgreSQL only: before each run, add N finished jobs to the fresh schema and "
                             f"ANALYZE it, as autovacuum leaves a journal in service (default {DEFAULT_HISTORY}; "
                             "0: a schema the planner has no statistics for)")
    parser.add_argument("--queue-concurrency", type=int, default=0, metavar="N",
                        help="[queues.default] concurrency = N: every lease counts the queue's leases "
                             "(docs/flow-control.md); 0: no limit (default)")
    parser.add_argument("--queue-max-depth", type=int, default=0, metavar="N",
                        help="[queues.default] max_depth = N: every enqueue batch counts the waiting jobs; "
                             "0: no limit (default)")
    parser.add_argument("--queue-rate", default="", metavar="COUNT/UNIT",
                        help='[queues.default] rate = COUNT/UNIT ("1000000/s"): every lease takes tokens from '
                             "the queue's bucket (docs/rate-limits-and-breakers.md); default: no rate")
    parser.add_argument("--keys", choices=KEY_RULES, default="none",
                        help=f"flow-control keys on every job: none (default); ordering ({ORDERING_KEYS:,} "
                             f"distinct ordering keys, in turn); concurrency (one key, limit {CONCURRENCY_LIMIT}); "
                             "concurrency-spread (1,000 keys in turn, the same limit each); key-rate-spread (the same "
                             "keys, on a task whose key_rate is far above the run)")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress lines on stderr")
    return parser


def main() -> None:
    """Run each journal `--repeat` times, alternating the order, and print one line per run."""
    args = build_parser().parse_args()
    try:
        measure_all(args)
    except KeyboardInterrupt:
        print("bench: interrupted; the node, its workers and the run's files and schema are gone", file=sys.stderr)
        sys.exit(130)


def measure_all(args: argparse.Namespace) -> None:
    """The runs of `main`, with their output."""
    journals: list[str] = list(dict.fromkeys(args.journal or [SQLITE]))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"actorq {actorq.__version__} | Python {platform.python_version()} | {os.cpu_count()} CPUs "
          f"({usable} usable) | {args.processes} worker processes x {args.concurrency} slots | "
          f"{'sync' if args.sync else 'async'} no-op tasks | {args.jobs:,} jobs per run | "
          f"{'paced at %d jobs/s' % args.rate if args.rate else 'all jobs told at once'}"
          + (f" | queue concurrency {args.queue_concurrency}" if args.queue_concurrency else "")
          + (f" | queue max_depth {args.queue_max_depth}" if args.queue_max_depth else "")
          + (f" | queue rate {args.queue_rate}" if args.queue_rate else ""))
    for journal in journals:
        print(describe_journal(journal, args.synchronous, args.history))
    results: dict[str, list[dict[str, float]]] = {j: [] for j in journals}
    for i in range(args.repeat):
        order = journals if i % 2 == 0 else journals[::-1]  # neither always gets the quieter machine
        for journal in order:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                r = runner.run(run(args, journal))
            results[journal].append(r)
            print(f"run {i + 1} [{backend_name(journal)}]: {r['jobs']:,} jobs in {r['seconds']:.2f} s = "
                  f"{r['jobs_per_s']:,.0f} durable jobs/s end to end | enqueue-to-ack p50 {r['p50_ms']:.1f} ms, "
                  f"p99 {r['p99_ms']:.1f} ms | {r['commits']:,} commits, {r['jobs_per_commit']:.1f} jobs per commit"
                  + (f" | autovacuum ANALYZEd the table {r['autoanalyzed']:.0f} times meanwhile"
                     if is_postgres(journal) else ""), flush=True)
    if len(journals) > 1:
        print(f"median of {args.repeat} run{'s' if args.repeat > 1 else ''}:")
        medians = {j: statistics.median(r["jobs_per_s"] for r in results[j]) for j in journals}
        for journal in journals:
            rs = results[journal]
            print(f"  {backend_name(journal):<10} {medians[journal]:>9,.0f} durable jobs/s | p50 "
                  f"{statistics.median(r['p50_ms'] for r in rs):.1f} ms, p99 {statistics.median(r['p99_ms'] for r in rs):.1f} ms"
                  f" | {statistics.median(r['jobs_per_commit'] for r in rs):.1f} jobs per commit")
        first = journals[0]
        for journal in journals[1:]:
            print(f"  ratio {backend_name(journal)} / {backend_name(first)}: {medians[journal] / medians[first]:.2f}x")


if __name__ == "__main__":
    main()
