"""Names that cross the wire are refused where the job is made: empty, too long, or not UTF-8 (G11, G12).

A job id, task name, queue name or unique key longer than the wire allows
(`actorq.jobs.wire.MAX_NAME_CHARS`), or holding an unpaired surrogate (as
``os.fsdecode`` makes from a non-UTF-8 file name), would be refused by the
dispatcher or by the journal's encoder far from the producer. Every producer
gets a `ValueError` at the call instead, naming what was wrong.
"""

from __future__ import annotations

import os

import pytest

from actorq import Job, TaskRegistry
from actorq.jobs.wire import MAX_NAME_CHARS

LONG = "x" * (MAX_NAME_CHARS + 1)
SURROGATE = os.fsdecode(b"report-\xff.csv")  # 'report-\udcff.csv'


@pytest.mark.parametrize(("job", "queue", "message"), [
    (Job(LONG), None, "task name may have at most 255 characters, got 256"),
    (Job(SURROGATE), None, "task name must be valid UTF-8"),
    (Job(""), None, "task name must be a non-empty string"),
    (Job("t", id=LONG), None, "job id may have at most 255 characters"),
    (Job("t", unique_key=LONG), None, "unique_key may have at most 255 characters"),
    (Job("t", unique_key=SURROGATE), None, "unique_key must be valid UTF-8"),
    (Job("t"), LONG, "queue name may have at most 255 characters"),
    (Job("t"), SURROGATE, "queue name must be valid UTF-8"),
    (Job("t"), "", "queue name must be a non-empty string"),
])
def test_a_name_the_wire_cannot_carry_is_refused_where_the_job_is_made(job: Job, queue: str | None,
                                                                        message: str) -> None:
    with pytest.raises(ValueError, match=message):
        job.to_new_job(queue)


def test_the_longest_names_are_accepted() -> None:
    name = "n" * MAX_NAME_CHARS
    row = Job(name, id=name, unique_key=name).to_new_job(name)
    assert (row.task, row.id, row.queue, row.unique_key) == (name, name, name, name)


def test_a_task_declaring_a_queue_the_wire_cannot_carry_is_refused_at_registration() -> None:
    registry = TaskRegistry()
    with pytest.raises(ValueError, match="queue name may have at most 255 characters"):
        registry.task("t", queue=LONG)
    with pytest.raises(ValueError, match="task name must be valid UTF-8"):
        registry.task(SURROGATE)
