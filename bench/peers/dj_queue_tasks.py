"""The task dj-queue's workers run: Django's ``@task`` whose body is the shared workload."""

from __future__ import annotations

from django.tasks import task
from ledger import record_job


@task
def record(i: int) -> None:
    """The benchmark's no-op job: note that job ``i`` ran."""
    record_job(i)
