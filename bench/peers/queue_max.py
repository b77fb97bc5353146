"""queue-max 0.2 (SQLite shards), as the benchmark runs it.

Set-up (its production shape, sized for 2 cores):

- Storage: its default 6 shard files (``fila.db`` per shard) in a folder of the
  run's own (``--data-dir``), opened with queue-max's own pragmas: WAL,
  ``synchronous=NORMAL``.
- Workers: 2 processes of its CLI, ``queue-max --data-dir D --rate-limit R
  worker --function queue_max_app:record``, each with its default one worker
  thread (``--workers 1``) polling every 1 s when the queue is empty. Stopped
  with SIGINT, the signal its CLI handles (it stops its workers and exits).
- Rate limiting, on by default at 160 jobs a minute per process (a token per
  popped job), is raised to 10^9 a minute (it cannot be turned off: the
  minimum is 1): the default would hold the benchmark to under 3 jobs/s per
  worker, which is the limiter's number, not the queue's.
- Producer: ``Queue(data_dir=D).enqueue({"i": i})`` (a random shard each
  job), and ``enqueue_batch([{"payload": {"i": i}}, ...])`` for a batch (one
  transaction per shard touched).

Durability: WAL with ``synchronous=NORMAL`` does not fsync at commit (only at
checkpoints), so an accepted job survives a crash of any process but not of
the machine: class ``process``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "harness"))  # importing peer takes bench/peers off the path

from peer import Adapter, main, spawn, stop_group  # noqa: E402

import sqlpeer as util  # noqa: E402


REQUIREMENTS = ["queue-max==0.2.0"]
RATE_LIMIT = 1_000_000_000  # jobs per minute per process: the limiter out of the way


class QueueMax(Adapter):
    name = "queue_max"
    variants = {"sqlite": "SQLite WAL, synchronous=NORMAL (its pragmas): no fsync at commit"}
    classes = {"sqlite": "process"}
    storage = "SQLite WAL, synchronous=NORMAL, 6 shard files"
    has_batch = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.workers = []
        self.queue = None
        self.data = Path(ctx.workdir).resolve() / "queue_max"

    def setup(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)

    def connect(self) -> None:
        from queue_max import Queue

        self.queue = Queue(data_dir=str(self.data), rate_limit=RATE_LIMIT)

    def enqueue(self, i: int) -> None:
        self.queue.enqueue({"i": i})

    def enqueue_batch(self, ids: Sequence[int]) -> None:
        self.queue.enqueue_batch([{"payload": {"i": i}} for i in ids])

    def start_workers(self) -> None:
        env, app = util.worker_env(self.ctx, ["queue_max_app.py"])
        cmd = [util.bin_of("queue-max"), "--data-dir", str(self.data), "--rate-limit", str(RATE_LIMIT),
               "worker", "--function", "queue_max_app:record"]
        logs = [self.ctx.workdir / f"worker{n}.log" for n in range(self.ctx.processes)]
        for log in logs:
            self.workers.append(spawn(cmd, env, app, log))
        util.check_started(self.workers, logs)

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop_group(proc, signal.SIGINT)
        self.workers = []

    def remaining(self) -> int:
        stats = self.queue.get_stats()
        return stats["pending"] + stats["processing"]

    def teardown(self) -> None:
        if self.queue is not None:
            self.queue.close()
            self.queue = None


if __name__ == "__main__":
    main(QueueMax)
