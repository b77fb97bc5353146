"""The DBOS application the benchmark's worker processes run (``python dbos_app.py``).

One workflow, ``record``, whose body is the shared workload
(``ledger.record_job(i)``), and one queue, ``bench``, registered with DBOS's
defaults. The system database is named by ``$BENCH_DBOS_URL`` (PostgreSQL
or SQLite), and this process's executor id (one per process, as a
deployment of several processes needs, so that one process's start-up
recovery never takes the workflows another is running) by
``$BENCH_DBOS_EXECUTOR``. The process launches DBOS, which dequeues from the queue, and
runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import os
import signal
import threading

from dbos import DBOS
from ledger import record_job

APP = "bench"  # the application name the producer's DBOSClient must give too
QUEUE = "bench"
WORKFLOW = "record"


@DBOS.workflow(name=WORKFLOW)
def record(i: int) -> None:
    """The benchmark's no-op job: note that job ``i`` ran."""
    record_job(i)


def serve() -> None:
    """Launch DBOS on the queue and run until told to stop."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    DBOS(config={"name": APP, "system_database_url": os.environ["BENCH_DBOS_URL"], "log_level": "WARNING",
                 "executor_id": os.environ["BENCH_DBOS_EXECUTOR"]})
    DBOS.launch()
    DBOS.register_queue(QUEUE)
    stop.wait()
    DBOS.destroy()


if __name__ == "__main__":
    serve()
