"""The benchmark's task for actorq: ``bench.record(i)`` records job ``i`` in the harness's ledger.

Imported by the worker processes of the nodes that `actorq.py` and `actorq_rows.py`
start (the topology names ``actorq_app:registry``; the file is copied beside the
topology, the harness's folder is on PYTHONPATH for ``ledger``).
"""

from __future__ import annotations

import actorq
from ledger import record_job

registry = actorq.TaskRegistry()


@registry.task("bench.record")
async def record(i: int) -> None:
    """The workload every system runs: record that job `i` ran."""
    record_job(i)
