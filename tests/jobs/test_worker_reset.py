"""A RESET that cancels a job before its first step must give its slot back.

Found by the C14 soak (seed 438351371): a job started in the same loop
iteration as the RESET was cancelled before its body ran, so the slot was
never released; new jobs waited in the backlog forever while the worker kept
heartbeating (their leases renewed for ever), and a graceful stop never ended.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from worker_support import acks_received, worker_on_router

from actorq import TaskRegistry
from actorq.jobs import wire
from actorq.jobs.task import encode_payload
from actorq.testing import eventually

registry = TaskRegistry()
ran: list[str] = []


@registry.task("reset.sleep")
async def sleep(seconds: float) -> None:
    ran.append("sleep")
    await asyncio.sleep(seconds)


async def test_a_job_cancelled_by_reset_before_its_first_step_frees_its_slot(tmp_path: Path) -> None:
    with worker_on_router(tmp_path, registry) as (worker, router):
        payload = encode_payload([0.01], {})
        worker._on_jobs([wire.JobMessage("job-a", 11, "reset.sleep", payload, 1, 20, "default")])  # not run yet
        worker._reset()  # in the same loop iteration: cancelled before its first step
        await eventually(lambda: worker.running == 0 and not worker.active, timeout=5,
                         message="the cancelled job's slot is free again")
        worker._on_jobs([wire.JobMessage("job-b", 12, "reset.sleep", payload, 1, 20, "default")])
        await eventually(lambda: ran == ["sleep"] and worker.running == 0, timeout=5,
                         message="the next job ran in that slot")
        worker.begin_stop()
        assert worker.done.done(), "a graceful stop ends"
        acks = acks_received(router, 2, wait_ms=1000)
        answered = [(job_id, "ok") for a in acks for job_id, _ in a.succeeded]
        answered += [(job_id, wire.RELEASE) for a in acks for job_id, _ in a.released]
        # the never-started job is answered (release), so the dispatcher counts its credit back
        assert ("job-a", wire.RELEASE) in answered and ("job-b", "ok") in answered, answered
