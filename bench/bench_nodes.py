"""Real ``actorq run`` nodes: 2 nodes against 1 on one PostgreSQL schema, durable jobs/s, in one run.

Each measurement starts from a fresh schema (seeded with ``--history``
finished jobs and ANALYZEd, as in bench_e2e.py), or with ``sqlite`` for the
journal a fresh SQLite file (WAL, the default ``synchronous = "full"``; one
node only), then:

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

Each node runs the bench's worker settings (``--processes``, ``--concurrency``,
``--prefetch``), or with ``--defaults`` a topology that names only its tasks and
its journal, as a new deployment has; ``--set SECTION.KEY=VALUE`` then changes one
setting (e.g. ``--defaults --set workers.prefetch=64``); ``--task-ms MS`` makes
each measured job wait MS milliseconds (an async sleep: time, no CPU), so that the
queue's overhead can be set against jobs that take time. Each window also prints
how the nodes worked: jobs per commit that stored successes (commits told apart by
their ``finished_at``), the steady rate from the first success to the last, and the
range of jobs in flight on the nodes' progress lines.
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
import sqlite3
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait as wait_for
from pathlib import Path
from typing import Any, Callable, NamedTuple

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_e2e  # noqa: E402  (puts the repository on sys.path and imports actorq)

import actorq  # noqa: E402
from actorq.ids import id_time  # noqa: E402
from actorq.journal import migrate  # noqa: E402
from actorq.node.config import Config, ConfigError, parse_config, redact_url  # noqa: E402
from stats import percentile  # noqa: E402

TASK = "bench.noop"  # bench_tasks.py: an async no-op
SLEEP_TASK = "bench.sleep"  # bench_tasks.py: waits its argument's milliseconds (--task-ms)
PROGRESS_EVERY = 2.0  # seconds between progress lines on stderr
# `actorq run` prints one such line a second while it works, and one "(idle ...)" line when it stops.
PROGRESS_LINE = re.compile(r"\[actorq\] ([\d,]+) succeeded .* in flight (\d+)  workers (\d+)")

EPILOG = """\
examples:
  python bench/bench_nodes.py postgresql://postgres@127.0.0.1:5432/postgres
  python bench/bench_nodes.py postgresql://postgres@127.0.0.1:5432/postgres --jobs 100000 --repeat 3
  python bench/bench_nodes.py postgresql://postgres@127.0.0.1:5432/postgres --processes 1
                                          # one worker process per node: 2 nodes have as many as bench_e2e's one
  python bench/bench_nodes.py postgresql://postgres@127.0.0.1:5432/postgres --defaults --nodes 1 \\
      --drain-only --jobs 20000 --repeat 3  # a node as a new deployment runs it, draining a backlog
  python bench/bench_nodes.py sqlite --defaults --drain-only --jobs 20000 --repeat 3
                                          # the same node on a fresh SQLite file (synchronous=FULL)
  python bench/bench_nodes.py sqlite --defaults --set workers.prefetch=64 --drain-only
                                          # one setting changed from the defaults

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
    """A producer process: connect, say ``ready``, then serve ``("produce", jobs, batch, direct, ms)`` commands.

    For each command it commits `jobs` jobs (no-ops, or with `ms` > 0 ``bench.sleep(ms)``),
    `batch` per commit, sends ``("sent", n)``
    after each commit and ``("done", seconds, unix time at the end)``; any error is sent
    as ``("error", text)``. ``("stop",)`` ends it. Ctrl-C is left to the parent. On
    SQLite the jobs go through the node (the Client's default), or with `direct`
    straight into the file (one transaction per commit, beside the node).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with actorq.Client(url, schema=schema) as client, actorq.Client(url, schema=schema, via_node=False) as direct:
            pipe.send(("ready", os.getpid()))
            while (command := pipe.recv())[0] == "produce":
                _, jobs, batch, straight, ms = command
                use = direct if straight else client
                job = (lambda: actorq.Job(SLEEP_TASK, (ms,))) if ms else (lambda: actorq.Job(TASK))
                start = time.monotonic()
                sent = 0
                while sent < jobs:
                    n = min(batch, jobs - sent)
                    use.enqueue_many([job() for _ in range(n)])
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

    def start(self, jobs: int, batch: int, producers: int | None = None, direct: bool = False,
              ms: float = 0.0) -> None:
        """Split `jobs` over the first `producers` (default all) and start them (`direct`, `ms`: see `produce`)."""
        use = self.pipes[:producers or len(self.pipes)]
        self.sent, self.seconds, self.finished_at = 0, 0.0, 0.0
        self._busy = len(use)
        for i, pipe in enumerate(use):
            pipe.send(("produce", jobs // len(use) + (1 if i < jobs % len(use) else 0), batch, direct, ms))

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
class ProgressLine(NamedTuple):
    """One progress line of ``actorq run``: its counts, and whether it says the node is idle."""

    succeeded: int
    in_flight: int
    workers: int
    idle: bool


def topology(args: argparse.Namespace, name: str, url: str, schema: str | None) -> str:
    """The TOML text of a node's topology file.

    The bench's worker settings (``--processes``, ``--concurrency``, ``--prefetch``) and
    WARNING logs; with ``--defaults`` only the node's name, its tasks and its journal, so
    every other setting is the default. Each ``--set SECTION.KEY=VALUE`` is applied last.
    """
    sections: dict[str, dict[str, Any]] = {
        "node": {"name": name, "tasks": ["bench_tasks:registry"]},
        "journal": {"url": url, **({"schema": schema} if schema else {})},
    }
    if not args.defaults:
        sections["node"]["log_level"] = "warning"
        sections["workers"] = {"processes": args.processes, "concurrency": args.concurrency,
                               "prefetch": args.concurrency if args.prefetch is None else args.prefetch}
    for section, key, value in args.set:
        sections.setdefault(section, {})[key] = value
    return "".join(f"[{section}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in keys.items())
                   for section, keys in sections.items())


def _toml(value: Any) -> str:
    """`value` (a string, number, bool or list of strings) as a TOML value: JSON's spelling is TOML's."""
    return json.dumps(value)


def setting(text: str) -> tuple[str, str, Any]:
    """argparse type for ``--set``: ``SECTION.KEY=VALUE``; VALUE is read as TOML, else taken as a string."""
    key, eq, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not (eq and dot and section and name):
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE (e.g. workers.prefetch=64), got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, name, value


def effective_config(args: argparse.Namespace) -> Config:
    """The settings each node runs with, as `actorq run` reads them (a `BenchError` if it would refuse them)."""
    sqlite = args.url == bench_e2e.SQLITE
    text = topology(args, "bench", "sqlite:///bench.db" if sqlite else args.url, None if sqlite else "bench")
    try:
        return parse_config(tomllib.loads(text), source="the nodes' topology")
    except ConfigError as exc:
        raise BenchError(str(exc)) from None


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
        """Write the node's topology file (see `topology`) and start ``actorq run`` in its own session."""
        return cls.launch(workdir, name, topology(args, name, url, schema))

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

    def lines(self) -> list[ProgressLine]:
        """The progress lines so far."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = PROGRESS_LINE.search(line)
            if match:
                out.append(ProgressLine(int(match[1].replace(",", "")), int(match[2]), int(match[3]),
                                        "(idle" in line))
        return out

    def warmed(self, processes: int) -> bool:
        """It ran jobs while all its worker processes were connected."""
        return any(p.succeeded > 0 and p.workers >= processes for p in self.lines())

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


def rss_mb(pids: list[int]) -> float:
    """Resident memory of the live processes among `pids`, in MB (shared pages counted in each)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total / 1e6


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


# -- the journal measured -----------------------------------------------------------------------------
class Probe:
    """What the bench reads from the journal it measures: a fresh PostgreSQL schema or SQLite file."""

    def __init__(self, args: argparse.Namespace, schema: str | None, sqlite_path: Path | None) -> None:
        self.args, self.schema, self.sqlite_path = args, schema, sqlite_path
        self.url = f"sqlite:///{sqlite_path}" if sqlite_path is not None else args.url
        self.table = f'"{schema}".actorq_jobs' if schema else "actorq_jobs"
        self._conn: Any = None  # PostgreSQL: one connection for the measurement's polls

    def close(self) -> None:
        """Close its PostgreSQL connection, if it opened one."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _query(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.sqlite_path is not None:
            db = sqlite3.connect(self.sqlite_path, timeout=10)  # WAL: reads never wait on the node's writes
            try:
                return db.execute(query.replace("%s", "?"), params).fetchall()
            finally:
                db.close()
        import psycopg

        if self._conn is None:
            self._conn = psycopg.connect(self.args.url, autocommit=True, connect_timeout=10)
        return self._conn.execute(query, params).fetchall()  # type: ignore[no-any-return]

    def remaining(self) -> int:
        """Jobs still ready or leased (both have a partial index: cheap to count)."""
        return self._query(f"SELECT count(*) FROM {self.table} WHERE state IN ('ready', 'leased')")[0][0]

    def rows(self, marker: str) -> list[tuple[str, float]]:
        """(id, finished_at as Unix seconds) of the succeeded jobs of queue ``default`` with ids above `marker`."""
        finished = "finished_at" if self.sqlite_path is not None else "extract(epoch FROM finished_at)::float8"
        return self._query(f"SELECT id, {finished} FROM {self.table}"  # type: ignore[return-value]
                           " WHERE queue = 'default' AND id > %s AND state = 'succeeded'", (marker,))

    def autoanalyzed(self) -> int:
        """autovacuum's ANALYZEs of the table so far (PostgreSQL; 0 on SQLite)."""
        return 0 if self.schema is None else bench_e2e.autoanalyze_count(self.args.url, self.schema)

    def backends(self, client_pids: list[int]) -> list[int]:
        """The PostgreSQL server processes serving `client_pids` (none on SQLite)."""
        return [] if self.schema is None else backend_pids(self.args.url, client_pids)


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
    commits: int = 0  # the nodes' commits that stored successes (distinct finished_at)
    steady_seconds: float = 0.0  # from the first success to the last
    in_flight: list[int] = field(default_factory=list)  # on the nodes' progress lines while they worked
    peak_rss: dict[str, float] = field(default_factory=dict)  # MB: the nodes', the workers' (sampled)

    @property
    def jobs_per_s(self) -> float:
        """Durable jobs/s."""
        return self.jobs / self.seconds

    @property
    def steady_jobs_per_s(self) -> float:
        """Jobs/s from the first success to the last: without the time before the first lease."""
        return (self.jobs - 1) / self.steady_seconds if self.steady_seconds > 0 else 0.0


@dataclass
class Measurement:
    """The windows of one measurement with `nodes` nodes (None: not measured)."""

    nodes: int
    e2e: Window | None
    drain: Window


def measure(args: argparse.Namespace, n_nodes: int) -> Measurement:
    """One measurement with `n_nodes` nodes; everything it started or created is gone when it returns."""
    label = f"{n_nodes} node{'s' if n_nodes > 1 else ''}"
    with contextlib.ExitStack() as cleanup:  # callbacks run in reverse: nodes stop before the schema goes
        workdir = Path(tempfile.mkdtemp(prefix="actorq-nodes-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        if args.url == bench_e2e.SQLITE:
            schema, probe = None, Probe(args, None, workdir / "journal.db")
            migrate(probe.url)
        else:
            schema = cleanup.enter_context(bench_e2e.fresh_schema(args.url))
            probe = Probe(args, schema, None)
            cleanup.callback(probe.close)  # before the schema is dropped
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
            nodes.append(NodeRun.start(workdir, f"bench-{i}", probe.url, schema or "", args))
        with actorq.Client(probe.url, schema=schema or "actorq") as client:
            marker = warm_up(args, nodes, client, label)
        producers = Producers(probe.url, schema or "actorq", args.producers)
        cleanup.callback(producers.stop)
        run = _Window(args, nodes, producers, probe, label)
        e2e = None
        if not args.drain_only:
            e2e = run.measure("end to end", marker, args.batch, args.producers)
            marker = run.marker
        # A backlog: one producer commits every job in one transaction while the nodes are idle
        # (on SQLite straight into the file: the node sees it at its next poll, `poll_interval`).
        drain = run.measure("drain", marker, args.jobs, 1, direct=True)
    return Measurement(n_nodes, e2e, drain)


def warm_up(args: argparse.Namespace, nodes: list[NodeRun], client: actorq.Client, label: str) -> str:
    """Run jobs until every node has worked with all its workers, then wait until all are idle.

    Returns the largest warm-up job id (measured jobs have larger ids).
    """
    deadline = time.monotonic() + args.timeout
    warm_ids: list[str] = []
    workers = args.config.workers
    per_round = 2 * workers.processes * (workers.concurrency + workers.prefetch) * len(nodes)  # more than the credit
    while not all(node.warmed(workers.processes) for node in nodes):
        for node in nodes:
            node.check_alive()
        if time.monotonic() > deadline:
            cold = [n.name for n in nodes if not n.warmed(workers.processes)]
            raise BenchError(f"{label}: warm-up: {', '.join(cold)} ran no job with all {workers.processes} "
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


class _Window:
    """Runs the timed windows of one measurement on running, idle nodes."""

    def __init__(self, args: argparse.Namespace, nodes: list[NodeRun], producers: Producers, probe: Probe,
                 label: str) -> None:
        self.args, self.nodes, self.producers, self.probe, self.label = args, nodes, producers, probe, label
        self.marker = ""  # the largest id of the last window's jobs
        workers = [pid for node in nodes for pid in node.pids()[1:]]
        node_pids = [node.proc.pid for node in nodes if node.proc]
        self.groups = {"nodes": node_pids, "workers": workers, "producers": producers.pids,
                       "postgres": probe.backends(node_pids + producers.pids)}

    def measure(self, kind: str, marker: str, batch: int, producers: int, direct: bool = False) -> Window:
        """Produce `args.jobs` jobs and time them; jobs with ids above `marker` are this window's."""
        args, label, probe = self.args, f"{self.label}, {kind}", self.probe
        deadline = time.monotonic() + args.timeout
        cpu0 = {name: cpu_seconds(pids) for name, pids in self.groups.items()}
        analyzed0 = probe.autoanalyzed()
        lines0 = {node.name: len(node.lines()) for node in self.nodes}
        wall0 = time.monotonic()
        next_report = wall0 + PROGRESS_EVERY
        self.producers.start(args.jobs, batch, producers, direct, args.task_ms)
        produced = False
        remaining = args.jobs
        peak = {"nodes": 0.0, "workers": 0.0}
        while not produced or remaining:
            for name in peak:
                peak[name] = max(peak[name], rss_mb(self.groups[name]))
            if not produced:
                produced = self.producers.poll(0.05)
            else:
                remaining = probe.remaining()
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
                      f"{probe.remaining():,} ready or leased", file=sys.stderr, flush=True)
        cpu = {name: cpu_seconds(pids) - cpu0[name] for name, pids in self.groups.items()}
        cpu["wall"] = time.monotonic() - wall0
        analyzed = probe.autoanalyzed() - analyzed0
        rows = self._rows(marker, label)
        self.marker = max(job_id for job_id, _ in rows)
        finished = sorted(f for _, f in rows)
        # End to end: from the first job's creation. Drain: from the backlog's commit.
        first = min(id_time(job_id) for job_id, _ in rows) if kind != "drain" else self.producers.finished_at
        latencies = [(f - id_time(job_id)) * 1000.0 for job_id, f in rows]
        before = {node.name: node.base_succeeded for node in self.nodes}
        settle(self.nodes, deadline + 30, label)
        per_node = {node.name: node.base_succeeded - before[node.name] for node in self.nodes}
        # in flight on the lines printed while the nodes worked (not the idle ones)
        in_flight = [p.in_flight for node in self.nodes for p in node.lines()[lines0[node.name]:] if not p.idle]
        return Window(kind, args.jobs, finished[-1] - first, percentile(latencies, 50), percentile(latencies, 99),
                      self.producers.seconds, per_node, cpu, analyzed, commits=len(set(finished)),
                      steady_seconds=finished[-1] - finished[0], in_flight=in_flight, peak_rss=peak)

    def _rows(self, marker: str, label: str) -> list[tuple[str, float]]:
        """(id, finished_at) of this window's jobs, all of which must have succeeded."""
        rows = self.probe.rows(marker)
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
    flight = (f"in flight {min(w.in_flight)}-{max(w.in_flight)} (median {statistics.median(w.in_flight):.0f})"
              if w.in_flight else "in flight: no progress line")
    return (f"{label}: {w.jobs:,} jobs in {w.seconds:.2f} s = {w.jobs_per_s:,.0f} durable jobs/s "
            f"(first to last success {w.steady_jobs_per_s:,.0f}/s) | {timing} | "
            f"{w.commits:,} commits with successes, {w.jobs / max(w.commits, 1):.1f} jobs each, "
            f"{w.commits / max(w.steady_seconds, 1e-9):,.0f}/s | {flight} | "
            "jobs run: " + ", ".join(f"{name} {n:,}" for name, n in w.per_node.items())
            + f" | CPU s in {cpu['wall']:.1f} s wall: nodes {cpu['nodes']:.1f}, workers {cpu['workers']:.1f}, "
              f"producers {cpu['producers']:.1f}"
            + (f", postgres {cpu['postgres']:.1f}" if cpu.get("postgres") else "")
            + (f" | peak RSS MB: nodes {w.peak_rss['nodes']:.0f}, workers {w.peak_rss['workers']:.0f}"
               if w.peak_rss else "")
            + (f" | autovacuum ANALYZEd the table {w.autoanalyzed} times meanwhile" if w.autoanalyzed else ""))


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", metavar="postgresql://URL|sqlite",
                        help="the database; each measurement uses a fresh schema in it (the role needs CREATE on "
                             "the database); or sqlite: a fresh SQLite file per measurement (one node only)")
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs per measurement (default 50000)")
    parser.add_argument("--batch", type=int, default=1000, help="jobs per producer commit (default 1000)")
    parser.add_argument("--producers", type=int, default=1,
                        help="producer processes sharing the end-to-end jobs (default 1)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of both measurements (default 2)")
    parser.add_argument("--history", type=int, default=bench_e2e.DEFAULT_HISTORY, metavar="N",
                        help="finished jobs added to each fresh schema before it is ANALYZEd, as autovacuum "
                             f"leaves a journal in service (default {bench_e2e.DEFAULT_HISTORY}; 0: no planner "
                             "statistics; PostgreSQL only)")
    parser.add_argument("--nodes", type=int, nargs="+", choices=(1, 2), default=None, metavar="N",
                        help="node counts to measure (default: 1 2; on sqlite: 1)")
    parser.add_argument("--drain-only", action="store_true", help="measure the drain only (no end-to-end window)")
    parser.add_argument("--task-ms", type=float, default=0.0, metavar="MS",
                        help="measured jobs wait MS milliseconds each (async sleep: time, no CPU) instead of "
                             "doing nothing (default 0: no-ops)")
    parser.add_argument("--defaults", action="store_true",
                        help="nodes with every setting at its default: the topology names only the node, its "
                             "tasks and its journal (no [workers] section; logs at INFO)")
    parser.add_argument("--set", action="append", type=setting, default=[], metavar="SECTION.KEY=VALUE",
                        help="one setting of the nodes' topology, applied last (may be given several times), "
                             "e.g. --set workers.prefetch=64 --set journal.batch_max=256")
    add_node_options(parser, concurrency=256, timeout=300.0, waits="a measurement")
    parser.add_argument("--prefetch", type=int, default=None,
                        help="extra jobs buffered per worker process (default: the same as --concurrency); "
                             "--processes, --concurrency and --prefetch are ignored with --defaults (use --set)")
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


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse this script's command line: a ``postgresql://`` URL or ``sqlite`` (one node only)."""
    args = parser.parse_args()
    if args.url != bench_e2e.SQLITE and not args.url.startswith(bench_e2e.POSTGRES_SCHEMES):
        parser.error(f"expected a postgresql:// URL or sqlite, got {redact_url(args.url)!r}")
    if args.nodes is None:
        args.nodes = [1] if args.url == bench_e2e.SQLITE else [1, 2]
    if args.url == bench_e2e.SQLITE and args.nodes != [1]:
        parser.error("sqlite: one node only (a SQLite journal is served by one node)")
    return args


def main() -> None:
    """Measure 1 node and 2 nodes `--repeat` times, alternating the order; print lines and a summary."""
    run_or_exit(run_all, parse_args(build_parser()))


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


def describe_settings(args: argparse.Namespace) -> str:
    """The settings each node runs with, and where they come from."""
    config = args.config
    w, j, d = config.workers, config.journal, config.dispatcher
    source = "defaults" if args.defaults else "the bench's [workers] settings"
    if args.set:
        source += " and " + ", ".join(f"{section}.{key}={value!r}" for section, key, value in args.set)
    return (f"each node: `actorq run` with {source}: {w.processes} worker processes x {w.concurrency} slots + "
            f"{w.prefetch} prefetch ({w.concurrency + w.prefetch} credits each), journal.batch_max {j.batch_max}, "
            f"dispatcher.poll_interval {d.poll_interval:g} s, lease_timeout {d.lease_timeout:g} s, "
            f"log_level {config.node.log_level}")


def run_all(args: argparse.Namespace) -> None:
    """The rounds of `main`, with their output."""
    args.config = effective_config(args)
    cpus = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(f"actorq {actorq.__version__} | Python {platform.python_version()} | {cpus} CPUs ({usable} usable) | "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(bench_e2e.describe_journal(args.url, args.config.journal.synchronous, args.history))
    producers = "1 producer process commits" if args.producers == 1 else f"{args.producers} producer processes commit"
    e2e = ("" if args.drain_only else f"end to end: {producers} them through Client.enqueue_many "
           f"({args.batch:,} per commit) while the nodes run | ")
    what = f"async jobs of {args.task_ms:g} ms (a sleep)" if args.task_ms else "async no-op jobs"
    print(f"workload: {args.jobs:,} {what} per window | {e2e}drain: one commit of all jobs while the "
          f"nodes are idle" + (" (straight into the file: the node sees it at its next poll)"
                               if args.url == bench_e2e.SQLITE else ""))
    print(describe_settings(args))
    if args.task_ms:
        w = args.config.workers
        print(f"ceiling: {w.processes} processes x {w.concurrency} slots / {args.task_ms:g} ms = "
              f"{w.processes * w.concurrency * 1000 / args.task_ms:,.0f} jobs/s per node, were leases free")
    if 2 in args.nodes:
        print(f"note: this machine has {usable} usable CPUs. With 2 nodes, {2 * (1 + args.config.workers.processes)} "
              "node and worker processes, the producer and PostgreSQL share them: the ratio measures contention "
              "as much as scale-out.")
    results: dict[int, list[Measurement]] = {n: [] for n in args.nodes}
    for i in range(1, args.repeat + 1):
        order = args.nodes if i % 2 else args.nodes[::-1]  # alternate: neither always gets the quieter machine
        for n_nodes in order:
            m = measure(args, n_nodes)
            results[n_nodes].append(m)
            if m.e2e is not None:
                print(f"round {i}, {describe(m.e2e, n_nodes)}", flush=True)
            print(f"round {i}, {describe(m.drain, n_nodes)}", flush=True)
    print(f"median of {args.repeat} round{'s' if args.repeat > 1 else ''} on {usable} CPUs:")
    for kind in (("drain",) if args.drain_only else ("e2e", "drain")):
        name = "end to end" if kind == "e2e" else "drain"
        medians = {n: statistics.median(getattr(m, kind).jobs_per_s for m in results[n]) for n in args.nodes}
        parts = []
        for n in args.nodes:
            windows = [getattr(m, kind) for m in results[n]]
            parts.append(f"{n} node{'s' if n > 1 else ''} {medians[n]:>9,.0f} durable jobs/s (range "
                         f"{min(w.jobs_per_s for w in windows):,.0f}-{max(w.jobs_per_s for w in windows):,.0f}; "
                         f"first to last success {statistics.median(w.steady_jobs_per_s for w in windows):,.0f}/s)")
        if len(args.nodes) == 2:
            parts.append(f"ratio 2 nodes / 1 node = {medians[2] / medians[1]:.2f}x")
        print(f"  {name:<10}  " + " | ".join(parts))

if __name__ == "__main__":
    main()
