"""The function queue-max's workers run (``queue-max worker --function queue_max_app:record``).

Its body is the shared workload: ``ledger.record_job(i)`` with ``i`` from the
job's payload ``{"i": i}``.
"""

from __future__ import annotations

from typing import Any

from ledger import record_job


def record(payload: dict[str, Any]) -> None:
    """The benchmark's no-op job: note that job ``payload["i"]`` ran."""
    record_job(payload["i"])
