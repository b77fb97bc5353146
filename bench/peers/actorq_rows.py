"""actorq's own rows of the bench: what only actorq has, measured with the peers' ledger.

Runs with actorq's own Python (the repository's virtualenv)::

    python bench/peers/actorq_rows.py list       # JSON: [{"row", "needs", "what", "class"}, ...]
    python bench/peers/actorq_rows.py run ROW --jobs N --workdir DIR --out R.json [--pg-url URL]

``run`` writes one `peer.Result` (system ``actorq``, variant = ROW). Every row
whose jobs run ``bench.record(i)`` (bench/peers/actorq_app.py) counts lost and
duplicated jobs in the harness's ledger; special figures go to ``extra``.
The nodes are set up as in actorq.py (2 worker processes, the node's defaults
otherwise; ``--set SECTION.KEY=VALUE`` changes one setting, e.g.
``--set workers.concurrency=256``, and the result's notes say so); a PostgreSQL row uses a fresh schema in ``--pg-url``, seeded with
10,000 finished jobs and ANALYZEd (as a journal in service is, see
bench_e2e.seed_history), dropped afterwards.

Rows:

- ``tell-sqlite-full``, ``tell-sqlite-normal``, ``tell-postgresql``: a node
  embedded in this process (``actorq.Node``) with 2 worker processes; ``tell``
  N jobs as fast as the loop can, sustained end to end (``e2e_per_s``: N over
  first enqueue to last run); then N more paced at half that rate, open loop
  in 1 ms ticks, for ``p50_ms``/``p99_ms`` (``rate_limit`` is that pace).
- ``producers4-sqlite-full``: an ``actorq run`` node; 4 producer processes,
  each an ``actorq.Client`` sending its quarter one job per call, each call
  returning once the job is committed; ``e2e_per_s`` as above.
- ``batched-sqlite-full``: actorq.py's drain phase with ``enqueue_many`` of 100
  per call: ``enqueue_per_s`` and ``drain_per_s``.
- ``nodes1-postgresql``, ``nodes2-postgresql``: 1 or 2 ``actorq run`` nodes on
  one schema; actorq.py's drain phase (batches of 100: ``enqueue_per_s``,
  ``drain_per_s``) then its end-to-end phase (a separate producer process, one
  ``Client.enqueue`` per job: ``e2e_per_s``, p50/p99), each on a fresh schema.
- ``memory-sqlite-full``: the resident memory of every actorq process (the
  node and its 2 workers), summed: idle 3 s after a warm-up (``idle_rss_mb``),
  and the peak while a producer process commits N jobs in batches of 100 as
  fast as it can (``load_rss_mb``); the proportional set sizes (shared pages
  divided between the processes) beside them (``*_pss_mb``); the pages of the
  ledger's own map are left out of both. ``--soak SECONDS``
  adds a paced load (``--soak-rate`` jobs/s) for that long, sampled every 5 s:
  ``soak_first_rss_mb``, ``soak_last_rss_mb``, ``soak_growth_mb`` (the 10-minute
  flatness check, not run by default).
- ``rerun-sqlite-full``: bench_recovery.py's measurement: a node embedded
  here, 2 worker processes x 8 slots, 200 jobs/s of 50 ms each; ``--kills``
  times (default 5), 1 s apart, SIGKILL a random worker while it holds jobs;
  ``rerun_p50_s``/``rerun_max_s`` from the kill to the next start of each job
  it was running. Its jobs record into bench_recovery's own ledger (start and
  end of each attempt), which gives lost and duplicated (a job can finish and
  die before its ack leaves: at-least-once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import random
import signal
import sys
import time
import tomllib
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Callable

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
# actorq.py in this folder must not shadow the actorq package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
for _path in (BENCH / "harness", BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bench_e2e  # noqa: E402  (puts the repository on sys.path)
from bench_nodes import setting, spawn_producers  # noqa: E402
from ledger import Ledger  # noqa: E402
from peer import Context, Result, _percentile, _wait_done, run_phase  # noqa: E402

import actorq  # noqa: E402
from actorq._kernel.loop import new_event_loop  # noqa: E402
from actorq.node.config import parse_config  # noqa: E402


def _load_adapter() -> ModuleType:
    """bench/peers/actorq.py, as the module ``actorq_adapter`` (its file name is the package's)."""
    if "actorq_adapter" not in sys.modules:
        spec = importlib.util.spec_from_file_location("actorq_adapter", HERE / "actorq.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["actorq_adapter"] = module
        spec.loader.exec_module(module)
    return sys.modules["actorq_adapter"]


adapter = _load_adapter()
ActorQ = adapter.ActorQ
TASK = adapter.TASK
HISTORY = 10_000  # finished jobs in a PostgreSQL row's schema before it starts
WARM_TIMEOUT = 60.0

ROWS: dict[str, tuple[tuple[str, ...], str]] = {
    "tell-sqlite-full": ((), "embedded tell, sustained end to end, then p50/p99 at half of it (SQLite FULL)"),
    "tell-sqlite-normal": ((), "embedded tell, sustained end to end, then p50/p99 at half of it (SQLite NORMAL)"),
    "tell-postgresql": (("postgresql",), "embedded tell, sustained end to end, then p50/p99 at half of it "
                                         "(PostgreSQL)"),
    "producers4-sqlite-full": ((), "4 producer processes, one Client.enqueue per job with confirmation, "
                                   "end to end (SQLite FULL)"),
    "batched-sqlite-full": ((), "enqueue_many 100 per call with no worker, then drain (SQLite FULL)"),
    "nodes1-postgresql": (("postgresql",), "1 actorq run node: drain (batches of 100) and end to end "
                                           "(a separate producer, one job per call)"),
    "nodes2-postgresql": (("postgresql",), "2 actorq run nodes on one schema: drain (batches of 100) and end to "
                                           "end (a separate producer, one job per call)"),
    "memory-sqlite-full": ((), "RSS of the node and its 2 workers, summed: idle, and peak under load"),
    "rerun-sqlite-full": ((), "SIGKILL a worker holding jobs: time until those jobs start again"),
}


def _variant(row: str) -> str:
    return row.split("-", 1)[1]


def _context(args: argparse.Namespace, variant: str, ledger: Path, workdir: Path | None = None) -> Context:
    return Context(workdir=(workdir or args.workdir).resolve(), variant=variant, jobs=args.jobs, ledger=ledger.resolve(),
                   pg_url=args.pg_url)


def _phase(cls: type, args: argparse.Namespace, variant: str, phase: str, workdir: Path, batch: int = 1) -> Result:
    """One phase of actorq.py's adapter class `cls`, through the peers' driver."""
    ns = argparse.Namespace(workdir=str(workdir), jobs=args.jobs, ledger=None, variant=variant, processes=2,
                            redis_url=None, pg_url=args.pg_url, phase=phase, batch=batch, rate=0.0,
                            timeout=args.timeout)
    argv0 = sys.argv[0]
    sys.argv[0] = str(HERE / "actorq.py")  # the e2e phase runs `<argv[0]> produce`: actorq.py's producer
    try:
        return run_phase(cls, ns)
    finally:
        sys.argv[0] = argv0


# -- tell: a node embedded in this process ----------------------------------------------------------
async def _tell(node: actorq.Node, ledger: Ledger, first: int, n: int, rate: float, timeout: float) -> None:
    """Tell jobs first..first+n-1 (as fast as the loop can, or at `rate` jobs/s in 1 ms ticks); wait until all ran."""
    queue = node.queue()
    tick = 0.001
    chunk = 1000 if not rate else max(1, round(rate * tick))
    start = time.monotonic()
    sent = 0
    while sent < n:
        for i in range(first + sent, first + min(n, sent + chunk)):
            ledger.mark_enqueued(i)
            queue.tell(actorq.Job(TASK, (i,)))
        sent = min(n, sent + chunk)
        if rate:
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        else:
            await asyncio.sleep(0)  # the writer, the dispatcher and the acks run meanwhile
    deadline = time.monotonic() + timeout
    while ledger.done_count(first, first + n) < n:
        if node.failure:
            raise RuntimeError(f"the node failed: {node.failure}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n - ledger.done_count(first, first + n)} of {n} jobs had not run after {timeout:g} s")
        await asyncio.sleep(0.002)


async def _tell_row(args: argparse.Namespace, result: Result, ledger: Ledger, quick: ActorQ) -> None:
    n = args.jobs
    sections = tomllib.loads(quick.topology("bench"))
    sections["node"].setdefault("log_level", "warning")  # an embedded node logs through this process
    config = parse_config(sections, source="actorq_rows", path=quick.workdir / "topology.toml")
    async with actorq.Node(config) as node:
        node.queue().tell(actorq.Job(TASK, (2 * n,)))  # the warm-up job
        deadline = time.monotonic() + WARM_TIMEOUT
        while node.progress().workers < 2 or not ledger.count(2 * n):
            if time.monotonic() > deadline:
                raise TimeoutError(f"warm-up: no run with 2 workers within {WARM_TIMEOUT:g} s")
            await asyncio.sleep(0.01)
        await _tell(node, ledger, 0, n, 0.0, args.timeout)
        s = ledger.summary(n)
        first = min(v for v in ledger.enqueued_times(n) if v)
        result.e2e_per_s = n / ((s.last_done_ns - first) / 1e9)
        result.rate_limit = result.e2e_per_s / 2
        began = time.monotonic()
        await _tell(node, ledger, n, n, result.rate_limit, args.timeout)
        result.extra["paced_per_s"] = n / (time.monotonic() - began)
    lat = ledger.latencies_ns(2 * n)[n:]
    result.p50_ms, result.p99_ms = _percentile(lat, 0.50) / 1e6, _percentile(lat, 0.99) / 1e6


def row_tell(args: argparse.Namespace, result: Result) -> None:
    variant = _variant(result.variant)
    ledger_path = args.workdir / "ledger"
    ledger = Ledger.create(ledger_path, 2 * args.jobs + 1)  # the peak run, the paced run, the warm-up job
    quick = ActorQ(_context(args, variant, ledger_path))
    quick.history = HISTORY
    quick.worker_env()  # the node's worker processes inherit it
    try:
        quick.setup()
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_tell_row(args, result, ledger, quick))
    finally:
        _count(result, ledger, 2 * args.jobs)
        if not result.error:
            with contextlib.suppress(Exception):
                result.remaining = quick.remaining()
        quick.teardown()
        ledger.close()
    result.notes.append("p50/p99: a second run of N jobs told at half of the sustained rate (rate_limit), "
                        "open loop in 1 ms ticks")


# -- producers in other processes --------------------------------------------------------------------
def _produce(url: str, ledger_path: str, pipe: Connection) -> None:
    """A producer process: a Client, then one ``("go", first, count, batch, rate)``: jobs first..first+count-1,
    `batch` per call (1: `enqueue`, else `enqueue_many`), paced at `rate` jobs/s when > 0."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ledger = Ledger.open(ledger_path)
        with actorq.Client(url) as client:
            pipe.send(("ready", os.getpid()))
            _, first, count, batch, rate = pipe.recv()
            start = time.monotonic()
            for at in range(first, first + count, batch):
                if rate:
                    time.sleep(max(0.0, start + (at - first) / rate - time.monotonic()))
                ids = range(at, min(first + count, at + batch))
                for i in ids:
                    ledger.mark_enqueued(i)
                if batch == 1:
                    client.enqueue(actorq.Job(TASK, (at,)))
                else:
                    client.enqueue_many([actorq.Job(TASK, (i,)) for i in ids])
            pipe.send(("done", count))
        ledger.close()
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))


def _run_producers(node: ActorQ, ledger_path: Path, shares: list[tuple[int, int]], batch: int, rate: float,
                   timeout: float, while_waiting: Callable[[], None] = lambda: None) -> None:
    """Spawn one producer per (first, count) share, start them together, wait until each is done."""
    pipes, procs, _ = spawn_producers(_produce, (node.url, str(ledger_path)), len(shares))
    try:
        for pipe, (first, count) in zip(pipes, shares):
            pipe.send(("go", first, count, batch, rate / len(shares)))
        deadline = time.monotonic() + timeout
        for pipe in pipes:
            while not pipe.poll(0.1):
                while_waiting()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"a producer was not done after {timeout:g} s")
            kind, value = pipe.recv()
            if kind != "done":
                raise RuntimeError(f"producer: {value}")
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


def _started_node(args: argparse.Namespace, ledger: Ledger, ledger_path: Path, n: int) -> ActorQ:
    """An `actorq run` node (sqlite-full) on a fresh journal, warm: it ran job `n` (the warm-up slot)."""
    node = ActorQ(_context(args, "sqlite-full", ledger_path))
    node.setup()
    node.start_workers()
    node.connect()
    node.enqueue(n)
    _wait_done(ledger, n + 1, WARM_TIMEOUT, "warm-up", first=n)
    return node


def _shares(n: int, k: int) -> list[tuple[int, int]]:
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return [(sum(sizes[:i]), sizes[i]) for i in range(k)]


def row_producers(args: argparse.Namespace, result: Result) -> None:
    n = args.jobs
    ledger_path = args.workdir / "ledger"
    ledger = Ledger.create(ledger_path, n + 1)
    node = None
    try:
        node = _started_node(args, ledger, ledger_path, n)
        _run_producers(node, ledger_path, _shares(n, 4), 1, 0.0, args.timeout)
        _wait_done(ledger, n, args.timeout, "end to end")
        s = ledger.summary(n)
        first = min(v for v in ledger.enqueued_times(n) if v)
        result.e2e_per_s = n / ((s.last_done_ns - first) / 1e9)
        lat = ledger.latencies_ns(n)
        result.p50_ms, result.p99_ms = _percentile(lat, 0.50) / 1e6, _percentile(lat, 0.99) / 1e6
    finally:
        _finish(result, ledger, n, node)


# -- memory ----------------------------------------------------------------------------------------
def _memory(pids: list[int], ledger: Path) -> tuple[float, float]:
    """(RSS, PSS) of `pids` summed, in MB, less the ledger's pages mapped in them: the
    measurement's own shared map, into which each job writes 8 bytes (a 10-minute soak at
    2,000 jobs/s touches 9.6 MB of it in the workers, growth that is not actorq's)."""
    import psutil

    rss = pss = 0
    skip = str(ledger.resolve())
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for mapping in psutil.Process(pid).memory_maps(grouped=True):
                if mapping.path != skip:
                    rss += mapping.rss
                    pss += mapping.pss
    return rss / 1e6, pss / 1e6


def row_memory(args: argparse.Namespace, result: Result) -> None:
    n = args.jobs
    soak_jobs = int(args.soak * args.soak_rate)
    ledger_path = args.workdir / "ledger"
    ledger = Ledger.create(ledger_path, n + soak_jobs + 1)  # the load, the soak, the warm-up job
    node = None
    try:
        node = _started_node(args, ledger, ledger_path, n + soak_jobs)
        time.sleep(3.0)  # idle: the warm-up's work is over
        pids = node.node_pids()
        result.extra["processes"] = float(len(pids))
        result.extra["idle_rss_mb"], result.extra["idle_pss_mb"] = _memory(pids, ledger_path)
        peak = [0.0, 0.0]

        def sample() -> None:
            for k, value in enumerate(_memory(node.node_pids(), ledger_path)):
                peak[k] = max(peak[k], value)

        _run_producers(node, ledger_path, [(0, n)], 100, 0.0, args.timeout, sample)
        deadline = time.monotonic() + args.timeout
        while ledger.done_count(0, n) < n:
            sample()
            if time.monotonic() > deadline:
                raise TimeoutError(f"load: {n - ledger.done_count(0, n)} of {n} jobs had not run")
            time.sleep(0.1)
        result.extra["load_rss_mb"], result.extra["load_pss_mb"] = peak
        s = ledger.summary(n)
        first = min(v for v in ledger.enqueued_times(n) if v)
        result.e2e_per_s = n / ((s.last_done_ns - first) / 1e9)
        if args.soak:
            samples: list[float] = []
            next_at = [time.monotonic()]

            def soak_sample() -> None:
                if time.monotonic() >= next_at[0]:
                    next_at[0] += 5.0
                    samples.append(_memory(node.node_pids(), ledger_path)[0])

            _run_producers(node, ledger_path, [(n, soak_jobs)], 10, args.soak_rate, args.soak + args.timeout,
                           soak_sample)
            _wait_done(ledger, n + soak_jobs, args.timeout, "soak", first=n)
            samples.append(_memory(node.node_pids(), ledger_path)[0])
            result.extra.update(soak_seconds=float(args.soak), soak_rate=float(args.soak_rate),
                                soak_first_rss_mb=samples[0], soak_last_rss_mb=samples[-1],
                                soak_max_rss_mb=max(samples), soak_growth_mb=samples[-1] - samples[0])
    finally:
        _finish(result, ledger, n + soak_jobs, node)
    result.notes.append("RSS counts shared pages in every process; PSS divides them between the processes; "
                        "neither counts the pages of the bench's own ledger map")


# -- rows through the peers' driver ----------------------------------------------------------------
def row_batched(args: argparse.Namespace, result: Result) -> Result:
    return _phase(ActorQ, args, "sqlite-full", "drain", args.workdir, batch=100)


def row_nodes(args: argparse.Namespace, result: Result) -> Result:
    count = int(result.variant[len("nodes")])

    class Nodes(ActorQ):
        nodes = count
        history = HISTORY

    drain = _phase(Nodes, args, "postgresql", "drain", args.workdir / "drain", batch=100)
    e2e = _phase(Nodes, args, "postgresql", "e2e", args.workdir / "e2e")
    e2e.enqueue_per_s, e2e.drain_per_s = drain.enqueue_per_s, drain.drain_per_s
    e2e.lost += drain.lost
    e2e.duplicated += drain.duplicated
    e2e.strays += drain.strays
    e2e.remaining = None if drain.remaining is None or e2e.remaining is None else drain.remaining + e2e.remaining
    e2e.error = "; ".join(f"{name}: {r.error}" for name, r in (("drain", drain), ("e2e", e2e)) if r.error)
    e2e.notes += drain.notes + [f"enqueue_per_s, drain_per_s: a drain phase (enqueue_many of 100, then {count} "
                                "node(s) started); e2e: a separate producer, one Client.enqueue per job; "
                                "lost/duplicated: both phases"]
    return e2e


def row_rerun(args: argparse.Namespace, result: Result) -> None:
    import bench_recovery
    from actorq.testing import check_total_queue

    ns = argparse.Namespace(kills=args.kills, interval=1.0, processes=2, concurrency=8, prefetch=8, rate=200,
                            task_ms=50.0, seed=random.SystemRandom().randrange(2**32), pause=False, pause_for=None,
                            heartbeat_interval=None, heartbeat_timeout=None, synchronous="full",
                            drain_timeout=args.timeout, log_level="error")
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        run = runner.run(bench_recovery.run(ns))
    r = bench_recovery.analyse(run)
    check = check_total_queue(run.accepted, [e for e in run.entries if e.tag == "end"], run.succeeded)
    result.jobs = len(run.accepted)
    result.lost, result.duplicated = len(check.lost), len(check.duplicated)
    result.strays = len(check.unexpected)
    result.extra.update(kills=float(r["faults"]), interrupted=float(r["interrupted"]),
                        rerun_p50_s=r["rerun_p50"] / 1000, rerun_max_s=r["rerun_max"] / 1000,
                        reclaim_p50_s=r["reclaim_p50"] / 1000, never_rerun=float(len(run.unrerun)))
    if run.unrerun:
        result.error = f"{len(run.unrerun)} interrupted jobs never ran again"
    result.notes.append(f"bench_recovery.py: {run.settings}; {ns.rate} jobs/s of {ns.task_ms:g} ms, 2 workers x 8 "
                        f"slots, {ns.kills} SIGKILLs 1 s apart (seed {ns.seed}); lost/duplicated from its own "
                        "ledger: duplicates are jobs that finished and died before their ack left")


# -- shared ----------------------------------------------------------------------------------------
def _count(result: Result, ledger: Ledger, stop: int) -> None:
    s = ledger.summary(stop)
    result.lost, result.duplicated, result.strays = s.lost, s.duplicated, s.strays


def _finish(result: Result, ledger: Ledger, stop: int, node: ActorQ | None) -> None:
    """Stop the node, count the ledger after a grace period, read what is left, remove the journal."""
    try:
        if node is not None:
            time.sleep(0.5)  # a late duplicate would show
            node.stop_workers()
        _count(result, ledger, stop)
        if node is not None and not result.error:
            with contextlib.suppress(Exception):
                result.remaining = node.remaining()
    finally:
        if node is not None:
            node.teardown()
        ledger.close()


RUNNERS: dict[str, Callable[[argparse.Namespace, Result], Result | None]] = {
    "tell": row_tell, "producers4": row_producers, "batched": row_batched, "nodes1": row_nodes,
    "nodes2": row_nodes, "memory": row_memory, "rerun": row_rerun,
}
DURABILITY = ActorQ.classes  # variant -> durability class (peer.CLASSES)


def run_row(args: argparse.Namespace) -> Result:
    """Run `args.row` and return its result (an error is caught into ``error``)."""
    row = args.row
    variant = _variant(row)
    result = Result("actorq", row, "e2e", args.jobs, durability=ActorQ.variants[variant],
                    storage="PostgreSQL" if variant == "postgresql"
                    else f"SQLite WAL, synchronous={variant.split('-')[1].upper()}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    ActorQ.overrides = tuple(args.set)
    if args.set:
        result.notes.append("settings changed from the node's defaults: "
                            + ", ".join(f"{section}.{key}={value!r}" for section, key, value in args.set))
    try:
        out = RUNNERS[row.split("-", 1)[0]](args, result)
    except Exception as exc:  # reported, not raised: the harness prints it beside the row
        result.error = result.error or f"{type(exc).__name__}: {exc}"
        out = None
    if out is not None:  # a result of the peers' driver: this row's name and figures on it
        out.system, out.variant, out.storage = "actorq", row, result.storage
        out.phase = "drain" if row.startswith("batched") else "e2e"
        out.extra.update(result.extra)
        out.notes = result.notes + out.notes
        return out
    if row.startswith(("memory", "rerun")):
        result.phase = row.split("-", 1)[0]
    return result


def main(argv: list[str] | None = None) -> None:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="bench/peers/actorq_rows.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the rows as JSON: row, needs, what")
    p = sub.add_parser("run", help="run one row and write its result")
    p.add_argument("row", choices=list(ROWS))
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--out", type=Path, help="the result's JSON file (default: stdout)")
    p.add_argument("--pg-url", help="postgresql://... (the PostgreSQL rows)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a wait may take (default 300)")
    p.add_argument("--set", action="append", type=setting, default=[], metavar="SECTION.KEY=VALUE",
                   help="one setting of the nodes' topology, applied last (may be given several times), e.g. "
                        "--set workers.concurrency=256; default: the node's defaults (not the rerun row)")
    p.add_argument("--kills", type=int, default=5, help="rerun row: SIGKILLs (default 5)")
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                   help="memory row: a paced load this long after the peak, sampled every 5 s (default 0: none; "
                        "600 for the 10-minute check)")
    p.add_argument("--soak-rate", type=float, default=2000.0, help="memory row: the soak's jobs/s (default 2000)")
    args = parser.parse_args(argv)
    if args.command == "list":
        print(json.dumps([{"row": row, "needs": list(needs), "what": what, "class": DURABILITY[_variant(row)]}
                          for row, (needs, what) in ROWS.items()]))
        return
    if not 1 <= args.jobs <= 10_000_000:
        parser.error(f"--jobs: expected 1 to 10,000,000, got {args.jobs}")
    if "postgresql" in ROWS[args.row][0] and not (args.pg_url or "").startswith(bench_e2e.POSTGRES_SCHEMES):
        parser.error(f"{args.row} needs --pg-url postgresql://...")
    if not 1 <= args.kills <= 100:
        parser.error(f"--kills: expected 1 to 100, got {args.kills}")
    if args.soak < 0 or not 1 <= args.soak_rate <= 1_000_000:
        parser.error("--soak: expected seconds >= 0; --soak-rate: 1 to 1,000,000 jobs/s")
    text = json.dumps(asdict(run_row(args)))
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    adapter.exit_on_sigterm()
    main()
