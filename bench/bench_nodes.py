"""PostgreSQL: 2 nodes against 1 on one schema, durable jobs/s end to end, in one run.

Each measurement starts from a fresh schema (seeded with ``--history``
finished jobs and ANALYZEd, as in bench_e2e.py), then:

1. starts K real ``actorq run`` processes on it (K = 1, then 2; each node has
   its own journal writer, dispatcher, listener and ``--processes`` worker
   processes);
2. warms them up: small batches of jobs until every node has run some with
   all its workers connected, then waits until every node is idle;
3. starts one producer process that commits N no-op jobs through
   ``actorq.Client.enqueue_many`` (``--batch`` jobs per commit) as fast as it
   can, while the nodes run;
4. waits until no job is left ready or leased, then reads the figures from
   the journal: a job counts once its success is committed. Throughput is N
   divided by the time from the first job id's creation to the last
   ``finished_at``; latency is ``finished_at`` minus the id's time.

Which node ran how many jobs comes from each node's progress lines (its
dispatcher's count of successes). CPU seconds used during the measurement are
read from /proc for the node processes, their workers, the producer and the
PostgreSQL backends serving them.

All processes share this machine's cores: on a 2-CPU machine two nodes compete
with each other, the producer and PostgreSQL for the same 2 CPUs, so the ratio
2 nodes / 1 node measures contention as much as scale-out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait as wait_for
from pathlib import Path
from typing import Any, Callable

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_e2e  # noqa: E402  (puts the repository on sys.path and imports actorq)

import actorq  # noqa: E402
from actorq.ids import id_time  # noqa: E402
from actorq.journal import migrate  # noqa: E402
from actorq.node.config import redact_url  # noqa: E402
from stats import percentile  # noqa: E402

TASK = "bench.noop"  # bench_tasks.py: an async no-op
PROGRESS_EVERY = 2.0  # seconds between progress lines on stderr
# `actorq run` prints one such line a second while it works, and one "(idle ...)" line when it stops.
PROGRESS_LINE = re.compile(r"\[actorq\] ([\d,]+) succeeded .* workers (\d+)")

EPILOG = """\
examples:
  python bench/bench_nodes.py postgresql://postgres@127.0.0.1:5432/postgres
  python bench/bench_nodes.py postgresql://postgres@127.0.0.1:5432/postgres --jobs 100000 --repeat 3
  python bench/bench_nodes.py postgresql://postgres@127.0.0.1:5432/postgres --processes 1
                                          # one worker process per node: 2 nodes have as many as bench_e2e's one

Rounds alternate which measurement goes first. Each measurement uses a fresh schema
(bench_<pid>_<hex>) and a temporary directory for the nodes' topology files and logs;
both are removed afterwards, also on Ctrl-C or failure (the nodes are stopped first).
The role in the URL needs CREATE on the database. Progress goes to stderr every 2 s
(--quiet: none); results go to stdout. Figures on shared machines vary by ±20-40 %:
compare only figures from one run.
"""


class BenchError(Exception):
    """A measurement could not be completed (the message says why)."""


# -- the producer processes ----------------------------------------------------------------------
def produce(url: str, schema: str, pipe: Connection) -> None:
    """A producer process: connect, say ``ready``, then serve ``("produce", jobs, batch)`` commands.

    For each command it commits `jobs` jobs, `batch` per commit, sends ``("sent", n)``
    after each commit and ``("done", seconds, unix time at the end)``; any error is sent
    as ``("error", text)``. ``("stop",)`` ends it. Ctrl-C is left to the parent.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with actorq.Client(url, schema=schema) as client:
            pipe.send(("ready", os.getpid()))
            while (command := pipe.recv())[0] == "produce":
                _, jobs, batch = command
                start = time.monotonic()
                sent = 0
                while sent < jobs:
                    n = min(batch, jobs - sent)
                    client.enqueue_many([actorq.Job(TASK) for _ in range(n)])
                    sent += n
                    pipe.send(("sent", n))
                pipe.send(("done", time.monotonic() - start, time.time()))
    except Exception as exc:  # reported to the parent, which fails the measurement with it
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))


def spawn_producers(target: Callable[..., None], args: tuple[Any, ...],
                    count: int) -> tuple[list[Connection], list[Any], list[int]]:
    """Spawn `count` processes running ``target(*args, pipe)``; each says ``("ready", pid)`` first.

    Returns their pipes, processes and pids, once every one is ready.

    Raises:
        BenchError: one did not get ready within 60 s, or reported an error instead.
    """
    ctx = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    procs: list[Any] = []
    for i in range(count):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(*args, child), name=f"bench-producer-{i}", daemon=True)
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    pids: list[int] = []
    for pipe in pipes:
        if not pipe.poll(60):
            raise BenchError("a producer process did not get ready within 60 s")
        kind, value = pipe.recv()
        if kind != "ready":
            raise BenchError(f"producer: {value}")
        pids.append(value)
    return pipes, procs, pids


class Producers:
    """`count` producer processes (spawned), each with its own journal connection."""

    def __init__(self, url: str, schema: str, count: int) -> None:
        self.pipes, self.procs, self.pids = spawn_producers(produce, (url, schema), count)
        self.sent = 0
        self.seconds = 0.0  # the slowest producer's time for its share
        self.finished_at = 0.0  # Unix time when the last one finished

    def start(self, jobs: int, batch: int, producers: int | None = None) -> None:
        """Split `jobs` over the first `producers` (default all) and start them."""
        use = self.pipes[:producers or len(self.pipes)]
        self.sent, self.seconds, self.finished_at = 0, 0.0, 0.0
        self._busy = len(use)
        for i, pipe in enumerate(use):
            pipe.send(("produce", jobs // len(use) + (1 if i < jobs % len(use) else 0), batch))

    def poll(self, timeout: float) -> bool:
        """Take their messages for up to `timeout` s; True once every started producer is done."""
        for pipe in wait_for(self.pipes, timeout):
            message = pipe.recv()  # type: ignore[union-attr, call-arg]  # our Connections, never sockets
            if message[0] == "sent":
                self.sent += message[1]
            elif message[0] == "done":
                self._busy -= 1
                self.seconds = max(self.seconds, message[1])
                self.finished_at = max(self.finished_at, message[2])
            else:
                raise BenchError(f"producer: {message[1]}")
        for proc in self.procs:
            if not proc.is_alive():
                raise BenchError(f"a producer process exited with code {proc.exitcode}")
        return self._busy == 0

    def stop(self) -> None:
        """Tell each to stop; terminate any still running after 10 s."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


# -- one node -------------------------------------------------------------------------------------
@dataclass
class NodeRun:
    """One ``actorq run`` process on the measurement's schema, logging to a file."""

    name: str
    toml: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    base_succeeded: int = 0
    terminated: bool = False

    @classmethod
    def start(cls, workdir: Path, name: str, url: str, schema: str, args: argparse.Namespace) -> "NodeRun":
        """Write the node's topology file and start ``actorq run`` in its own session."""
        return cls.launch(workdir, name, (
            "[node]\n"
            f"name = {json.dumps(name)}\n"
            'tasks = ["bench_tasks:registry"]\n'
            'log_level = "warning"\n'
            "[journal]\n"
            f"url = {json.dumps(url)}\n"
            f"schema = {json.dumps(schema)}\n"
            "[workers]\n"
            f"processes = {args.processes}\n"
            f"concurrency = {args.concurrency}\n"
            f"prefetch = {args.concurrency}\n"
        ))

    @classmethod
    def launch(cls, workdir: Path, name: str, topology: str) -> "NodeRun":
        """Write `topology` (TOML text) to ``<name>.toml`` in `workdir` and start ``actorq run`` on it."""
        toml = workdir / f"{name}.toml"
        toml.write_text(topology)
        node = cls(name, toml, workdir / f"{name}.log")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent),
                                                                        os.environ.get("PYTHONPATH")])))
        with open(node.log_path, "wb") as log:
            # Own session: Ctrl-C reaches this script only, which then stops the node in order.
            node.proc = subprocess.Popen(
                [sys.executable, "-m", "actorq.node.cli", "run", "--config", str(toml)],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        return node

    def lines(self) -> list[tuple[int, int, bool]]:
        """The progress lines so far: (succeeded, workers connected, idle)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = PROGRESS_LINE.search(line)
            if match:
                out.append((int(match[1].replace(",", "")), int(match[2]), "(idle" in line))
        return out

    def warmed(self, processes: int) -> bool:
        """It ran jobs while all its worker processes were connected."""
        return any(succeeded > 0 and workers >= processes for succeeded, workers, _ in self.lines())

    def idle_count(self) -> int | None:
        """Its successes so far if its last progress line says idle, else None."""
        lines = self.lines()
        return lines[-1][0] if lines and lines[-1][2] else None

    def check_alive(self) -> None:
        """Raise `BenchError` with the end of its log if the node has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchError(f"node {self.name} exited with code {self.proc.returncode}; the end of its log:\n"
                             + self.tail())

    def tail(self, lines: int = 15) -> str:
        """The last lines of its log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def pids(self) -> list[int]:
        """The node process and its worker processes."""
        assert self.proc is not None
        try:
            return [self.proc.pid] + [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def terminate(self) -> None:
        """Ask it to stop gracefully (once: a second SIGTERM during its shutdown would kill it)."""
        if self.proc is not None and self.proc.poll() is None and not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, wait for a graceful exit; SIGKILL its process group if it takes longer than `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"bench: node {self.name} did not stop within {timeout:g} s; killing it", file=sys.stderr)
            self.kill()
        if self.proc.returncode != 0:
            print(f"bench: node {self.name} exited with code {self.proc.returncode}:\n{self.tail()}",
                  file=sys.stderr)

    def kill(self) -> None:
        """SIGKILL the node and its workers (its own process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


# -- CPU accounting ---------------------------------------------------------------------------------
def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the live processes among `pids`."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def backend_pids(url: str, client_pids: list[int]) -> list[int]:
    """The PostgreSQL server processes serving the connections of `client_pids` (matched by client port)."""
    import psycopg

    ports = set()
    for pid in client_pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6
            for conn in connections(kind="tcp"):
                if conn.raddr and conn.status == psutil.CONN_ESTABLISHED:
                    ports.add(conn.laddr.port)
    if not ports:
        return []
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (list(ports),))
        return [pid for (pid,) in rows]


# -- one measurement ----------------------------------------------------------------------------------
@dataclass
class Window:
    """One timed part of a measurement: end to end, or draining a backlog."""

    kind: str
    jobs: int
    seconds: float
    p50_ms: float
    p99_ms: float
    producer_seconds: float
    per_node: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    autoanalyzed: int = 0  # autovacuum's ANALYZEs of the jobs table during the window (each replans)

    @property
    def jobs_per_s(self) -> float:
        """Durable jobs/s."""
        return self.jobs / self.seconds


@dataclass
class Measurement:
    """Both windows of one measurement with `nodes` nodes."""

    nodes: int
    e2e: Window
    drain: Window


def measure(args: argparse.Namespace, n_nodes: int) -> Measurement:
    """One measurement with `n_nodes` nodes; everything it started or created is gone when it returns."""
    label = f"{n_nodes} node{'s' if n_nodes > 1 else ''}"
    with contextlib.ExitStack() as cleanup:  # callbacks run in reverse: nodes stop before the schema goes
        workdir = Path(tempfile.mkdtemp(prefix="actorq-nodes-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        schema = cleanup.enter_context(bench_e2e.fresh_schema(args.url))
        if args.history:
            bench_e2e.seed_history(args.url, schema, args.history)
        else:
            migrate(args.url, schema)
        shutil.copy2(HERE / "bench_tasks.py", workdir / "bench_tasks.py")  # the nodes' workers import it
        nodes: list[NodeRun] = []

        def stop_nodes() -> None:
            for node in nodes:
                node.terminate()  # all at once, then wait for each
            for node in nodes:
                node.stop()

        cleanup.callback(stop_nodes)
        for i in range(1, n_nodes + 1):
            nodes.append(NodeRun.start(workdir, f"bench-{i}", args.url, schema, args))
        with actorq.Client(args.url, schema=schema) as client:
            marker = warm_up(args, nodes, client, label)
        producers = Producers(args.url, schema, args.producers)
        cleanup.callback(producers.stop)
        run = _Window(args, nodes, producers, schema, label)
        e2e = run.measure("end to end", marker, args.batch, args.producers)
        # A backlog: one producer commits every job in one transaction while the nodes are idle.
        drain = run.measure("drain", run.marker, args.jobs, 1)
    return Measurement(n_nodes, e2e, drain)


def warm_up(args: argparse.Namespace, nodes: list[NodeRun], client: actorq.Client, label: str) -> str:
    """Run jobs until every node has worked with all its workers, then wait until all are idle.

    Returns the largest warm-up job id (measured jobs have larger ids).
    """
    deadline = time.monotonic() + args.timeout
    warm_ids: list[str] = []
    per_round = 2 * args.processes * args.concurrency * len(nodes)  # more than one node's credit
    while not all(node.warmed(args.processes) for node in nodes):
        for node in nodes:
            node.check_alive()
        if time.monotonic() > deadline:
            cold = [n.name for n in nodes if not n.warmed(args.processes)]
            raise BenchError(f"{label}: warm-up: {', '.join(cold)} ran no job with all {args.processes} "
                             f"workers connected within {args.timeout:g} s")
        warm_ids += client.enqueue_many([actorq.Job(TASK) for _ in range(per_round)])
        time.sleep(1.5)  # `actorq run` prints its progress once a second
    settle(nodes, deadline, label)
    if args.progress:
        print(f"  [{label}] warmed up with {len(warm_ids):,} jobs: "
              + ", ".join(f"{n.name} ran {n.base_succeeded:,}" for n in nodes), file=sys.stderr, flush=True)
    return max(warm_ids)


def settle(nodes: list[NodeRun], deadline: float, label: str) -> None:
    """Wait until every node has printed its idle line, and note its count of successes."""
    # A node that worked prints an active line at its next tick and the idle line at the one
    # after (a tick a second): 2.5 s after the last job every count is final.
    time.sleep(2.5)
    while any(node.idle_count() is None for node in nodes):
        for node in nodes:
            node.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"{label}: the nodes did not become idle in time")
        time.sleep(0.2)
    for node in nodes:
        node.base_succeeded = node.idle_count() or 0


def _remaining(url: str, schema: str) -> int:
    """Jobs still ready or leased (both have a partial index: cheap to count)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        return conn.execute(f"SELECT count(*) FROM \"{schema}\".actorq_jobs WHERE state IN ('ready', 'leased')"
                            ).fetchone()[0]  # type: ignore[index]


class _Window:
    """Runs the timed windows of one measurement on running, idle nodes."""

    def __init__(self, args: argparse.Namespace, nodes: list[NodeRun], producers: Producers, schema: str,
                 label: str) -> None:
        self.args, self.nodes, self.producers, self.schema, self.label = args, nodes, producers, schema, label
        self.marker = ""  # the largest id of the last window's jobs
        workers = [pid for node in nodes for pid in node.pids()[1:]]
        node_pids = [node.proc.pid for node in nodes if node.proc]
        self.groups = {"nodes": node_pids, "workers": workers, "producers": producers.pids,
                       "postgres": backend_pids(args.url, node_pids + producers.pids)}

    def measure(self, kind: str, marker: str, batch: int, producers: int) -> Window:
        """Produce `args.jobs` jobs and time them; jobs with ids above `marker` are this window's."""
        args, label = self.args, f"{self.label}, {kind}"
        deadline = time.monotonic() + args.timeout
        cpu0 = {name: cpu_seconds(pids) for name, pids in self.groups.items()}
        analyzed0 = bench_e2e.autoanalyze_count(args.url, self.schema)
        wall0 = time.monotonic()
        next_report = wall0 + PROGRESS_EVERY
        self.producers.start(args.jobs, batch, producers)
        produced = False
        remaining = args.jobs
        while not produced or remaining:
            if not produced:
                produced = self.producers.poll(0.05)
            else:
                remaining = _remaining(args.url, self.schema)
                if remaining:
                    time.sleep(0.05)
            for node in self.nodes:
                node.check_alive()
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"{label}: not done after {args.timeout:g} s "
                                 f"(produced {self.producers.sent:,}/{args.jobs:,})")
            if args.progress and now >= next_report:
                next_report = now + PROGRESS_EVERY
                print(f"  [{label}] {now - wall0:5.1f} s: produced {self.producers.sent:,}/{args.jobs:,}, "
                      f"{_remaining(args.url, self.schema):,} ready or leased", file=sys.stderr, flush=True)
        cpu = {name: cpu_seconds(pids) - cpu0[name] for name, pids in self.groups.items()}
        cpu["wall"] = time.monotonic() - wall0
        analyzed = bench_e2e.autoanalyze_count(args.url, self.schema) - analyzed0
        rows = self._rows(marker, label)
        self.marker = max(job_id for job_id, _ in rows)
        last = max(finished for _, finished in rows)
        # End to end: from the first job's creation. Drain: from the backlog's commit.
        first = min(id_time(job_id) for job_id, _ in rows) if kind != "drain" else self.producers.finished_at
        latencies = [(finished - id_time(job_id)) * 1000.0 for job_id, finished in rows]
        before = {node.name: node.base_succeeded for node in self.nodes}
        settle(self.nodes, deadline + 30, label)
        per_node = {node.name: node.base_succeeded - before[node.name] for node in self.nodes}
        return Window(kind, args.jobs, last - first, percentile(latencies, 50), percentile(latencies, 99),
                      self.producers.seconds, per_node, cpu, analyzed)

    def _rows(self, marker: str, label: str) -> list[tuple[str, float]]:
        """(id, finished_at) of this window's jobs, all of which must have succeeded."""
        import psycopg

        with psycopg.connect(self.args.url, autocommit=True, connect_timeout=10) as conn:
            rows = conn.execute(
                f"SELECT id, extract(epoch FROM finished_at)::float8 FROM \"{self.schema}\".actorq_jobs"
                " WHERE queue = 'default' AND id > %s AND state = 'succeeded'", (marker,)).fetchall()
        if len(rows) != self.args.jobs:
            raise BenchError(f"{label}: expected {self.args.jobs:,} succeeded jobs in the journal, "
                             f"found {len(rows):,}")
        return rows


# -- the command -------------------------------------------------------------------------------------
def describe(w: Window, nodes: int) -> str:
    """One line for one window of a measurement."""
    label = f"{nodes} node{'s' if nodes > 1 else ' '} {w.kind:<10}"
    cpu = w.cpu
    if w.kind == "drain":
        timing = f"backlog committed in {w.producer_seconds:.2f} s in one transaction"
    else:
        timing = (f"enqueue-to-ack p50 {w.p50_ms:,.0f} ms, p99 {w.p99_ms:,.0f} ms | producers committed all in "
                  f"{w.producer_seconds:.2f} s")
        if w.producer_seconds > 0.8 * w.seconds:
            timing += " (producer-bound: the nodes kept up with it)"
    return (f"{label}: {w.jobs:,} jobs in {w.seconds:.2f} s = {w.jobs_per_s:,.0f} durable jobs/s | {timing} | "
            "jobs run: " + ", ".join(f"{name} {n:,}" for name, n in w.per_node.items())
            + f" | CPU s in {cpu['wall']:.1f} s wall: nodes {cpu['nodes']:.1f}, workers {cpu['workers']:.1f}, "
              f"producers {cpu['producers']:.1f}, postgres {cpu['postgres']:.1f}"
            + (f" | autovacuum ANALYZEd the table {w.autoanalyzed} times meanwhile" if w.autoanalyzed else ""))


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", metavar="postgresql://URL", help="the database; each measurement uses a fresh "
                        "schema in it (the role needs CREATE on the database)")
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs per measurement (default 50000)")
    parser.add_argument("--batch", type=int, default=1000, help="jobs per producer commit (default 1000)")
    parser.add_argument("--producers", type=int, default=1,
                        help="producer processes sharing the end-to-end jobs (default 1)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of both measurements (default 2)")
    parser.add_argument("--history", type=int, default=bench_e2e.DEFAULT_HISTORY, metavar="N",
                        help="finished jobs added to each fresh schema before it is ANALYZEd, as autovacuum "
                             f"leaves a journal in service (default {bench_e2e.DEFAULT_HISTORY}; 0: no planner "
                             "statistics)")
    add_node_options(parser, concurrency=256, timeout=300.0, waits="a measurement")
    return parser


def add_node_options(parser: argparse.ArgumentParser, *, concurrency: int, timeout: float, waits: str) -> None:
    """The options of a script that runs `actorq run` nodes: their workers, a deadline on `waits`, --quiet."""
    parser.add_argument("--processes", type=int, default=2, help="worker processes per node (default 2)")
    parser.add_argument("--concurrency", type=int, default=concurrency,
                        help=f"slots per worker process, also its prefetch (default {concurrency})")
    parser.add_argument("--timeout", type=float, default=timeout,
                        help=f"give up on {waits} after this many seconds (default {timeout:g})")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress lines on stderr")


def parse_postgres_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line; a `url` argument that is no ``postgresql://`` URL is a usage error."""
    args = parser.parse_args()
    if not args.url.startswith(bench_e2e.POSTGRES_SCHEMES):
        parser.error(f"expected a postgresql:// URL, got {redact_url(args.url)!r}")
    return args


def main() -> None:
    """Measure 1 node and 2 nodes `--repeat` times, alternating the order; print lines and a summary."""
    run_or_exit(run_all, parse_postgres_args(build_parser()))


def run_or_exit(run: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """``run(args)``; a `BenchError` or Ctrl-C ends the script with one line on stderr (exit 1 or 130)."""
    try:
        run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted; the nodes, the producer and the run's files and schema are gone", file=sys.stderr)
        sys.exit(130)


def run_all(args: argparse.Namespace) -> None:
    """The rounds of `main`, with their output."""
    cpus = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(f"actorq {actorq.__version__} | Python {platform.python_version()} | {cpus} CPUs ({usable} usable) | "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(bench_e2e.describe_journal(args.url, "full", args.history))
    producers = "1 producer process commits" if args.producers == 1 else f"{args.producers} producer processes commit"
    print(f"workload: {args.jobs:,} async no-op jobs per window | end to end: {producers} them through "
          f"Client.enqueue_many ({args.batch:,} per commit) while the nodes run | drain: one commit of all jobs while the nodes are idle | each node: "
          f"`actorq run`, {args.processes} worker processes x {args.concurrency} slots")
    print(f"note: this machine has {usable} usable CPUs. With 2 nodes, {2 * (1 + args.processes)} node and worker "
          "processes, the producer and PostgreSQL share them: the ratio measures contention as much as scale-out.")
    results: dict[int, list[Measurement]] = {1: [], 2: []}
    for i in range(1, args.repeat + 1):
        for n_nodes in ((1, 2) if i % 2 else (2, 1)):  # alternate: neither always gets the quieter machine
            m = measure(args, n_nodes)
            results[n_nodes].append(m)
            print(f"round {i}, {describe(m.e2e, n_nodes)}", flush=True)
            print(f"round {i}, {describe(m.drain, n_nodes)}", flush=True)
    print(f"median of {args.repeat} round{'s' if args.repeat > 1 else ''} on {usable} CPUs:")
    for kind in ("e2e", "drain"):
        one = statistics.median(getattr(m, kind).jobs_per_s for m in results[1])
        two = statistics.median(getattr(m, kind).jobs_per_s for m in results[2])
        name = "end to end" if kind == "e2e" else "drain"
        print(f"  {name:<10}  1 node {one:>9,.0f} durable jobs/s | 2 nodes {two:>9,.0f} durable jobs/s | "
              f"ratio 2 nodes / 1 node = {two / one:.2f}x")


if __name__ == "__main__":
    main()
