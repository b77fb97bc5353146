"""Producers in other processes, one job per call, beside a running node: through the node or straight into the journal.

For each configuration, a fresh SQLite journal in a temporary directory and a
real ``actorq run`` node on it (``--processes`` worker processes, an async
no-op task). Once the node has run a warm-up batch with all its workers, P
producer processes (spawned, P from ``--producers``) each open an
``actorq.Client`` on the journal and, for ``--seconds``, enqueue one job per
call and wait for it to be confirmed (the call returns once the job is
committed). Two ways for the same producers:

  via node  the default Client: its enqueues go to the node's producer
            endpoint, and the node's journal writer commits them in groups
  direct    ``Client(via_node=False)``: each call takes the file's write lock
            and commits its job itself, beside the node's own writer

For each configuration it prints:

  jobs confirmed        calls that returned a job id (errors are counted apart)
  durable jobs/s        jobs confirmed / time from the first call to the last
                        job's committed success (``finished_at``, read from the
                        journal afterwards)
  confirm p50/p99       the latency of one call: enqueue to confirmation
  longest stall         the longest stretch in which the journal's count of
                        succeeded jobs did not move while jobs were ready. The
                        count is sampled every 0.1 s by a read-only sqlite3
                        connection, so the figure is exact to 0.1 s.

With ``--rate`` (default 5000; 0: none) one more configuration runs paced:
``--rate-producers`` producers through the node, each sending at its share of
the rate on a fixed schedule (open loop), so the latency is that of a steady
load and not of a flood.

Before the configurations, ``bench_e2e.py`` runs once as a subprocess (a node
embedded in its process ``tell``s ``--e2e-jobs`` jobs), and the figures end
with ratios against these targets, printed, never enforced:

  4 producers via node      >= 40 % of bench_e2e's embedded ``tell`` rate
  1 producer via node       >= 3x one producer writing directly
  paced, via node           confirm p50 <= 2 ms at 5,000 jobs/s
  every configuration       no stall of 1 s or more

With ``--postgres URL`` the journal is PostgreSQL instead: each configuration
gets a fresh schema (seeded with ``--history`` finished jobs and ANALYZEd, as
in bench_nodes.py), and the node serves its producer endpoint at a fixed
``ipc://`` path (``[producers] endpoint``). The two ways are then

  direct    the default Client: each call is one autocommit INSERT, whose
            trigger NOTIFYs the node's listener
  via node  ``Client(node_endpoint=...)``: as on SQLite, the node's journal
            writer commits the enqueues in groups

and the CPU columns add the PostgreSQL backends of the node and the
producers. Each P runs both ways ``--repeat`` times, alternating which goes
first, and the figures end with the medians and the ratio via node / direct.
No bench_e2e run, no targets, no paced run unless ``--rate`` asks for one.

The producers, the node, its workers and this script share the machine's
cores; the header says how many there are. Figures vary by +-20-40 % on
shared machines: compare only figures from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait as wait_for
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_e2e  # noqa: E402  (puts the repository on sys.path and imports actorq)
from bench_nodes import (  # noqa: E402
    BenchError, NodeRun, add_node_options, backend_pids, cpu_seconds, run_or_exit, spawn_producers,
)

import actorq  # noqa: E402
from actorq.jobs.node_file import NodeNotRunning, node_file_beside, read_node_file  # noqa: E402
from actorq.journal import migrate  # noqa: E402
from actorq.node.config import redact_url  # noqa: E402
from stats import percentile  # noqa: E402

TASK = "bench.noop"  # bench_tasks.py: an async no-op
SAMPLE_EVERY = 0.1  # seconds between samples of the journal's counts (SQLite)
PG_SAMPLE_EVERY = 0.5  # PostgreSQL: each sample scans the jobs table, on the machine's shared cores
PROGRESS_EVERY = 2.0  # seconds between progress lines on stderr
WARM_UP_JOBS = 200  # per round of the warm-up
TARGET_TELL_SHARE = 0.40
TARGET_DIRECT_RATIO = 3.0
TARGET_P50_MS = 2.0
TARGET_STALL_S = 1.0
E2E_RATE = re.compile(r"= ([\d,]+) durable jobs/s")

EPILOG = """\
examples:
  python bench/bench_producers.py                        # 1, 4 and 16 producers, both ways, paced at 5,000 jobs/s
  python bench/bench_producers.py --producers 4 --seconds 10 --rate 0
  python bench/bench_producers.py --rate 2000 --rate-producers 8
  python bench/bench_producers.py --synchronous normal   # no fsync at each commit
  python bench/bench_producers.py --postgres postgresql://postgres@127.0.0.1:5432/postgres --repeat 3

Every configuration uses its own temporary directory (journal, topology file, the
node's log) and on PostgreSQL its own schema (bench_<pid>_<hex>; the role needs
CREATE on the database), removed afterwards, also on Ctrl-C or failure (the node
and the producers are stopped first). Progress goes to stderr every 2 s (--quiet:
none); results go to stdout.
"""


# -- the producer processes ----------------------------------------------------------------------
def produce(url: str, options: dict[str, Any], pipe: Connection) -> None:
    """A producer process: open a Client (`options`: its keyword arguments), say ``ready``, then
    run one ``("go", ...)`` command.

    ``("go", start, seconds, rate, offset)``: from Unix time `start`, for `seconds`, enqueue one
    job per call; `rate` > 0 paces the calls at `rate` per second from ``start + offset``.
    Answers ``("done", confirmed, first call's Unix time, latencies in seconds as bytes,
    errors, the first error's text)``; a failure outside the calls is sent as ``("error", text)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        with actorq.Client(url, **options) as client:
            pipe.send(("ready", os.getpid()))
            command = pipe.recv()
            if command[0] != "go":
                return
            _, start, seconds, rate, offset = command
            time.sleep(max(0.0, start - time.time()))
            latencies = array("d")
            errors, first_error, first_call = 0, "", 0.0
            begin = time.monotonic()
            end = begin + seconds
            sent = 0
            while (now := time.monotonic()) < end:
                if rate:  # open loop: a late call goes at once, an early one waits for its slot
                    slot = begin + offset + sent / rate
                    if slot > now:
                        time.sleep(slot - now)
                        if time.monotonic() >= end:
                            break
                sent += 1
                wall = time.time()
                t0 = time.perf_counter()
                try:
                    client.enqueue(actorq.Job(TASK))
                except (actorq.NotCommitted, actorq.JournalError) as exc:
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
                    continue
                latencies.append(time.perf_counter() - t0)
                first_call = first_call or wall
            pipe.send(("done", len(latencies), first_call, latencies.tobytes(), errors, first_error))
    except Exception as exc:  # reported to the parent, which fails the configuration with it
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))


class Producers:
    """`count` spawned producer processes, each with its own Client on `url` (`options`: its keyword arguments)."""

    def __init__(self, url: str, count: int, options: dict[str, Any]) -> None:
        self.pipes, self.procs, self.pids = spawn_producers(produce, (url, options), count)
        self.results: list[tuple[Any, ...]] = []

    def go(self, seconds: float, rate: float) -> float:
        """Start them all at one moment (returned, Unix time); `rate` is their total jobs/s (0: unpaced)."""
        start = time.time() + 0.2
        share = rate / len(self.pipes)
        for i, pipe in enumerate(self.pipes):
            offset = i / rate if rate else 0.0  # paced: their slots interleave
            pipe.send(("go", start, seconds, share, offset))
        return start

    def poll(self, timeout: float) -> bool:
        """Take their answers for up to `timeout` s; True once every producer has answered."""
        for pipe in wait_for([p for p in self.pipes if not p.closed], timeout):
            try:
                message = pipe.recv()  # type: ignore[union-attr]
            except EOFError:
                raise BenchError("a producer process ended without an answer") from None
            pipe.close()  # type: ignore[union-attr]
            if message[0] != "done":
                raise BenchError(f"producer: {message[1]}")
            self.results.append(message[1:])
        return len(self.results) == len(self.pipes)

    def stop(self) -> None:
        """Wait briefly for each to exit; terminate any still running."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.close()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


# -- the journal, read beside the node -----------------------------------------------------------
class Sampler:
    """A read-only connection to the SQLite journal: counts by state, sampled while a configuration runs."""

    every = SAMPLE_EVERY

    def __init__(self, path: Path) -> None:
        self.db: Any = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        self.samples: list[tuple[float, int, int, int]] = []  # (monotonic time, succeeded, ready, leased)

    def counts(self) -> dict[str, int]:
        """Jobs per state now (the measured queue's)."""
        return dict(self.db.execute("SELECT state, count(*) FROM actorq_jobs WHERE queue = 'default'"
                                    " GROUP BY state").fetchall())

    def sample(self) -> dict[str, int]:
        """Record one sample and return its counts."""
        counts = self.counts()
        self.samples.append((time.monotonic(), counts.get("succeeded", 0), counts.get("ready", 0),
                             counts.get("leased", 0)))
        return counts

    def longest_stall(self) -> float:
        """The longest stretch without a new success while jobs were ready, in seconds."""
        longest = 0.0
        since = 0.0  # the last sample with a new success or with no job ready
        previous = -1
        for at, succeeded, ready, _ in self.samples:
            if succeeded != previous or not ready:
                since = at
            else:
                longest = max(longest, at - since)
            previous = succeeded
        return longest

    def finished(self, marker: str) -> tuple[int, float]:
        """(succeeded jobs with ids above `marker`, the last one's ``finished_at``)."""
        count, last = self.db.execute("SELECT count(*), max(finished_at) FROM actorq_jobs"
                                      " WHERE state = 'succeeded' AND id > ?", (marker,)).fetchone()
        return count, last or 0.0

    def close(self) -> None:
        self.db.close()


class PostgresSampler(Sampler):
    """`Sampler` on a PostgreSQL schema (an autocommit connection: each sample sees the latest commits)."""

    every = PG_SAMPLE_EVERY

    def __init__(self, url: str, schema: str) -> None:
        import psycopg

        self.db = psycopg.connect(url, autocommit=True, connect_timeout=10)
        self.table = f'"{schema}".actorq_jobs'
        self.samples = []

    def counts(self) -> dict[str, int]:
        # the partial indexes on ready and leased keep this cheap; succeeded is counted from its state
        return dict(self.db.execute(f"SELECT state, count(*) FROM {self.table} WHERE queue = 'default'"
                                    " GROUP BY state").fetchall())

    def finished(self, marker: str) -> tuple[int, float]:
        count, last = self.db.execute(f"SELECT count(*), extract(epoch FROM max(finished_at))::float8"
                                      f" FROM {self.table} WHERE state = 'succeeded' AND queue = 'default'"
                                      " AND id > %s", (marker,)).fetchone()
        return count, last or 0.0


# -- the journal of one configuration ----------------------------------------------------------------
@dataclass
class Setup:
    """Where one configuration's node and producers meet: the journal, the node's topology,
    the Client options of each way, and how the journal is sampled."""

    url: str
    topology: str
    node_file: Path
    client: dict[str, Any]  # Client options the warm-up uses (no producer endpoint)
    producers: dict[str, Any]  # Client options of the measured producers
    sampler: Any  # () -> Sampler
    backends: bool = False  # PostgreSQL: count the CPU of the node's and producers' backends


def node_options(args: argparse.Namespace) -> str:
    """The ``[workers]`` section of the node's topology."""
    return (
        "[workers]\n"
        f"processes = {args.processes}\n"
        f"concurrency = {args.concurrency}\n"
        f"prefetch = {args.concurrency}\n"
    )


NODE_HEADER = '[node]\nname = "bench"\ntasks = ["bench_tasks:registry"]\nlog_level = "warning"\n'


def sqlite_setup(args: argparse.Namespace, workdir: Path, via_node: bool) -> Setup:
    """A fresh SQLite file; via node is the Client's default, direct is ``via_node=False``."""
    journal = workdir / "bench.db"
    topology = NODE_HEADER + (
        "[journal]\n"
        f'url = "sqlite:///{journal}"\n'
        f'synchronous = "{args.synchronous}"\n'
    ) + node_options(args)
    client = {"synchronous": args.synchronous}
    return Setup(f"sqlite:///{journal}", topology, node_file_beside(journal), client,
                 dict(client, via_node=via_node), lambda: Sampler(journal))


@contextlib.contextmanager
def postgres_setup(args: argparse.Namespace, workdir: Path, via_node: bool) -> Iterator[Setup]:
    """A fresh schema, dropped on the way out; the node's producer endpoint at a fixed ipc:// path.
    Direct is the Client's default, via node is ``node_endpoint=`` that path. The node runs with
    the endpoint either way, so that only the producers differ."""
    url = args.postgres
    with bench_e2e.fresh_schema(url) as schema:
        if args.history:
            bench_e2e.seed_history(url, schema, args.history)
        else:
            migrate(url, schema)
        endpoint = f"ipc://{workdir}/producers.sock"
        topology = NODE_HEADER + (
            "[journal]\n"
            f"url = {json.dumps(url)}\n"
            f"schema = {json.dumps(schema)}\n"
            "[producers]\n"
            f"endpoint = {json.dumps(endpoint)}\n"
        ) + node_options(args)
        client = {"schema": schema}
        producers = dict(client, node_endpoint=endpoint) if via_node else client
        yield Setup(url, topology, workdir / ".actorq-bench.node", client, producers,
                    lambda: PostgresSampler(url, schema), backends=True)


# -- one configuration ---------------------------------------------------------------------------
@dataclass
class Result:
    """The figures of one configuration."""

    label: str
    producers: int
    via_node: bool
    rate: float
    confirmed: int = 0
    errors: int = 0
    first_error: str = ""
    seconds: float = math.nan  # first call to the last success
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    stall_s: float = 0.0
    journal_jobs: int = 0  # measured jobs that succeeded in the journal
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds from the start to the drain's end
    notes: list[str] = field(default_factory=list)

    @property
    def jobs_per_s(self) -> float:
        return self.confirmed / self.seconds if self.seconds > 0 else math.nan


def measure(args: argparse.Namespace, producers: int, via_node: bool, rate: float = 0.0) -> Result:
    """One configuration in a fresh directory; everything it started is stopped when it returns."""
    way = "via node" if via_node else "direct"
    label = f"{producers} producer{'s' if producers > 1 else ''}, {way}" + (f", paced {rate:,.0f}/s" if rate else "")
    result = Result(label, producers, via_node, rate)
    # callbacks run in reverse: producers, then the node, then the schema and the files
    with contextlib.ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="actorq-producers-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        shutil.copy2(HERE / "bench_tasks.py", workdir / "bench_tasks.py")  # the node's workers import it
        if args.postgres:
            setup = cleanup.enter_context(postgres_setup(args, workdir, via_node))
        else:
            setup = sqlite_setup(args, workdir, via_node)
        node = NodeRun.launch(workdir, "bench", setup.topology)
        cleanup.callback(node.stop)
        deadline = time.monotonic() + args.timeout
        marker = warm_up(args, node, setup, deadline, label)
        sampler = setup.sampler()
        cleanup.callback(sampler.close)
        if args.progress:
            print(f"  [{label}] node warmed up; starting {producers} producer processes", file=sys.stderr, flush=True)
        procs = Producers(setup.url, producers, setup.producers)
        cleanup.callback(procs.stop)
        groups = {"node": node.pids()[:1], "workers": node.pids()[1:], "producers": procs.pids}
        if setup.backends:
            groups["postgres"] = backend_pids(setup.url, groups["node"] + procs.pids)
        cpu0 = {name: cpu_seconds(pids) for name, pids in groups.items()}
        start = procs.go(args.seconds, rate)
        time.sleep(max(0.0, start - time.time()))
        started = time.monotonic()
        deadline = started + args.seconds + args.timeout
        next_sample = next_report = started
        done = False
        while True:
            now = time.monotonic()
            if now >= next_sample:
                next_sample += sampler.every
                counts = sampler.sample()
                if done and not counts.get("ready") and not counts.get("leased"):
                    break
                if args.progress and now >= next_report:
                    next_report = now + PROGRESS_EVERY
                    print(f"  [{label}] {now - started:5.1f} s: {'draining' if done else 'producing'}, "
                          f"succeeded {counts.get('succeeded', 0):,}, ready {counts.get('ready', 0):,}, "
                          f"leased {counts.get('leased', 0):,}", file=sys.stderr, flush=True)
            node.check_alive()
            if now > deadline:
                raise BenchError(f"{label}: not done {args.timeout:g} s after the producers' --seconds "
                                 f"({len(procs.results)}/{producers} producers answered); the node's log:\n"
                                 + node.tail())
            if done:
                time.sleep(max(0.0, next_sample - time.monotonic()))
            else:
                done = procs.poll(max(0.0, next_sample - time.monotonic()))
        result.cpu = {name: cpu_seconds(pids) - cpu0[name] for name, pids in groups.items()}
        result.cpu["wall"] = time.monotonic() - started
        latencies: list[float] = []
        first_call = math.inf
        for confirmed, first, raw, errors, first_error in procs.results:
            result.confirmed += confirmed
            result.errors += errors
            result.first_error = result.first_error or first_error
            if confirmed:
                first_call = min(first_call, first)
            lat = array("d")
            lat.frombytes(raw)
            latencies.extend(x * 1000.0 for x in lat)
        result.journal_jobs, last = sampler.finished(marker)
        if latencies:
            result.p50_ms, result.p99_ms = percentile(latencies, 50), percentile(latencies, 99)
            result.seconds = last - first_call
        result.stall_s = sampler.longest_stall()
        if result.journal_jobs < result.confirmed:
            result.notes.append(f"only {result.journal_jobs:,} of {result.confirmed:,} confirmed jobs succeeded "
                                "in the journal")
        if result.errors:
            result.notes.append(f"{result.errors:,} calls failed, the first: {result.first_error}")
    return result


def warm_up(args: argparse.Namespace, node: NodeRun, setup: Setup, deadline: float, label: str) -> str:
    """Wait for the node's producer endpoint, run jobs until all its workers have worked, wait until idle.

    Returns the largest warm-up job id (the measured jobs have larger ids).
    """
    node_file = setup.node_file
    while True:
        node.check_alive()
        with contextlib.suppress(NodeNotRunning, OSError):
            if str(read_node_file(node_file).get("producers", "")).startswith(("ipc://", "tcp://")):
                break
        if time.monotonic() > deadline:
            raise BenchError(f"{label}: the node did not serve its producer endpoint within {args.timeout:g} s:\n"
                             + node.tail())
        time.sleep(0.05)
    ids: list[str] = []
    with actorq.Client(setup.url, **setup.client) as client:
        while not node.warmed(args.processes):
            node.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{label}: warm-up: no job ran with all {args.processes} workers connected "
                                 f"within {args.timeout:g} s:\n" + node.tail())
            ids += client.enqueue_many([actorq.Job(TASK) for _ in range(WARM_UP_JOBS)])
            time.sleep(1.2)  # `actorq run` prints its progress once a second
        while True:
            counts = client.counts().get("default", {})
            if not counts.get("ready") and not counts.get("leased"):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{label}: the warm-up jobs did not finish within {args.timeout:g} s")
            time.sleep(0.05)
    return max(ids)


def tell_rate(args: argparse.Namespace) -> float:
    """bench_e2e.py's embedded ``tell`` rate (durable jobs/s), run once as a subprocess."""
    command = [sys.executable, str(HERE / "bench_e2e.py"), "--jobs", str(args.e2e_jobs),
               "--processes", str(args.processes), "--concurrency", str(args.concurrency),
               "--synchronous", args.synchronous, "--quiet", "--timeout", str(args.timeout)]
    if args.progress:
        print(f"  [bench_e2e] {' '.join(command[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout + 60)
    match = E2E_RATE.search(done.stdout)
    if done.returncode != 0 or not match:
        raise BenchError(f"bench_e2e.py failed (exit {done.returncode}):\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    if args.progress:
        print(f"  [bench_e2e] {done.stdout.strip().splitlines()[-1]}", file=sys.stderr, flush=True)
    return float(match[1].replace(",", ""))


# -- the command ---------------------------------------------------------------------------------
def positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--producers", type=positive(int), nargs="+", default=[1, 4, 16], metavar="P",
                        help="producer process counts to measure, each via node and direct (default 1 4 16)")
    parser.add_argument("--seconds", type=positive(float), default=5.0,
                        help="how long the producers enqueue in each configuration (default 5)")
    parser.add_argument("--rate", type=float, default=None,
                        help="jobs/s of the paced configuration, shared by its producers; 0: no paced run "
                             "(default 5000 on SQLite, none on PostgreSQL)")
    parser.add_argument("--rate-producers", type=positive(int), default=16, metavar="P",
                        help="producer processes of the paced configuration (default 16); each call waits for "
                             "its commit, so one producer paces at most 1 / latency calls per second")
    parser.add_argument("--synchronous", default="full", choices=["full", "normal", "extra"],
                        help="SQLite PRAGMA synchronous of the node and the producers (default full)")
    parser.add_argument("--e2e-jobs", type=positive(int), default=50_000, metavar="N",
                        help="jobs of the one bench_e2e.py run whose tell rate the ratios use (default 50000)")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="measure on PostgreSQL instead (postgresql://...; the role needs CREATE): direct is "
                             "the default Client, via node is Client(node_endpoint=...)")
    parser.add_argument("--repeat", type=positive(int), default=1,
                        help="PostgreSQL: rounds of every configuration, alternating which way goes first (default 1)")
    parser.add_argument("--history", type=int, default=bench_e2e.DEFAULT_HISTORY, metavar="N",
                        help="PostgreSQL: finished jobs added to each fresh schema before it is ANALYZEd "
                             f"(default {bench_e2e.DEFAULT_HISTORY}; 0: no planner statistics)")
    add_node_options(parser, concurrency=256, timeout=120.0, waits="a configuration's start or drain")
    return parser


def fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def header(args: argparse.Namespace, journal: str) -> None:
    """The lines that say what runs where."""
    cpus = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(f"actorq {actorq.__version__} | Python {platform.python_version()} | {cpus} CPUs ({usable} usable) | "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"journal {journal} | node: `actorq run`, {args.processes} worker processes x {args.concurrency} slots, "
          f"async no-op task | each producer: one job per call for {args.seconds:g} s", flush=True)


def print_table(results: list[Result]) -> None:
    """One line per configuration, then its notes."""
    backends = any("postgres" in r.cpu for r in results)
    width = max(len("configuration"), *(len(r.label) for r in results))
    cpu_names = "node, workers, producers" + (", postgres" if backends else "")
    head = (f"{'configuration':<{width}} {'confirmed':>10} {'errors':>6} {'durable jobs/s':>15} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'stall s':>7}   CPU s: {cpu_names} in wall s")
    print(head)
    print("-" * len(head))
    for r in results:
        cpu = [r.cpu["node"], r.cpu["workers"], r.cpu["producers"]] + ([r.cpu.get("postgres", 0.0)] if backends else [])
        print(f"{r.label:<{width}} {r.confirmed:>10,} {r.errors:>6,} {fmt(r.jobs_per_s, ',.0f'):>15} "
              f"{fmt(r.p50_ms, '.2f'):>7} {fmt(r.p99_ms, '.2f'):>7} {r.stall_s:>7.1f}   "
              + ", ".join(f"{x:4.1f}" for x in cpu) + f" in {r.cpu['wall']:.1f}")
    for r in results:
        for note in r.notes:
            print(f"note [{r.label}]: {note}")


def run_all(args: argparse.Namespace) -> None:
    """SQLite: the tell rate, every configuration, the table and the ratios. PostgreSQL: `run_postgres`."""
    if args.postgres:
        run_postgres(args)
        return
    header(args, f"SQLite {sqlite3.sqlite_version} | a fresh temporary file per configuration, WAL, "
                 f"synchronous={args.synchronous}")
    tell = tell_rate(args)
    print(f"bench_e2e.py, embedded node telling {args.e2e_jobs:,} jobs: {tell:,.0f} durable jobs/s", flush=True)
    plan = [(p, via) for p in args.producers for via in (True, False)]
    results: list[Result] = []
    for producers, via_node in plan:
        results.append(measure(args, producers, via_node))
    rate = 5000.0 if args.rate is None else args.rate
    if rate > 0:
        results.append(measure(args, args.rate_producers, True, rate))
    print()
    print_table(results)
    print()
    print("against the targets (printed, not enforced):")

    def find(producers: int, via_node: bool) -> Result | None:
        return next((r for r in results if r.producers == producers and r.via_node == via_node and not r.rate), None)

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    four = find(4, True)
    if four:
        share = four.jobs_per_s / tell
        print(f"  4 producers via node / bench_e2e tell: {four.jobs_per_s:,.0f} / {tell:,.0f} = {share:.0%} "
              f"(target >= {TARGET_TELL_SHARE:.0%}: {verdict(share >= TARGET_TELL_SHARE)})")
    one, one_direct = find(1, True), find(1, False)
    if one and one_direct:
        ratio = one.jobs_per_s / one_direct.jobs_per_s
        print(f"  1 producer via node / direct: {one.jobs_per_s:,.0f} / {one_direct.jobs_per_s:,.0f} = {ratio:.2f}x "
              f"(target >= {TARGET_DIRECT_RATIO:g}x: {verdict(ratio >= TARGET_DIRECT_RATIO)})")
    paced = next((r for r in results if r.rate), None)
    if paced:
        achieved = paced.confirmed / args.seconds
        print(f"  paced, {paced.producers} producers via node: confirm p50 {paced.p50_ms:.2f} ms at "
              f"{achieved:,.0f} of {paced.rate:,.0f} jobs/s asked (target <= {TARGET_P50_MS:g} ms at a steady "
              f"{paced.rate:,.0f}/s: {verdict(paced.p50_ms <= TARGET_P50_MS and achieved >= 0.95 * paced.rate)})")
    worst = max(results, key=lambda r: r.stall_s)
    print(f"  longest stall: {worst.stall_s:.1f} s ({worst.label}) "
          f"(target < {TARGET_STALL_S:g} s in every configuration: {verdict(worst.stall_s < TARGET_STALL_S)})")


def run_postgres(args: argparse.Namespace) -> None:
    """Each P both ways, `--repeat` rounds alternating which goes first; the table, then medians and ratios."""
    header(args, bench_e2e.describe_journal(args.postgres, "full", args.history).removeprefix("journal ")
           + " | a fresh schema per configuration; the node's producer endpoint at a fixed ipc:// path")
    results: list[Result] = []
    for round_ in range(1, args.repeat + 1):
        for producers in args.producers:
            ways = (False, True) if (round_ + producers) % 2 else (True, False)  # alternate who goes first
            for via_node in ways:
                result = measure(args, producers, via_node)
                if args.repeat > 1:
                    result.label += f", round {round_}"
                results.append(result)
                print(f"  {result.label}: {fmt(result.jobs_per_s, ',.0f')} durable jobs/s, confirm p50 "
                      f"{fmt(result.p50_ms, '.2f')} ms, p99 {fmt(result.p99_ms, '.2f')} ms", flush=True)
        if args.rate:
            results.append(measure(args, args.rate_producers, True, args.rate))
            results.append(measure(args, args.rate_producers, False, args.rate))
    print()
    print_table(results)
    print()
    print(f"median of {args.repeat} round{'s' if args.repeat > 1 else ''} (CPU ms per job: node, workers, "
          "producers and postgres CPU over the jobs confirmed):")
    for producers in args.producers:
        line = f"  {producers:>3} producer{'s' if producers > 1 else ' '}"
        rates = {}
        for via_node in (False, True):
            runs = [r for r in results if r.producers == producers and r.via_node == via_node and not r.rate]
            rates[via_node] = statistics.median(r.jobs_per_s for r in runs)
            p50 = statistics.median(r.p50_ms for r in runs)
            p99 = statistics.median(r.p99_ms for r in runs)
            cpu = statistics.median(1000 * sum(v for k, v in r.cpu.items() if k != "wall") / max(r.confirmed, 1)
                                    for r in runs)
            line += (f" | {'via node' if via_node else 'direct'} {rates[via_node]:>7,.0f} jobs/s, "
                     f"p50 {p50:6.2f} ms, p99 {p99:6.2f} ms, CPU {cpu:.2f} ms/job")
        print(line + f" | via node / direct = {rates[True] / rates[False]:.2f}x")


def main() -> None:
    """Measure every configuration and print the table."""
    parser = build_parser()
    args = parser.parse_args()
    if args.rate is not None and args.rate < 0:
        parser.error("--rate must be 0 (no paced run) or positive")
    if args.postgres and not args.postgres.startswith(bench_e2e.POSTGRES_SCHEMES):
        parser.error(f"--postgres: expected a postgresql:// URL, got {redact_url(args.postgres)!r}")
    run_or_exit(run_all, args)


if __name__ == "__main__":
    main()
