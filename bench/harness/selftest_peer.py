"""A tiny queue on a SQLite file, for testing the harness itself (not a benchmarked system).

Variant ``exact`` runs every job once. Variant ``drops`` loses job 3 (its
worker deletes it without running it) and ``repeats`` runs job 5 twice, so
the harness's loss and duplicate counting can be checked on a real run with
real worker processes.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer import Adapter, main, spawn, stop_group  # noqa: E402


class SelfTest(Adapter):
    name = "selftest"
    variants = {"exact": "test only", "drops": "test only: loses job 3", "repeats": "test only: runs job 5 twice"}
    classes = {"exact": "process", "drops": "process", "repeats": "process"}
    storage = "SQLite (test queue)"
    has_batch = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.db = ctx.workdir / "queue.db"
        self.workers = []

    def setup(self) -> None:
        with sqlite3.connect(self.db) as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY AUTOINCREMENT, i INTEGER)")

    def connect(self) -> None:
        self.conn = sqlite3.connect(self.db, isolation_level=None, timeout=30)

    def enqueue(self, i: int) -> None:
        self.conn.execute("INSERT INTO q (i) VALUES (?)", (i,))

    def enqueue_batch(self, ids) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT INTO q (i) VALUES (?)", [(i,) for i in ids])
            self.conn.execute("COMMIT")

    def start_workers(self) -> None:
        for n in range(self.ctx.processes):
            self.workers.append(spawn([sys.executable, __file__, "work", str(self.db), self.ctx.variant],
                                      self.ctx.env(), self.ctx.workdir, self.ctx.workdir / f"worker{n}.log"))

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop_group(proc)
        self.workers = []

    def remaining(self) -> int:
        return self.conn.execute("SELECT count(*) FROM q").fetchone()[0]


def work(db: str, variant: str) -> None:
    from ledger import record_job

    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    while True:
        row = conn.execute("DELETE FROM q WHERE id = (SELECT min(id) FROM q) RETURNING i").fetchone()
        if row is None:
            time.sleep(0.002)
            continue
        if variant == "drops" and row[0] == 3:
            continue
        record_job(row[0])
        if variant == "repeats" and row[0] == 5:
            record_job(row[0])


if __name__ == "__main__":
    if sys.argv[1:2] == ["work"]:
        work(sys.argv[2], sys.argv[3])
    else:
        main(SelfTest)
