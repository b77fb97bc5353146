"""Retention under a steady load: does the journal stay the same size once jobs are pruned?

A real ``actorq run`` node on a fresh SQLite file (``synchronous=FULL``, the
default), with ``[journal] retain_succeeded`` set to ``--retain`` seconds (60 by
default), runs no-op jobs that a producer thread in this script sends at a paced
``--rate`` (5,000 jobs/s by default) through ``actorq.Client`` (via the node,
the Client's default on SQLite: one request of ``rate / 50`` jobs every 20 ms,
open loop: a late request goes at once, with the jobs it owes).

Every ``--sample`` seconds (10 by default) it samples the journal's size on disk
(the database file and its WAL), the rows in it, and the jobs sent and done so
far; at the end it prints the series, the rate reached (jobs sent and jobs
succeeded per second: the machine may be shared, so the rate asked is not the
rate reached), and whether the size stayed flat after the first retention
window: from the first sample one window plus two upkeeps after the start to
the last one, the size grew by at most 10 %.

Without pruning, the journal grows by about the same amount every window
forever; with it, the database file grows until it holds one window of jobs,
then SQLite reuses the pages that pruned rows freed, and the WAL is reused
from its start after each checkpoint (truncated past ``wal_limit_mb``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_nodes import BenchError, NodeRun  # noqa: E402

import actorq  # noqa: E402
from actorq.jobs.node_file import NodeNotRunning, node_file_beside, read_node_file  # noqa: E402

TASK = "bench.noop"  # bench_tasks.py: an async no-op
TICK = 0.02  # seconds between the producer's requests
FLAT_GROWTH = 0.10  # "flat": the size grows by at most this share after the first window
UPKEEP = 5.0  # seconds between the node's upkeep runs (25 polls of the default 0.2 s)

EPILOG = """\
examples:
  python bench/bench_retention.py                                  # 10 minutes at 5,000 jobs/s, retention 60 s
  python bench/bench_retention.py --seconds 120 --rate 1000 --retain 20

The node, its topology and journal live in a temporary directory, removed at the
end (also on Ctrl-C or failure; the node is stopped first). Progress goes to
stderr at each sample; the series and the verdict go to stdout.
"""


def positive(kind: type) -> "argparse._ActionType":  # type: ignore[name-defined]
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=positive(float), default=600.0,
                        help="how long the producer runs (default 600: ten minutes)")
    parser.add_argument("--rate", type=positive(float), default=5000.0, help="jobs/s asked (default 5000)")
    parser.add_argument("--retain", type=positive(float), default=60.0,
                        help="[journal] retain_succeeded, in seconds (default 60)")
    parser.add_argument("--sample", type=positive(float), default=10.0,
                        help="seconds between samples of the journal's size (default 10)")
    parser.add_argument("--processes", type=positive(int), default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=positive(int), default=128,
                        help="slots per worker process (default 128)")
    return parser


def topology(args: argparse.Namespace, journal: Path) -> str:
    return (
        '[node]\nname = "bench"\ntasks = ["bench_tasks:registry"]\nlog_level = "warning"\n'
        f'[journal]\nurl = "sqlite:///{journal}"\nsynchronous = "full"\nretain_succeeded = {args.retain!r}\n'
        f"[workers]\nprocesses = {args.processes}\nconcurrency = {args.concurrency}\nprefetch = {args.concurrency}\n"
    )


class Producer(threading.Thread):
    """Sends `rate` jobs/s in requests every `TICK` s, open loop, until `stop`."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(name="producer", daemon=True)
        self.client = actorq.Client(url)
        self.rate = rate
        self.sent = 0
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            while not self.stopped.is_set():
                owed = int((time.monotonic() - self.started_at) * self.rate) - self.sent
                if owed > 0:
                    count = min(owed, 1000)  # one request carries 1,000 jobs at most
                    self.client.enqueue_many([actorq.Job(TASK) for _ in range(count)])
                    self.sent += count
                if owed <= 1000:
                    self.stopped.wait(TICK)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.client.close()


def size_mb(journal: Path) -> tuple[float, float]:
    """(database file, WAL) sizes in MB."""
    def size(path: Path) -> float:
        try:
            return path.stat().st_size / 1e6
        except OSError:
            return 0.0
    return size(journal), size(Path(f"{journal}-wal"))


def rows(journal: Path) -> int:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute("SELECT count(*) FROM actorq_jobs").fetchone()[0]


def wait_for_node(node: NodeRun, journal: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node.check_alive()
        try:
            read_node_file(node_file_beside(journal))
            if node.lines():  # its first progress line: the workers are up
                return
        except NodeNotRunning:
            pass
        time.sleep(0.2)
    raise BenchError(f"the node did not start within {timeout:g} s:\n{node.tail()}")


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (and SIGINT in the background) stop the node and clean up too


def main() -> int:
    args = build_parser().parse_args()
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="actorq-retention-"))
    journal = workdir / "bench.db"
    shutil.copy(HERE / "bench_tasks.py", workdir / "bench_tasks.py")
    node = NodeRun.launch(workdir, "bench", topology(args, journal))
    producer: Producer | None = None
    series: list[tuple[float, float, float, int, int, int]] = []
    try:
        wait_for_node(node, journal)
        producer = Producer(f"sqlite:///{journal}", args.rate)
        producer.start()
        start = time.monotonic()
        print(f"bench_retention: SQLite synchronous=full, retain_succeeded {args.retain:g} s, asked "
              f"{args.rate:,.0f} jobs/s for {args.seconds:g} s, {args.processes} x {args.concurrency} slots, "
              f"{os.cpu_count()} CPUs", flush=True)
        next_sample = start
        while True:
            now = time.monotonic()
            if now >= next_sample:
                db, wal = size_mb(journal)
                lines = node.lines()
                done = lines[-1].succeeded if lines else 0
                sample = (now - start, db, wal, rows(journal), producer.sent, done)
                series.append(sample)
                print(f"  t={sample[0]:5.0f} s  db {db:7.1f} MB  wal {wal:6.1f} MB  total {db + wal:7.1f} MB  "
                      f"rows {sample[3]:>9,}  sent {sample[4]:>9,}  succeeded {done:>9,}", file=sys.stderr, flush=True)
                next_sample += args.sample
                if now - start >= args.seconds:
                    break
            if producer.error is not None:
                raise BenchError(f"the producer failed: {producer.error!r}")
            node.check_alive()
            time.sleep(min(0.5, max(0.0, next_sample - time.monotonic())))
        producer.stopped.set()
        producer.join()
        elapsed = time.monotonic() - start
        report(args, series, producer.sent / elapsed, series[-1][5] / elapsed)
        return 0
    except BenchError as exc:
        print(f"bench_retention: {exc}", file=sys.stderr)
        return 1
    finally:
        if producer is not None:
            producer.stopped.set()
            producer.join(10)
        node.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(args: argparse.Namespace, series: list[tuple[float, float, float, int, int, int]],
           sent_rate: float, done_rate: float) -> None:
    print(f"{'t (s)':>6}  {'db MB':>7}  {'wal MB':>7}  {'total MB':>8}  {'rows':>9}  {'sent':>9}  {'succeeded':>9}")
    for t, db, wal, count, sent, done in series:
        print(f"{t:6.0f}  {db:7.1f}  {wal:7.1f}  {db + wal:8.1f}  {count:9,}  {sent:9,}  {done:9,}")
    print(f"rate reached: {sent_rate:,.0f} jobs/s sent, {done_rate:,.0f} jobs/s succeeded "
          f"(asked {args.rate:,.0f}; on a shared machine these may fall short)")
    settle = args.retain + 2 * UPKEEP
    steady = [s for s in series if s[0] >= settle]
    if len(steady) < 2:
        print(f"flat after the first retention window: (not enough samples after {settle:g} s; run longer)")
        return
    first, last = steady[0][1] + steady[0][2], steady[-1][1] + steady[-1][2]
    peak = max(s[1] + s[2] for s in steady)
    growth = (last - first) / first if first else math.inf
    rows_steady = [s[3] for s in steady]
    print(f"after {settle:g} s (one window plus two upkeeps): total {first:.1f} MB -> {last:.1f} MB "
          f"({growth:+.1%}), peak {peak:.1f} MB; rows {min(rows_steady):,} to {max(rows_steady):,} "
          f"(one window at the rate reached: about {done_rate * args.retain:,.0f})")
    print(f"flat after the first retention window: {'yes' if growth <= FLAT_GROWTH else 'NO'} "
          f"(grew {growth:+.1%}; flat means at most {FLAT_GROWTH:+.0%})")


if __name__ == "__main__":
    sys.exit(main())
