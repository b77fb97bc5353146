"""A RESET that cancels a job before its first step must give its slot back.

Found by the C14 soak (seed 438351371): a job started in the same loop
iteration as the RESET was cancelled before its body ran, so the slot was
never released; new jobs waited in the backlog forever while the worker kept
heartbeating (their leases renewed for ever), and a graceful stop never ended.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from worker_support import MAX_FRAME, acks_received, worker_on_router

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


# -- a HELLO never holds a job whose ack has already gone (C14: in_flight 1 after the drain) -------
#
# Found by the C14 CI run: after two long pauses, the drained dispatcher still counted one job
# in flight. A RESET read in the loop iteration in which a job's last step ran, after a flush
# that already sent that job's ack (an earlier ack had scheduled it) and before the job's slot
# was freed: the HELLO announced the job as held. The dispatcher had handled the ack while the
# worker was lost (nothing to pop) and then registered the job from the HELLO; no other ack
# for it would come, so it stayed "in flight" and took one of the worker's credits for good.

gates: dict[str, asyncio.Event] = {}
finished: list[str] = []


@registry.task("reset.gated")
async def gated(name: str) -> None:
    await gates[name].wait()


@registry.task("reset.sync_gated")
def sync_gated(name: str) -> None:
    pass  # its hook below holds it after its ack


@registry.after
async def hold_after(job, outcome) -> None:  # noqa: ANN001
    if job.task == "reset.sync_gated":
        await gates["after"].wait()  # ack sent, the job still running its hook
    finished.append(job.id)


def _next_hello(router) -> wire.Hello:  # noqa: ANN001
    """The next HELLO on the router, past any other frame (it blocks: call it on a thread)."""
    while True:
        assert router.poll(5000), "no HELLO came"
        ident, frame = router.recv_multipart()
        message = wire.from_worker(frame, ident, MAX_FRAME)
        if isinstance(message, wire.Hello):
            return message


async def test_a_reset_in_the_iteration_that_answers_a_job_does_not_hold_it(tmp_path: Path) -> None:
    gates["x"] = asyncio.Event()
    loop = asyncio.get_running_loop()
    with worker_on_router(tmp_path, registry, concurrency=2) as (worker, router):
        assert (await asyncio.to_thread(_next_hello, router)).held is None  # the first HELLO
        worker._on_jobs([wire.JobMessage("job-x", 21, "reset.gated", encode_payload(["x"], {}), 1, 20, "default")])
        await eventually(lambda: "job-x" in worker.active, timeout=5, message="job-x is running")
        # one loop iteration, in this order: job-x's last step (its ack queued), a flush an
        # earlier ack had scheduled (job-x's ack leaves), then a RESET read from the socket
        gates["x"].set()
        loop.call_soon(worker._flush)
        loop.call_soon(worker._reset)
        acks = await asyncio.to_thread(acks_received, router, 1)
        assert [job_id for a in acks for job_id, _ in a.succeeded] == ["job-x"]
        hello = await asyncio.to_thread(_next_hello, router)
        assert hello.reset and hello.held == {}, hello  # its ack has gone: not held
        assert hello.credits == worker.capacity
        await eventually(lambda: not worker.active and worker.running == 0, timeout=5, message="job-x done")
        assert not worker.answered


@pytest.mark.parametrize("signal", ["reset", "who"])
async def test_a_job_answered_but_still_in_its_after_hook_is_not_held(tmp_path: Path, signal: str) -> None:
    gates["after"] = asyncio.Event()
    finished.clear()
    with worker_on_router(tmp_path, registry, concurrency=2) as (worker, router):
        assert (await asyncio.to_thread(_next_hello, router)).held is None
        worker._on_jobs([wire.JobMessage("job-h", 31, "reset.sync_gated", encode_payload(["h"], {}), 1, 20,
                                         "default"),
                         wire.JobMessage("job-r", 32, "reset.gated", encode_payload(["r"], {}), 1, 20, "default")])
        gates["r"] = asyncio.Event()
        acks = await asyncio.to_thread(acks_received, router, 1)  # job-h answered; its hook holds it
        assert [job_id for a in acks for job_id, _ in a.succeeded] == ["job-h"] and "job-h" in worker.active
        worker._on_message([wire.Reset.FRAME if signal == "reset" else wire.Who.FRAME])
        hello = await asyncio.to_thread(_next_hello, router)
        if signal == "who":  # job-r runs on, still held; job-h is not
            assert hello.held == {"job-r": 32} and hello.credits == worker.capacity - 1, hello
        else:  # the RESET cancelled job-r, whose answer comes after the HELLO: held until then
            assert hello.held == {"job-r": 32} and hello.reset, hello
        gates["after"].set()
        gates["r"].set()
        await eventually(lambda: not worker.active and worker.running == 0, timeout=5, message="both done")
        assert "job-h" in finished and not worker.answered
