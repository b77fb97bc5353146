"""actorq against Huey on SQLite, measured in the same run: durable jobs/s end to end and drain.

Both systems get the same N no-op jobs, 2 worker processes, a fresh SQLite
file in WAL mode with ``synchronous=FULL``, and log at WARNING.

- actorq, end to end: ``bench_e2e.run`` (a node embedded in this process
  ``tell``s N jobs while its workers run; time until N successes are
  committed, read from the writer's committed-ack counter).
- actorq, drain: N jobs committed through ``actorq.Client`` before the node
  starts; the window opens when both worker processes are connected and closes
  when the writer's committed-ack counter reaches N; rate = acks committed
  inside the window / window.
- Huey, end to end and drain: ``peer_huey.measure_end_to_end`` and
  ``peer_huey.measure_drain`` (its own consumer, ``-k process -w 2``, in a
  subprocess; see peer_huey.py for how completions are observed).

Ratios are actorq / Huey: above 1 means actorq did more jobs per second.
Rounds alternate which system goes first. Figures on shared machines vary
±20-40 %: only compare figures from one run of this script.

    python bench/compare.py --jobs 20000 --repeat 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_e2e  # noqa: E402  (puts the repository on sys.path and imports actorq)
import peer_huey  # noqa: E402

import actorq  # noqa: E402
from actorq._kernel.loop import new_event_loop  # noqa: E402
from actorq.journal.sqlite import SQLiteJournal  # noqa: E402
from actorq.node.config import parse_config  # noqa: E402

PROCESSES = 2  # worker processes, for both systems
CONCURRENCY = 256  # actorq slots per worker process (bench_e2e's default)
SYNCHRONOUS = "full"  # actorq's default journal durability
TASK = "bench.noop"  # bench_tasks.py: an async no-op


@dataclass
class Figures:
    """One system's measurements over all rounds."""

    system: str
    storage: str
    e2e: list[float] = field(default_factory=list)
    drain: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    durability: str = ""
    missing: str = ""  # why there are no figures

    @staticmethod
    def median(values: list[float]) -> float | None:
        """The median, or None without values."""
        return statistics.median(values) if values else None


# -- actorq --------------------------------------------------------------------------
def actorq_end_to_end(jobs: int, timeout: float) -> dict[str, float]:
    """bench_e2e's measurement with its defaults (2 processes x 256 slots, FULL, async no-op)."""
    args = argparse.Namespace(jobs=jobs, processes=PROCESSES, concurrency=CONCURRENCY, synchronous=SYNCHRONOUS,
                              sync=False, rate=0, progress=False)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(asyncio.wait_for(bench_e2e.run(args), timeout))


async def _actorq_drain(jobs: int, timeout: float) -> dict[str, float | str]:
    workdir = Path(tempfile.mkdtemp(prefix="actorq-drain-"))
    db = workdir / "drain.db"
    try:
        deadline = time.monotonic() + timeout
        with actorq.Client(f"sqlite:///{db}", synchronous=SYNCHRONOUS) as client:
            for first in range(0, jobs, 1000):
                client.enqueue_many([actorq.Job(TASK) for _ in range(min(1000, jobs - first))])
                if time.monotonic() > deadline:
                    raise TimeoutError("actorq drain: deadline passed while enqueuing")
        config = parse_config(
            {
                "node": {"name": "bench", "tasks": ["bench_tasks:registry"], "log_level": "warning"},
                "journal": {"url": f"sqlite:///{db}", "synchronous": SYNCHRONOUS},
                "workers": {"processes": PROCESSES, "concurrency": CONCURRENCY, "prefetch": CONCURRENCY},
            },
            source="compare",
            path=HERE / "topology.toml",
        )

        def check(node: actorq.Node, what: str) -> None:
            if node.failure:
                raise RuntimeError(f"actorq drain: node failed while {what}: {node.failure}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"actorq drain: deadline passed while {what}")

        async with actorq.Node(config) as node:
            assert node.runtime.writer is not None
            while node.progress().workers < PROCESSES:
                check(node, "waiting for the workers")
                await asyncio.sleep(0.005)
            start = time.monotonic()
            acked0 = node.runtime.writer.stats.jobs_acked
            commits0 = node.runtime.writer.stats.commits
            while node.runtime.writer.stats.jobs_acked < jobs:  # successes committed so far
                check(node, f"draining ({node.runtime.writer.stats.jobs_acked:,}/{jobs:,})")
                await asyncio.sleep(0.005)
            elapsed = time.monotonic() - start
            commits = node.runtime.writer.stats.commits - commits0
        # The node's writer opened its connection with this same class and arguments.
        journal = SQLiteJournal(db, synchronous=config.journal.synchronous)
        try:
            pragmas = f"journal_mode={journal.pragma('journal_mode')} synchronous={journal.pragma('synchronous')}"
        finally:
            journal.close()
        counted = jobs - acked0
        return {"jobs": counted, "seconds": elapsed, "jobs_per_s": counted / elapsed,
                "jobs_per_commit": counted / max(commits, 1), "pragmas": pragmas}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def actorq_drain(jobs: int, timeout: float) -> dict[str, float | str]:
    """Commit `jobs` through `actorq.Client`, then start a node and time it until all succeeded."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(_actorq_drain(jobs, timeout))


# -- the run -------------------------------------------------------------------------
@contextlib.contextmanager
def private_tempdir() -> Iterator[Path]:
    """Send every temporary file of this process (journals, ipc sockets) to one directory, removed after."""
    path = Path(tempfile.mkdtemp(prefix="actorq-compare-"))
    saved = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(path, ignore_errors=True)


def filesystem_of(path: Path) -> str:
    """The filesystem type holding `path` (from /proc/mounts), or ``"unknown"``."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def machine_facts(tmp: Path) -> list[str]:
    """Lines describing the machine and the software measured."""
    import msgpack
    import zmq

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"machine: {platform.platform()} | {os.cpu_count()} CPUs ({usable} usable) | load average {load} "
        f"| temp files on {filesystem_of(tmp)}",
        f"software: Python {platform.python_version()} ({platform.python_implementation()}) | SQLite "
        f"{sqlite3.sqlite_version} (one library for both systems) | actorq {actorq.__version__} "
        f"(pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, msgpack {'.'.join(map(str, msgpack.version))}) "
        f"| huey {peer_huey.huey_version()}",
    ]


def fmt(value: float | None, digits: int = 0) -> str:
    """A number with thousands separators, or ``-``."""
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``12.3x``, or ``n/a``."""
    return "n/a" if a is None or not b else f"{a / b:.1f}x"


def print_table(ours: Figures, peer: Figures, runs: int) -> None:
    """The summary: medians of all rounds, then the ratios actorq / peer."""
    header = ("system", "storage", "durable jobs/s end to end", "drain jobs/s", "e2e p50 ms", "e2e p99 ms")
    rows = []
    for f in (ours, peer):
        if f.missing:
            rows.append((f.system, f.storage, f.missing, "-", "-", "-"))
        else:
            rows.append((f.system, f.storage, fmt(f.median(f.e2e)), fmt(f.median(f.drain)),
                         fmt(f.median(f.p50), 1), fmt(f.median(f.p99), 1)))
    rows.append((f"ratio {ours.system.split()[0]} / {peer.system.split()[0]}", "",
                 ratio(ours.median(ours.e2e), peer.median(peer.e2e)),
                 ratio(ours.median(ours.drain), peer.median(peer.drain)), "", ""))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(f"\nsummary: median of {runs} round{'s' if runs > 1 else ''}")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def main() -> None:
    """Run both systems, round after round, and print per-round lines and the summary table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per measurement (default 20000)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows medians (default 1)")
    parser.add_argument("--timeout", type=float, default=90.0, help="deadline of each measurement, seconds")
    args = parser.parse_args()

    ours = Figures(f"actorq {actorq.__version__}", "SQLite WAL, synchronous=FULL, group commit")
    peer = Figures(f"huey {peer_huey.huey_version()}", "SqliteHuey WAL, synchronous=FULL, commit per op")
    huey_ok = peer_huey.available()
    if not huey_ok:
        peer.missing = "not installed"
        print(f"huey is not installed, so only actorq's figures follow. To install the peer, from the "
              f"repository root: {peer_huey.INSTALL_HINT}  (here: {sys.executable} -m {peer_huey.INSTALL_HINT})")

    with private_tempdir() as tmp:
        for line in machine_facts(tmp):
            print(line)
        print(f"workload: {args.jobs:,} no-op jobs per measurement | {PROCESSES} worker processes each "
              f"(actorq x {CONCURRENCY} async slots; huey consumer -k process -w {PROCESSES}) | logging at WARNING")
        print("note: figures on shared machines vary ±20-40 %; compare only figures from the same run.")

        def run_actorq(i: int) -> None:
            r = actorq_end_to_end(args.jobs, args.timeout)
            ours.e2e.append(r["jobs_per_s"])
            ours.p50.append(r["p50_ms"])
            ours.p99.append(r["p99_ms"])
            print(f"round {i} actorq end to end: {r['jobs']:,} jobs in {r['seconds']:.2f} s = "
                  f"{r['jobs_per_s']:,.0f} jobs/s | enqueue-to-ack p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms "
                  f"| {r['jobs_per_commit']:.1f} jobs per commit", flush=True)
            d = actorq_drain(args.jobs, args.timeout)
            ours.drain.append(float(d["jobs_per_s"]))
            ours.durability = str(d["pragmas"])
            print(f"round {i} actorq drain:      {d['jobs']:,} jobs in {d['seconds']:.2f} s = "
                  f"{d['jobs_per_s']:,.0f} jobs/s | {d['jobs_per_commit']:.1f} jobs per commit "
                  f"| {d['pragmas']}", flush=True)

        def run_huey(i: int) -> None:
            e = peer_huey.measure_end_to_end(args.jobs, PROCESSES, timeout=args.timeout)
            peer.e2e.append(e.jobs_per_s)
            peer.p50.append(e.p50_ms or 0.0)
            peer.p99.append(e.p99_ms or 0.0)
            print(f"round {i} huey end to end:   {peer_huey.describe(e)}", flush=True)
            d = peer_huey.measure_drain(args.jobs, PROCESSES, timeout=args.timeout)
            peer.drain.append(d.jobs_per_s)
            peer.durability = d.pragmas
            print(f"round {i} huey drain:        {peer_huey.describe(d)}", flush=True)

        for i in range(1, args.repeat + 1):
            order: list[Callable[[int], None]] = [run_actorq, run_huey] if huey_ok else [run_actorq]
            if i % 2 == 0:
                order.reverse()  # alternate who goes first: neither always gets the quieter machine
            for step in order:
                step(i)

    print_table(ours, peer, args.repeat)
    print(f"\ndurability, read back from SQLite connections: actorq journal: {ours.durability} "
          f"(config journal.synchronous={SYNCHRONOUS!r}, the default); huey workers: {peer.durability or 'n/a'} "
          f"(SqliteHuey(journal_mode='wal', fsync=True)). synchronous=2 is FULL.")
    print("ratios are actorq / huey: above 1.0x means actorq moved more durable jobs per second.")
    if not huey_ok:
        print(f"huey is not installed: {peer_huey.INSTALL_HINT}")


if __name__ == "__main__":
    main()
