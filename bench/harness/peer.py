"""The adapter side of the harness: one benchmarked system behind one small class.

Standard library only. An adapter is a script ``bench/peers/NAME.py`` that
subclasses `Adapter` and ends with ``main(ThatAdapter)``. The harness runs it
with the Python of the system's own virtualenv (so a peer's dependencies never
meet actorq's), one phase per process::

    python bench/peers/NAME.py run --phase drain --jobs N --variant V \\
        --workdir DIR --out RESULT.json [--batch 100] [--redis-url URL] [--pg-url URL]
    python bench/peers/NAME.py run --phase e2e ... [--rate JOBS_PER_S]
    python bench/peers/NAME.py info          # name, variants, durability, needs (JSON)

The workload is the same for every system: a registered no-op task with one
small int argument ``i`` whose body is ``ledger.record_job(i)``; the ledger
(see ledger.py) counts every run, so the harness sees lost and duplicated
jobs in every run.

Phases (every time is ``time.monotonic_ns``):

- ``drain``: fresh storage, N jobs enqueued with no worker running (one call
  each, or ``--batch B`` jobs per call through the peer's batch API), timed:
  the **enqueue** rate. Then the workers start; the **drain** rate is the jobs
  run between the first completion and the last over that window, so the
  workers' start-up is not counted.
- ``e2e``: fresh storage, the workers start and run one warm-up job (slot N);
  then a separate producer process (this script, ``produce``) enqueues jobs
  0..N-1 one call each, at ``--rate`` jobs/s when given (else as fast as it
  can), writing each job's enqueue time. The **end to end** rate is N over the
  time from the first enqueue to the last completion; latency percentiles are
  completion minus enqueue time per job.

After a phase the workers stop, a grace period lets a late duplicate show,
and the result (JSON) carries the ledger's lost/duplicated counts. A run with
a lost job has no rate the harness will print.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ledger import ENV, Ledger  # noqa: E402

PEERS = HERE.parent / "peers"
# An adapter's file is named like the package it benchmarks (celery.py, huey.py, actorq.py...),
# so with bench/peers on the path `import celery` would find the adapter. Running an adapter
# puts its folder first on sys.path: importing this module takes it off, and `Context.env`
# never puts it on a worker's PYTHONPATH (a worker imports its app module from `Context.app`).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PEERS]
#: durability classes, strongest first:
#: "fsync" - an accepted job is on disk (fsync'd) before the producer hears so;
#: "process" - survives a crash of any process, not of the machine (fsync later or per second);
#: "none" - kept in memory only, or acknowledged before it was stored.
CLASSES = ("fsync", "process", "none")
GRACE = 0.5  # seconds to wait after a phase for a late duplicate


@dataclass
class Context:
    """What an adapter is given: where to put its files and which servers to use."""

    workdir: Path  # a fresh directory of its own for this phase
    variant: str  # one of the adapter's `variants`
    jobs: int
    ledger: Path
    processes: int = 2  # worker processes, every system
    redis_url: str | None = None  # redis://127.0.0.1:PORT/0, a server started for this run
    pg_url: str | None = None  # postgresql://..., a database of its own, empty

    def env(self, *paths: Path) -> dict[str, str]:
        """The environment for the system's worker processes: the ledger, and ``paths`` and the
        harness's folder (for ``ledger``) on PYTHONPATH, never bench/peers (see `PEERS`)."""
        env = dict(os.environ)
        env[ENV] = str(self.ledger)
        inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != PEERS]
        env["PYTHONPATH"] = os.pathsep.join([str(p) for p in (*paths, HERE)] + inherited)
        return env

    def app(self, *modules: str) -> Path:
        """Copy ``modules`` (files of bench/peers, e.g. ``"celery_app.py"``) into ``workdir/app``
        and return that folder: where a worker runs and imports them from (give it to `env`)."""
        folder = self.workdir / "app"
        folder.mkdir(parents=True, exist_ok=True)
        for name in modules:
            shutil.copyfile(PEERS / name, folder / name)
        return folder


class Adapter:
    """One benchmarked system. Subclasses fill in the hooks; the driver runs the phases."""

    name = "?"
    #: variant name -> its durability, printed beside its figures
    #: (e.g. "fsync per commit", "AOF everysec: up to 1 s of acknowledged jobs lost on a crash")
    variants: dict[str, str] = {}
    #: variant name -> its durability class, one of CLASSES: what a crash can lose of
    #: what the producer was told is accepted. For a Redis peer this is the queue's side;
    #: the harness combines it with the Redis server's mode.
    classes: dict[str, str] = {}
    needs: tuple[str, ...] = ()  # servers it needs: "redis", "postgresql"
    #: variant name -> the servers that variant needs, where variants differ (else `needs` applies)
    variant_needs: dict[str, tuple[str, ...]] = {}
    storage = ""  # e.g. "SQLite WAL, synchronous=FULL", "Redis 7", "PostgreSQL 15"
    has_batch = False  # whether `enqueue_batch` is implemented
    unavailable: str | None = None  # why this peer cannot run here (exact error), or None

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def setup(self) -> None:
        """Make fresh storage (tables, queues). Runs once per phase, before anything else."""

    def connect(self) -> None:
        """Open the producer's client. Runs in the driver and in the producer process."""

    def enqueue(self, i: int) -> None:
        """Enqueue job ``i`` with one call, durable as the variant says once it returns."""
        raise NotImplementedError

    def enqueue_batch(self, ids: Sequence[int]) -> None:
        """Enqueue ``ids`` with the peer's batch API (only when `has_batch`)."""
        raise NotImplementedError

    def start_workers(self) -> None:
        """Start `Context.processes` worker processes the way the peer is deployed; return when started."""
        raise NotImplementedError

    def stop_workers(self) -> None:
        """Stop every worker process (and their children)."""

    def remaining(self) -> int | None:
        """Jobs still stored as waiting or running after a phase (None: not known)."""
        return None

    def teardown(self) -> None:
        """Remove what `setup` made, close clients."""


# -- helpers for adapters -----------------------------------------------------------
def load_module(name: str, folder: Path = PEERS) -> Any:
    """Import ``folder/name.py`` as the module ``name`` (an app module, on the producer's side:
    bench/peers is off the path)."""
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {folder / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_started(procs: Sequence[subprocess.Popen[bytes]], logs: Sequence[Path], wait: float = 0.5) -> None:
    """Raise with the log's tail if a worker process already exited ``wait`` seconds after its start."""
    time.sleep(wait)
    for proc, log in zip(procs, logs):
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RuntimeError(f"worker exited with {proc.returncode} at start: {tail}")


def bin_of(command: str) -> str:
    """The console script ``command`` of this interpreter's virtualenv (beside ``sys.executable``)."""
    path = Path(sys.executable).parent / command
    if not path.exists():
        raise FileNotFoundError(f"{command} is not installed beside {sys.executable}")
    return str(path)


def spawn(cmd: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start a worker command in a session of its own, its output to ``log``."""
    out = open(log, "ab")
    try:
        return subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        out.close()


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
    """Send ``sig`` to the process's session, then SIGKILL what is left after ``wait`` seconds."""
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)
        return
    _kill_group(proc.pid, sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- the driver ----------------------------------------------------------------------
@dataclass
class Result:
    """One phase of one system, as the harness reads it."""

    system: str
    variant: str
    phase: str  # "drain" or "e2e"
    jobs: int
    batch: int = 1
    rate_limit: float = 0.0  # the producer's pace (jobs/s), 0 = as fast as it can
    enqueue_per_s: float | None = None
    drain_per_s: float | None = None
    e2e_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    lost: int = 0
    duplicated: int = 0
    strays: int = 0
    remaining: int | None = None
    durability: str = ""
    storage: str = ""
    error: str = ""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)  # figures of a special row (e.g. rss_mb)


STALL = 60.0  # seconds without a job run that end a phase as stalled (its workers died, say)


def _wait_done(ledger: Ledger, stop: int, timeout: float, what: str, first: int = 0, stall: float = STALL) -> None:
    now = time.monotonic()
    deadline, last, seen = now + timeout, now, -1
    while (done := ledger.done_count(first, stop)) < stop - first:
        now = time.monotonic()
        if done != seen:
            seen, last = done, now
        if now > deadline:
            raise TimeoutError(f"{what}: {stop - first - done} of {stop - first} jobs had not run after {timeout:.0f} s")
        if now - last > stall:
            raise TimeoutError(f"{what}: no job ran for {stall:.0f} s ({stop - first - done} of {stop - first} "
                               "had not run): stalled")
        time.sleep(0.01)


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_phase(cls: type[Adapter], args: argparse.Namespace) -> Result:
    """Run one phase of ``cls`` and return its result (errors are caught into ``error``)."""
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    n = args.jobs
    ledger_path = workdir / "ledger" if args.ledger is None else Path(args.ledger)
    ledger = Ledger.create(ledger_path, n + 1)  # slot n: the warm-up job
    ctx = Context(workdir=workdir, variant=args.variant, jobs=n, ledger=ledger_path,
                  processes=args.processes, redis_url=args.redis_url, pg_url=args.pg_url)
    adapter = cls(ctx)
    result = Result(cls.name, args.variant, args.phase, n, batch=args.batch, rate_limit=args.rate,
                    durability=cls.variants.get(args.variant, ""), storage=cls.storage)
    started = False
    try:
        adapter.setup()
        adapter.connect()
        if args.phase == "drain":
            t0 = time.monotonic_ns()
            if args.batch > 1:
                for first in range(0, n, args.batch):
                    adapter.enqueue_batch(range(first, min(n, first + args.batch)))
            else:
                for i in range(n):
                    adapter.enqueue(i)
            result.enqueue_per_s = n / ((time.monotonic_ns() - t0) / 1e9)
            adapter.start_workers()
            started = True
            _wait_done(ledger, n, args.timeout, "drain")
            s = ledger.summary(n)
            if n > 1 and s.last_done_ns > s.first_done_ns:
                result.drain_per_s = (n - 1) / ((s.last_done_ns - s.first_done_ns) / 1e9)
        elif args.phase == "e2e":
            adapter.start_workers()
            started = True
            adapter.enqueue(n)  # the warm-up job: workers are up once it ran
            _wait_done(ledger, n + 1, args.timeout, "warm-up", first=n)
            producer = subprocess.run(
                [sys.executable, sys.argv[0], "produce", "--jobs", str(n), "--rate", str(args.rate),
                 "--variant", args.variant, "--workdir", str(workdir), "--ledger", str(ledger_path),
                 *(["--redis-url", args.redis_url] if args.redis_url else []),
                 *(["--pg-url", args.pg_url] if args.pg_url else [])],
                env=ctx.env(), capture_output=True, text=True, timeout=args.timeout)
            if producer.returncode != 0:
                raise RuntimeError(f"producer failed: {producer.stderr.strip()[-2000:]}")
            _wait_done(ledger, n, args.timeout, "end to end")
            s = ledger.summary(n)
            lat = ledger.latencies_ns(n)
            enq_first = min(v for v in ledger.enqueued_times(n) if v)
            result.e2e_per_s = n / ((s.last_done_ns - enq_first) / 1e9)
            if lat:
                result.p50_ms = _percentile(lat, 0.50) / 1e6
                result.p99_ms = _percentile(lat, 0.99) / 1e6
        else:
            raise ValueError(f"unknown phase {args.phase!r}")
    except Exception as exc:  # reported, not raised: the harness prints it beside the row
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            if started:
                time.sleep(GRACE)
                adapter.stop_workers()
            s = ledger.summary(n)
            result.lost, result.duplicated, result.strays = s.lost, s.duplicated, s.strays
            if not result.error:
                try:
                    result.remaining = adapter.remaining()
                except Exception as exc:
                    result.notes.append(f"remaining(): {type(exc).__name__}: {exc}")
        finally:
            try:
                adapter.teardown()
            finally:
                ledger.close()
    return result


def produce(cls: type[Adapter], args: argparse.Namespace) -> None:
    """The producer process of an ``e2e`` phase: enqueue 0..N-1, one call each, paced if asked."""
    ledger = Ledger.open(args.ledger)
    ctx = Context(workdir=Path(args.workdir), variant=args.variant, jobs=args.jobs, ledger=Path(args.ledger),
                  redis_url=args.redis_url, pg_url=args.pg_url)
    adapter = cls(ctx)
    adapter.connect()
    interval = 1e9 / args.rate if args.rate > 0 else 0.0
    start = time.monotonic_ns()
    for i in range(args.jobs):
        if interval:
            due = start + int(i * interval)
            now = time.monotonic_ns()
            if due > now:
                time.sleep((due - now) / 1e9)
        ledger.mark_enqueued(i)
        adapter.enqueue(i)
    ledger.close()


def main(cls: type[Adapter], argv: list[str] | None = None) -> None:
    """The command line of an adapter script (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog=f"bench/peers/{cls.name}.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the adapter's name, variants and needs as JSON")
    for name in ("run", "produce"):
        p = sub.add_parser(name)
        p.add_argument("--jobs", type=int, required=True)
        p.add_argument("--variant", default=next(iter(cls.variants), "default"))
        p.add_argument("--workdir", required=True)
        p.add_argument("--ledger")
        p.add_argument("--rate", type=float, default=0.0)
        p.add_argument("--redis-url")
        p.add_argument("--pg-url")
        if name == "run":
            p.add_argument("--phase", choices=("drain", "e2e"), required=True)
            p.add_argument("--batch", type=int, default=1)
            p.add_argument("--processes", type=int, default=2)
            p.add_argument("--timeout", type=float, default=300.0)
            p.add_argument("--out")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(json.dumps({"name": cls.name, "variants": cls.variants, "classes": cls.classes,
                          "needs": list(cls.needs),
                          "variant_needs": {k: list(v) for k, v in cls.variant_needs.items()},
                          "storage": cls.storage, "has_batch": cls.has_batch, "unavailable": cls.unavailable}))
    elif args.command == "produce":
        produce(cls, args)
    else:
        if args.variant not in cls.variants:
            parser.error(f"--variant: expected one of {', '.join(cls.variants)}, got {args.variant!r}")
        if args.batch > 1 and not cls.has_batch:
            parser.error(f"--batch: {cls.name} has no batch API")
        result = run_phase(cls, args)
        text = json.dumps(asdict(result))
        if args.out:
            Path(args.out).write_text(text)
        else:
            print(text)


__all__ = ["Adapter", "Context", "Result", "bin_of", "check_started", "load_module", "main", "spawn", "stop_group"]
