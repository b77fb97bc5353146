"""Producers in other processes, one job per call, beside a running node: through the node or straight into the file.

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

The producers, the node, its workers and this script share the machine's
cores; the header says how many there are. Figures vary by +-20-40 % on
shared machines: compare only figures from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait as wait_for
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_e2e  # noqa: E402  (puts the repository on sys.path and imports actorq)
from bench_nodes import (  # noqa: E402
    BenchError, NodeRun, add_node_options, cpu_seconds, run_or_exit, spawn_producers,
)

import actorq  # noqa: E402
from actorq.jobs.node_file import NodeNotRunning, node_file_beside, read_node_file  # noqa: E402
from stats import percentile  # noqa: E402

TASK = "bench.noop"  # bench_tasks.py: an async no-op
SAMPLE_EVERY = 0.1  # seconds between samples of the journal's counts
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

Every configuration uses its own temporary directory (journal, topology file, the
node's log), removed afterwards, also on Ctrl-C or failure (the node and the
producers are stopped first). Progress goes to stderr every 2 s (--quiet: none);
results go to stdout.
"""


# -- the producer processes ----------------------------------------------------------------------
def produce(url: str, via_node: bool, synchronous: str, pipe: Connection) -> None:
    """A producer process: open a Client, say ``ready``, then run one ``("go", ...)`` command.

    ``("go", start, seconds, rate, offset)``: from Unix time `start`, for `seconds`, enqueue one
    job per call; `rate` > 0 paces the calls at `rate` per second from ``start + offset``.
    Answers ``("done", confirmed, first call's Unix time, latencies in seconds as bytes,
    errors, the first error's text)``; a failure outside the calls is sent as ``("error", text)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        with actorq.Client(url, via_node=via_node, synchronous=synchronous) as client:
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
    """`count` spawned producer processes, each with its own Client on `url`."""

    def __init__(self, url: str, count: int, via_node: bool, synchronous: str) -> None:
        self.pipes, self.procs, self.pids = spawn_producers(produce, (url, via_node, synchronous), count)
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
    """A read-only connection to the journal: counts by state, sampled while a configuration runs."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        self.samples: list[tuple[float, int, int, int]] = []  # (monotonic time, succeeded, ready, leased)

    def counts(self) -> dict[str, int]:
        """Jobs per state now."""
        return dict(self.db.execute("SELECT state, count(*) FROM actorq_jobs GROUP BY state").fetchall())

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


def topology(args: argparse.Namespace, journal: Path) -> str:
    """The node's topology file."""
    return (
        "[node]\n"
        'name = "bench"\n'
        'tasks = ["bench_tasks:registry"]\n'
        'log_level = "warning"\n'
        "[journal]\n"
        f'url = "sqlite:///{journal}"\n'
        f'synchronous = "{args.synchronous}"\n'
        "[workers]\n"
        f"processes = {args.processes}\n"
        f"concurrency = {args.concurrency}\n"
        f"prefetch = {args.concurrency}\n"
    )


def measure(args: argparse.Namespace, producers: int, via_node: bool, rate: float = 0.0) -> Result:
    """One configuration in a fresh directory; everything it started is stopped when it returns."""
    way = "via node" if via_node else "direct"
    label = f"{producers} producer{'s' if producers > 1 else ''}, {way}" + (f", paced {rate:,.0f}/s" if rate else "")
    result = Result(label, producers, via_node, rate)
    with contextlib.ExitStack() as cleanup:  # callbacks run in reverse: producers, then the node, then the files
        workdir = Path(tempfile.mkdtemp(prefix="actorq-producers-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        shutil.copy2(HERE / "bench_tasks.py", workdir / "bench_tasks.py")  # the node's workers import it
        journal = workdir / "bench.db"
        url = f"sqlite:///{journal}"
        node = NodeRun.launch(workdir, "bench", topology(args, journal))
        cleanup.callback(node.stop)
        deadline = time.monotonic() + args.timeout
        marker = warm_up(args, node, journal, url, deadline, label)
        sampler = Sampler(journal)
        cleanup.callback(sampler.close)
        if args.progress:
            print(f"  [{label}] node warmed up; starting {producers} producer processes", file=sys.stderr, flush=True)
        procs = Producers(url, producers, via_node, args.synchronous)
        cleanup.callback(procs.stop)
        groups = {"node": node.pids()[:1], "workers": node.pids()[1:], "producers": procs.pids}
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
                next_sample += SAMPLE_EVERY
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


def warm_up(args: argparse.Namespace, node: NodeRun, journal: Path, url: str, deadline: float, label: str) -> str:
    """Wait for the node's producer endpoint, run jobs until all its workers have worked, wait until idle.

    Returns the largest warm-up job id (the measured jobs have larger ids).
    """
    node_file = node_file_beside(journal)
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
    with actorq.Client(url) as client:
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
    parser.add_argument("--rate", type=float, default=5000.0,
                        help="jobs/s of the paced configuration, shared by its producers; 0: no paced run "
                             "(default 5000)")
    parser.add_argument("--rate-producers", type=positive(int), default=16, metavar="P",
                        help="producer processes of the paced configuration (default 16); each call waits for "
                             "its commit, so one producer paces at most 1 / latency calls per second")
    parser.add_argument("--synchronous", default="full", choices=["full", "normal", "extra"],
                        help="SQLite PRAGMA synchronous of the node and the producers (default full)")
    parser.add_argument("--e2e-jobs", type=positive(int), default=50_000, metavar="N",
                        help="jobs of the one bench_e2e.py run whose tell rate the ratios use (default 50000)")
    add_node_options(parser, concurrency=256, timeout=120.0, waits="a configuration's start or drain")
    return parser


def fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def run_all(args: argparse.Namespace) -> None:
    """The tell rate, every configuration, the table and the ratios."""
    cpus = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(f"actorq {actorq.__version__} | Python {platform.python_version()} | {cpus} CPUs ({usable} usable) | "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"journal SQLite {sqlite3.sqlite_version} | a fresh temporary file per configuration, WAL, "
          f"synchronous={args.synchronous} | node: `actorq run`, {args.processes} worker processes x "
          f"{args.concurrency} slots, async no-op task | each producer: one job per call for {args.seconds:g} s",
          flush=True)
    tell = tell_rate(args)
    print(f"bench_e2e.py, embedded node telling {args.e2e_jobs:,} jobs: {tell:,.0f} durable jobs/s", flush=True)
    plan = [(p, via) for p in args.producers for via in (True, False)]
    results: list[Result] = []
    for producers, via_node in plan:
        results.append(measure(args, producers, via_node))
    if args.rate > 0:
        results.append(measure(args, args.rate_producers, True, args.rate))
    print()
    width = max(len("configuration"), *(len(r.label) for r in results))
    header = (f"{'configuration':<{width}} {'confirmed':>10} {'errors':>6} {'durable jobs/s':>15} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'stall s':>7}   CPU s: node, workers, producers in wall s")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.label:<{width}} {r.confirmed:>10,} {r.errors:>6,} {fmt(r.jobs_per_s, ',.0f'):>15} "
              f"{fmt(r.p50_ms, '.2f'):>7} {fmt(r.p99_ms, '.2f'):>7} {r.stall_s:>7.1f}   {r.cpu['node']:4.1f}, "
              f"{r.cpu['workers']:4.1f}, {r.cpu['producers']:4.1f} in {r.cpu['wall']:.1f}")
    for r in results:
        for note in r.notes:
            print(f"note [{r.label}]: {note}")
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


def main() -> None:
    """Measure every configuration and print the table."""
    args = build_parser().parse_args()
    if args.rate < 0:
        build_parser().error("--rate must be 0 (no paced run) or positive")
    run_or_exit(run_all, args)


if __name__ == "__main__":
    main()
