"""Peer benchmark: Huey (SqliteHuey) on the no-op workload of bench_e2e.py.

Huey runs as it is deployed: its own consumer (``huey.bin.huey_consumer``) in
a subprocess with ``-k process -w 2`` (two forked worker processes), on a
fresh SQLite file in a temporary directory. Nothing crosses the network; the
only channel to the consumer is an inherited pipe.

Durability (see `make_huey`): WAL + ``synchronous=FULL``, the same as
actorq's default journal. Each worker reads both pragmas back from its own
connection at startup and reports them, so the figures state what was used.

How completion is observed: Huey's ``complete`` signal runs in the worker
right after a task finished; our handler writes one fixed 45-byte record
(kind, wall-clock time, task id) to the pipe with a single ``os.write`` (an
atomic write below PIPE_BUF, a few microseconds, next to the two fsync'd
SQLite commits Huey spends per task). The no-op task returns None and
Huey stores no result for None, so the task writes nothing to SQLite itself
and the measurement adds no SQLite traffic. A thread here collects the
records; times come from the records, so how quickly we read them does not
matter. At the end the storage's queue length is checked to be 0.

- end to end: the consumer runs (both workers reported ready), then N tasks
  are enqueued one by one (``huey.enqueue``: one committed transaction each);
  time = first enqueue to the last completion. Latency per task = its
  completion time minus the time just before its enqueue call.
- drain: N tasks are enqueued with no consumer running, then the consumer
  starts; the window opens when both workers reported ready and closes at the
  last completion; rate = completions inside the window / window.

    python bench/peer_huey.py --jobs 20000 --repeat 2

Requires ``pip install -r bench/requirements-peers.txt``. Figures vary
±20-40 % on shared machines: compare runs made together.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import huey as _huey_package
    from huey import SqliteHuey
    from huey import signals as huey_signals
except ImportError:  # compare.py still runs actorq's part and says how to install
    _huey_package = None

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the consumer imports this module by name from bench/
    sys.path.insert(0, str(HERE))
from stats import percentile  # noqa: E402

INSTALL_HINT = "pip install -r bench/requirements-peers.txt"
TASK_MODULE, TASK_NAME = "bench", "noop"
ENV_DB = "PEER_HUEY_DB"
ENV_REPORT_FD = "PEER_HUEY_REPORT_FD"
STALL_SECONDS = 15.0  # no completion for this long while waiting: give up early
DEFAULT_DELAY = 0.1  # huey's default initial polling delay (-d), seconds

# One report: kind (b"R" ready, b"C" complete, b"E" failed), wall time, 36-byte payload.
# 45 bytes < PIPE_BUF, so concurrent os.write calls from the workers never interleave.
_RECORD = struct.Struct("<cd36s")


def available() -> bool:
    """True when huey can be imported."""
    return _huey_package is not None


def huey_version() -> str:
    """The installed huey version, or ``"not installed"``."""
    return getattr(_huey_package, "__version__", "not installed") if _huey_package else "not installed"


def make_huey(filename: str, report_fd: int | None = None) -> tuple[SqliteHuey, Any]:
    """Build the benchmark's Huey app on `filename` and return ``(app, noop_task)``.

    Durability: ``SqliteStorage`` runs ``PRAGMA journal_mode=wal`` on every
    connection it opens (its default, passed explicitly here), and with
    ``fsync=True`` it runs ``PRAGMA synchronous=2`` (FULL). With WAL + FULL
    every commit (one per enqueue, one per dequeue) waits for an fsync of the
    WAL. actorq's journal defaults to the same: ``journal_mode=WAL`` and
    ``synchronous=FULL`` (``[journal] synchronous = "full"``). So both pay a
    durable WAL commit; actorq groups many jobs into one, Huey commits each
    operation on its own: that difference is what the figures measure.

    Args:
        filename: the SQLite file.
        report_fd: a pipe's write end; when given, the workers report startup
            (with the pragmas they read back), each completion and each failure.
    """
    if _huey_package is None:
        raise RuntimeError(f"huey is not installed: {INSTALL_HINT}")
    app = SqliteHuey(name="bench", filename=filename, journal_mode="wal", fsync=True)

    def noop() -> None:
        """Does nothing: measures the queue, not the work."""

    # Huey names a task "<module>.<name>": pin the module so the producer (maybe
    # __main__) and the consumer (which imports peer_huey) agree on "bench.noop".
    noop.__module__ = TASK_MODULE
    noop_task = app.task(name=TASK_NAME)(noop)

    if report_fd is not None:
        fd = report_fd

        def report(kind: bytes, payload: str) -> None:
            os.write(fd, _RECORD.pack(kind, time.time(), payload.encode()[:36]))

        @app.on_startup("peer-bench-ready")
        def ready() -> None:
            """Report that this worker runs, with the pragmas of its own connection."""
            journal_mode = app.storage.sql("pragma journal_mode", results=True)[0][0]
            synchronous = app.storage.sql("pragma synchronous", results=True)[0][0]
            report(b"R", f"{journal_mode}/{synchronous}")

        @app.signal(huey_signals.SIGNAL_COMPLETE)
        def completed(signal_name: str, task: Any, *args: Any) -> None:
            report(b"C", task.id)

        @app.signal(huey_signals.SIGNAL_ERROR, huey_signals.SIGNAL_CANCELED, huey_signals.SIGNAL_TIMEOUT,
                    huey_signals.SIGNAL_INTERRUPTED, huey_signals.SIGNAL_REVOKED, huey_signals.SIGNAL_EXPIRED)
        def failed(signal_name: str, task: Any, *args: Any) -> None:
            report(b"E", task.id)

    return app, noop_task


def _app_from_environment() -> SqliteHuey | None:
    """The consumer subprocess imports ``peer_huey.app``: built from its environment."""
    if _huey_package is None or ENV_DB not in os.environ:
        return None
    return make_huey(os.environ[ENV_DB], int(os.environ[ENV_REPORT_FD]))[0]


app = _app_from_environment()


class _Reports:
    """Collects the workers' fixed-size records from the pipe on a daemon thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.ready: list[tuple[float, str]] = []
        self.done: list[tuple[float, str]] = []
        self.failed: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._run, name="peer-huey-reports", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = bytearray()
        size = _RECORD.size
        while True:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return  # every write end closed: the consumer and its workers are gone
            buf += chunk
            whole = len(buf) - len(buf) % size
            for kind, ts, payload in _RECORD.iter_unpack(bytes(buf[:whole])):
                text = payload.rstrip(b"\0").decode()
                (self.done if kind == b"C" else self.ready if kind == b"R" else self.failed).append((ts, text))
            del buf[:whole]
            time.sleep(0.005)  # let records pile up: fewer wake-ups competing with the producer

    def join(self, timeout: float) -> bool:
        """Wait for end of file; True if the thread ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


class _Consumer:
    """Huey's consumer in a subprocess (own session), always stopped on exit.

    Args:
        db: the SQLite file.
        workdir: the subprocess's working directory (its log goes there too).
        workers: worker processes (``-w``), forked by the consumer (``-k process``).
        delay: the consumer's initial polling delay (``-d``).
    """

    def __init__(self, db: Path, workdir: Path, workers: int, delay: float) -> None:
        self.db = db
        self.workdir = workdir
        self.workers = workers
        self.delay = delay
        self.proc: subprocess.Popen[bytes] | None = None
        self.reports: _Reports | None = None
        self._read_fd = -1
        self._log_path = workdir / "consumer.log"

    def command(self) -> list[str]:
        """The consumer's command line: huey's own entry point, quiet logging (WARNING)."""
        return [sys.executable, "-m", "huey.bin.huey_consumer", "peer_huey.app",
                "-k", "process", "-w", str(self.workers), "-d", str(self.delay), "-q"]

    def __enter__(self) -> "_Consumer":
        read_fd, write_fd = os.pipe()
        self._read_fd = read_fd
        if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux: room for bursts of records
            try:
                fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass
        env = dict(os.environ)
        env[ENV_DB] = str(self.db)
        env[ENV_REPORT_FD] = str(write_fd)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
        try:
            with open(self._log_path, "wb") as log:
                self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env, pass_fds=(write_fd,),
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
        finally:
            os.close(write_fd)  # only the consumer and its workers hold the write end now
        self.reports = _Reports(read_fd)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the consumer's output (for error messages)."""
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _check(self, deadline: float, what: str) -> None:
        assert self.proc is not None and self.reports is not None
        if self.reports.failed:
            raise RuntimeError(f"huey: {len(self.reports.failed)} tasks failed; consumer output:\n{self.log_tail()}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"huey consumer exited with {self.proc.returncode} while {what}:\n{self.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"huey: deadline passed while {what}")

    def wait_ready(self, deadline: float) -> float:
        """Wait until every worker reported; return the last report's wall time."""
        assert self.reports is not None
        while len(self.reports.ready) < self.workers:
            self._check(deadline, "waiting for the workers to start")
            time.sleep(0.005)
        return max(ts for ts, _ in self.reports.ready)

    def wait_done(self, jobs: int, deadline: float) -> None:
        """Wait until `jobs` completions were reported."""
        assert self.reports is not None
        seen, progress_at = 0, time.monotonic()
        while (count := len(self.reports.done)) < jobs:
            self._check(deadline, f"waiting for completions ({count:,}/{jobs:,})")
            now = time.monotonic()
            if count != seen:
                seen, progress_at = count, now
            elif now - progress_at > STALL_SECONDS:
                raise TimeoutError(f"huey: no completion for {STALL_SECONDS} s ({count:,}/{jobs:,}); "
                                   f"consumer output:\n{self.log_tail()}")
            time.sleep(0.005)

    def pragmas(self) -> str:
        """What the workers' connections use, e.g. ``journal_mode=wal synchronous=2``."""
        assert self.reports is not None
        seen = sorted({text for _, text in self.reports.ready})
        return ", ".join("journal_mode={} synchronous={}".format(*s.split("/")) for s in seen)

    def stop(self) -> None:
        """Stop gracefully (SIGINT), then kill the consumer's process group; close the pipe."""
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            try:  # the group is the consumer's session: its forked workers must not outlive it
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.reports is not None and self.reports.join(2.0) and self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1


@dataclass(frozen=True)
class HueyRun:
    """One measurement.

    Attributes:
        mode: ``"end to end"`` or ``"drain"``.
        jobs: completions inside the timed window.
        seconds: the window.
        jobs_per_s: jobs / seconds.
        p50_ms, p99_ms: enqueue-to-completion latency (end to end only).
        pragmas: what the workers' SQLite connections reported.
        enqueue_jobs_per_s: enqueue-only rate of the prefill (drain only).
    """

    mode: str
    jobs: int
    seconds: float
    jobs_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    pragmas: str
    enqueue_jobs_per_s: float | None = None


def _enqueue(producer: SqliteHuey, noop: Any, jobs: int, deadline: float,
             stamps: dict[str, float] | None = None) -> None:
    """Enqueue `jobs` no-op tasks one by one (one committed transaction each)."""
    for i in range(jobs):
        task = noop.s()
        if stamps is not None:
            stamps[task.id] = time.time()
        producer.enqueue(task)
        if i % 500 == 0 and time.monotonic() > deadline:
            raise TimeoutError(f"huey: deadline passed while enqueuing ({i:,}/{jobs:,})")


def measure_end_to_end(jobs: int, workers: int = 2, delay: float = DEFAULT_DELAY, timeout: float = 90.0) -> HueyRun:
    """Enqueue `jobs` tasks while the consumer runs; time first enqueue to last completion."""
    workdir = Path(tempfile.mkdtemp(prefix="peer-huey-"))
    db = workdir / "huey.db"
    producer, noop = make_huey(str(db))  # creates the tables before the consumer starts
    deadline = time.monotonic() + timeout
    try:
        with _Consumer(db, workdir, workers, delay) as consumer:
            consumer.wait_ready(deadline)
            stamps: dict[str, float] = {}
            start = time.time()
            _enqueue(producer, noop, jobs, deadline, stamps)
            consumer.wait_done(jobs, deadline)
            assert consumer.reports is not None
            done = list(consumer.reports.done)
            pragmas = consumer.pragmas()
        left = producer.storage.queue_size()
        if left:
            raise RuntimeError(f"huey: {left} tasks still queued after {jobs:,} completions")
        end = max(ts for ts, _ in done)
        latencies = [(ts - stamps[task_id]) * 1000.0 for ts, task_id in done]
        return HueyRun("end to end", jobs, end - start, jobs / (end - start),
                       percentile(latencies, 50), percentile(latencies, 99), pragmas)
    finally:
        producer.storage.close()
        shutil.rmtree(workdir, ignore_errors=True)


def measure_drain(jobs: int, workers: int = 2, delay: float = DEFAULT_DELAY, timeout: float = 90.0) -> HueyRun:
    """Enqueue `jobs` tasks, then start the consumer; rate while both workers run until empty."""
    workdir = Path(tempfile.mkdtemp(prefix="peer-huey-"))
    db = workdir / "huey.db"
    producer, noop = make_huey(str(db))
    deadline = time.monotonic() + timeout
    try:
        t = time.monotonic()
        _enqueue(producer, noop, jobs, deadline)
        enqueue_rate = jobs / (time.monotonic() - t)
        producer.storage.close()
        with _Consumer(db, workdir, workers, delay) as consumer:
            opened = consumer.wait_ready(deadline)
            consumer.wait_done(jobs, deadline)
            assert consumer.reports is not None
            done = [ts for ts, _ in consumer.reports.done]
            pragmas = consumer.pragmas()
        left = producer.storage.queue_size()
        if left:
            raise RuntimeError(f"huey: {left} tasks still queued after {jobs:,} completions")
        counted = sum(1 for ts in done if ts >= opened)
        window = max(done) - opened
        return HueyRun("drain", counted, window, counted / window, None, None, pragmas, enqueue_rate)
    finally:
        producer.storage.close()
        shutil.rmtree(workdir, ignore_errors=True)


def describe(run: HueyRun) -> str:
    """One line for a measurement."""
    text = f"{run.jobs:,} jobs in {run.seconds:.2f} s = {run.jobs_per_s:,.0f} jobs/s"
    if run.p50_ms is not None and run.p99_ms is not None:
        text += f" | enqueue-to-done p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms"
    if run.enqueue_jobs_per_s is not None:
        text += f" | prefill enqueue {run.enqueue_jobs_per_s:,.0f} jobs/s"
    return text + f" | {run.pragmas}"


def main() -> None:
    """Print Huey's end-to-end and drain figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="consumer worker processes (-w)")
    parser.add_argument("--delay", type=float, default=DEFAULT_DELAY, help="consumer initial polling delay (-d)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=90.0, help="deadline of each measurement, seconds")
    args = parser.parse_args()
    if not available():
        print(f"huey is not installed: {INSTALL_HINT}")
        sys.exit(1)
    print(f"huey {huey_version()} SqliteHuey | Python {platform.python_version()} | SQLite {sqlite3.sqlite_version} "
          f"| {os.cpu_count()} CPUs | consumer -k process -w {args.workers} -d {args.delay} -q")
    for i in range(args.repeat):
        e2e = measure_end_to_end(args.jobs, args.workers, args.delay, args.timeout)
        print(f"run {i + 1} end to end: {describe(e2e)}")
        drain = measure_drain(args.jobs, args.workers, args.delay, args.timeout)
        print(f"run {i + 1} drain:      {describe(drain)}")


if __name__ == "__main__":
    main()
