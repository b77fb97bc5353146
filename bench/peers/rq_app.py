"""The task RQ's work horses import (the job names ``rq_app.noop``).

Its body is the shared workload, ``record_job(i)``.
"""

from __future__ import annotations

from ledger import record_job


def noop(i: int) -> None:
    """The workload: record that job ``i`` ran."""
    record_job(i)
