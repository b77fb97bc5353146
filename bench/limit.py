"""The limit row: a bare pipeline with actorq's SQLite durability and nothing else.

Three processes, pyzmq and msgpack frames, no supervision, no retries, no leases::

    producer --jobs--> writer (SQLite) --jobs--> worker
        ^                 |   ^                    |
        +----enqueue-acks-+   +------done acks-----+

- the **writer** blocks for one message, then drains its socket with NOBLOCK
  reads (up to `DRAIN_MAX` messages), writes the new jobs (INSERT) and the
  completions (UPDATE) in one transaction and commits it (WAL,
  ``synchronous=FULL``: fsync'd), then acks the producer and dispatches the new
  jobs to the worker, one message each per commit;
- the **worker** runs ``ledger.record_job(i)`` for every job of a message and
  sends their ids back in one message; the writer journals them as done, so a
  job's completion is a durable write too;
- the **producer** sends jobs 0..N-1 with at most `--window` jobs unacked, one
  job per message (shape ``per-job``) or 100 per message (``batched``), writing
  each job's enqueue time in the ledger.

As in actorq, a job is journaled before its enqueue is acked and before it is
dispatched. The end to end rate is N over the time from the first enqueue to
the last run, read from the ledger as bench/harness/peer.py reads it::

    python bench/limit.py --shape per-job --jobs 100000 --workdir /tmp/limit --out limit.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import sys
import time
from dataclasses import asdict
from pathlib import Path

import msgpack
import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "harness"))

from ledger import ENV, Ledger, record_job  # noqa: E402
from peer import Result  # noqa: E402

JOBS, DONE = 0, 1  # message kinds: (JOBS, i or [i, ...]) and (DONE, [i, ...])
DRAIN_MAX = 4096  # messages the writer takes per commit at most
BATCH = 100  # jobs per message of the batched shape
WINDOWS = {"per-job": 1000, "batched": 10_000}  # default jobs in flight (unacked) per shape
SCHEMA = "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, task TEXT NOT NULL, args BLOB NOT NULL, " \
         "state INTEGER NOT NULL)"  # state 0: ready (dispatched), 1: done


def endpoints(workdir: Path) -> dict[str, str]:
    """The writer's three sockets: where jobs and done acks come in, where acks and jobs go out."""
    return {name: f"ipc://{workdir / name}.sock" for name in ("in", "acks", "work")}


def open_journal(path: Path) -> sqlite3.Connection:
    """The journal as actorq's SQLite journal opens it: WAL, synchronous=FULL."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(SCHEMA)
    return db


def writer(workdir: Path, commits: "multiprocessing.sharedctypes.Synchronized[int]") -> None:
    """The group-commit writer: drain, one transaction, commit, then ack and dispatch (counts its `commits`)."""
    db = open_journal(workdir / "journal.db")
    ctx = zmq.Context()
    ep = endpoints(workdir)
    inbox, acks, work = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH), ctx.socket(zmq.PUSH)
    inbox.bind(ep["in"])
    acks.bind(ep["acks"])
    work.bind(ep["work"])
    args = msgpack.packb(())
    while True:
        frames = [inbox.recv()]
        try:
            while len(frames) < DRAIN_MAX:
                frames.append(inbox.recv(zmq.NOBLOCK))
        except zmq.Again:
            pass
        new: list[int] = []
        done: list[int] = []
        for frame in frames:
            kind, ids = msgpack.unpackb(frame)
            if kind == JOBS:
                if isinstance(ids, int):
                    new.append(ids)
                else:
                    new.extend(ids)
            else:
                done.extend(ids)
        db.execute("BEGIN")
        if new:
            db.executemany("INSERT INTO jobs (id, task, args, state) VALUES (?, 'bench.record', ?, 0)",
                           [(i, args) for i in new])
        if done:
            db.executemany("UPDATE jobs SET state = 1 WHERE id = ?", [(i,) for i in done])
        db.execute("COMMIT")
        commits.value += 1
        if new:
            packed = msgpack.packb(new)
            acks.send(packed)
            work.send(packed)


def worker(workdir: Path, ledger: str) -> None:
    """The worker: run every job of a message, send their ids back in one message."""
    import os

    os.environ[ENV] = ledger
    ctx = zmq.Context()
    ep = endpoints(workdir)
    work, out = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    work.connect(ep["work"])
    out.connect(ep["in"])
    while True:
        ids = msgpack.unpackb(work.recv())
        for i in ids:
            record_job(i)
        out.send(msgpack.packb((DONE, ids)))


def producer(workdir: Path, ledger_path: str, jobs: int, shape: str, window: int) -> None:
    """The producer: a warm-up job (slot N) run end to end, then jobs 0..N-1 with at most `window` unacked."""
    ledger = Ledger.open(ledger_path)
    ctx = zmq.Context()
    ep = endpoints(workdir)
    out, acks = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    out.connect(ep["in"])
    acks.connect(ep["acks"])
    out.send(msgpack.packb((JOBS, jobs)))
    acks.recv()
    while not ledger.count(jobs):  # the worker is up
        time.sleep(0.001)
    acked = sent = 0
    per = 1 if shape == "per-job" else BATCH
    while sent < jobs:
        while sent - acked >= window:  # wait for room
            acked += len(msgpack.unpackb(acks.recv()))
        try:
            while True:
                acked += len(msgpack.unpackb(acks.recv(zmq.NOBLOCK)))
        except zmq.Again:
            pass
        ids = range(sent, min(jobs, sent + per))
        now = time.monotonic_ns()
        for i in ids:
            ledger.mark_enqueued(i, now)
        out.send(msgpack.packb((JOBS, sent if per == 1 else list(ids))))
        sent += len(ids)
    while acked < jobs:
        acked += len(msgpack.unpackb(acks.recv()))
    ledger.close()
    out.close(linger=1000)


def journal_counts(path: Path) -> tuple[int, int]:
    """(jobs done, jobs not done) in the journal, read beside the writer."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    finally:
        db.close()
    return rows.get(1, 0), rows.get(0, 0)


def run(shape: str, jobs: int, workdir: Path, window: int | None = None, timeout: float = 300.0) -> Result:
    """One run of the pipeline in `workdir` (its journal and sockets); the processes are gone when it returns."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("journal.db", "journal.db-wal", "journal.db-shm"):
        (workdir / stale).unlink(missing_ok=True)
    open_journal(workdir / "journal.db").close()
    ledger_path = workdir / "ledger"
    ledger = Ledger.create(ledger_path, jobs + 1)  # slot N: the warm-up job
    result = Result("limit", shape, "e2e", jobs, batch=1 if shape == "per-job" else BATCH,
                    durability="fsync per group commit (WAL, synchronous=FULL), before the producer's ack",
                    storage=f"SQLite {sqlite3.sqlite_version} WAL, synchronous=FULL, no supervision")
    mp = multiprocessing.get_context("spawn")
    commits = mp.Value("q", 0, lock=False)
    procs = [mp.Process(target=writer, args=(workdir, commits), daemon=True),
             mp.Process(target=worker, args=(workdir, str(ledger_path)), daemon=True)]
    prod = mp.Process(target=producer, args=(workdir, str(ledger_path), jobs, shape, window or WINDOWS[shape]),
                      daemon=True)
    try:
        for proc in (*procs, prod):
            proc.start()
        deadline = time.monotonic() + timeout
        while True:  # every job ran and its completion is journaled (the warm-up job too)
            done, _ = journal_counts(workdir / "journal.db")
            if done >= jobs + 1:
                break
            for proc in (*procs, prod):
                if proc.exitcode not in (None, 0):
                    raise RuntimeError(f"{proc.name} exited with code {proc.exitcode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{jobs + 1 - done} of {jobs + 1} completions not journaled after {timeout:g} s")
            time.sleep(0.01)
        prod.join(timeout)
        s = ledger.summary(jobs)
        first = min(v for v in ledger.enqueued_times(jobs) if v)
        result.e2e_per_s = jobs / ((s.last_done_ns - first) / 1e9)
        lat = sorted(ledger.latencies_ns(jobs))
        result.p50_ms = lat[len(lat) // 2] / 1e6
        result.p99_ms = lat[min(len(lat) - 1, int(0.99 * len(lat)))] / 1e6
    except Exception as exc:  # reported in the result, as the adapters' driver does
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        time.sleep(0.2)  # a late duplicate would show
        for proc in (*procs, prod):
            proc.kill()
            proc.join()
        s = ledger.summary(jobs)
        result.lost, result.duplicated, result.strays = s.lost, s.duplicated, s.strays
        done, waiting = journal_counts(workdir / "journal.db")
        result.remaining = waiting
        result.extra["window"] = float(window or WINDOWS[shape])
        result.extra["jobs_per_commit"] = (jobs + 1) / max(1, commits.value)  # each job: an insert and an update
        ledger.close()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=("per-job", "batched"), required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", help="write the result (JSON) here instead of stdout")
    parser.add_argument("--window", type=int, default=None,
                        help=f"jobs in flight unacked (default {WINDOWS['per-job']} per job, "
                             f"{WINDOWS['batched']} batched)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 100_000_000:
        parser.error(f"--jobs: expected 1 to 100,000,000, got {args.jobs}")
    if args.window is not None and args.window < BATCH:
        parser.error(f"--window: expected at least {BATCH} jobs, got {args.window}")
    text = json.dumps(asdict(run(args.shape, args.jobs, Path(args.workdir), args.window, args.timeout)))
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
