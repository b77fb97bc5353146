"""A reclaimed job's recorded error says why its lease was taken back.

When a worker re-announces what it holds, its other leases go back to ready,
and the reason recorded for each depends on what made it re-announce: a RESET
(it had been silent past the heartbeat timeout), a WHO from a dispatcher that
restarted, or a WHO from one that never heard its hello. A real `Dispatcher` and
journal writer on SQLite, and a worker peer the test drives.
"""

from __future__ import annotations

from pathlib import Path

from dispatcher_support import Harness, Peer, dispatcher_on_sqlite, peer

from actorq.jobs import journal_writer as jw
from actorq.jobs import wire
from actorq.journal.protocol import LeasedJob
from actorq.testing import eventually

AFTER_RESET = "lease not held by its worker when it came back after a RESET (it was silent past the heartbeat timeout)"
AFTER_RESTART = "lease not held by its worker when it re-announced after a dispatcher restart"
NOT_KNOWN = "lease not held by its worker when it re-announced to a dispatcher that did not know it"


async def _lease_behind_its_back(harness: Harness, owner: str) -> LeasedJob:
    """Lease one ready job to `owner` without telling it: as a JOBS message that never arrived."""
    [job] = await harness.writer.call(jw.LEASE, jw.Lease(("default",), owner, 1, 300.0))
    return job


async def _errors_become(harness: Harness, job_id: str, errors: list[str]) -> None:
    async def recorded() -> bool:
        return (await harness.info(job_id)).errors == errors

    await eventually(recorded, timeout=30, message=f"job {job_id} recorded {errors}")


async def _jobs(worker: Peer) -> list[wire.JobMessage]:
    jobs = await worker.receive(wire.Jobs)
    assert isinstance(jobs, wire.Jobs)
    return list(jobs.jobs)


async def test_after_a_dispatcher_restart_a_lease_the_worker_does_not_hold_is_reclaimed_as_such(
        tmp_path: Path) -> None:
    async with dispatcher_on_sqlite(tmp_path) as harness:
        with peer(harness.endpoint) as worker:
            # one lease each (a worker keeps every job of a lease it names: the journal keeps by lease id)
            kept, = await harness.enqueue(1)
            worker.hello(credits=2)
            held = {job.id: job.lease_id for job in await _jobs(worker)}
            forgotten, = await harness.enqueue(1)
            held.update((job.id, job.lease_id) for job in await _jobs(worker))
            assert set(held) == {kept, forgotten} and held[kept] != held[forgotten]
            harness.restart()
            await worker.receive(wire.Who, between=worker.heartbeat)
            worker.hello(credits=1, held={kept: held[kept]})  # its ack of the other was lost with the old one
            await _errors_become(harness, forgotten, [AFTER_RESTART])
            assert (await harness.info(kept)).errors == []


async def test_after_a_reset_a_lease_the_worker_does_not_hold_is_reclaimed_as_such(tmp_path: Path) -> None:
    async with dispatcher_on_sqlite(tmp_path, heartbeat_timeout=0.5) as harness:
        with peer(harness.endpoint) as worker:
            running, = await harness.enqueue(1)
            worker.hello(credits=1)
            [job] = await _jobs(worker)
            assert job.id == running
            # silent past the heartbeat timeout: lost, its lease reclaimed as unresponsive
            await eventually(lambda: harness.dispatcher.stats.lost_workers == 1, timeout=30,
                             message="the silent worker was lost")
            await eventually(lambda: harness.dispatcher.stats.reclaimed == 1, timeout=30,
                             message="its job was reclaimed")
            [unresponsive] = (await harness.info(running)).errors
            assert unresponsive.startswith("worker unresponsive (no heartbeat for "), unresponsive
            await harness.writer.call(jw.CALL, lambda journal: journal.cancel(running))  # out of the way
            await harness.enqueue(1)
            behind = await _lease_behind_its_back(harness, worker.owner)
            await worker.receive(wire.Reset, between=worker.heartbeat)
            worker.hello(credits=1, held={}, reset=True)  # dropped everything it held
            await _errors_become(harness, behind.id, [AFTER_RESET])


async def test_a_worker_the_dispatcher_never_heard_from_is_told_who_and_its_other_leases_reclaimed(
        tmp_path: Path) -> None:
    async with dispatcher_on_sqlite(tmp_path) as harness:
        with peer(harness.endpoint) as worker:
            await harness.enqueue(1)
            behind = await _lease_behind_its_back(harness, worker.owner)
            # its first hello never reached this dispatcher, which has never restarted
            await worker.receive(wire.Who, between=worker.heartbeat)
            worker.hello(credits=1, held={})
            await _errors_become(harness, behind.id, [NOT_KNOWN])


async def test_a_job_sent_again_while_its_old_attempt_runs_on_frees_a_credit_for_each_answer(
        tmp_path: Path) -> None:
    """A worker lost while a sync attempt ran comes back holding it (it cannot be stopped); the
    reclaimed job can be leased to that same worker again. Each attempt's answer frees its own
    slot: the old one (fenced in the journal) and the new one. Matched by job id alone, the
    old answer took the new attempt's entry, and the new answer then freed nothing: one credit
    lost for good, and a worker of two slots that only ever got one job at a time."""
    async with dispatcher_on_sqlite(tmp_path, heartbeat_timeout=0.5) as harness:
        with peer(harness.endpoint) as worker:
            running, = await harness.enqueue(1)
            worker.hello(credits=2)
            [old] = await _jobs(worker)
            await eventually(lambda: harness.dispatcher.stats.reclaimed == 1, timeout=30,
                             message="the silent worker's job was reclaimed")
            await worker.receive(wire.Reset, between=worker.heartbeat)
            worker.hello(credits=1, held={running: old.lease_id}, reset=True)  # the sync attempt runs on
            [new] = await _jobs(worker)
            assert (new.id, new.lease_id != old.lease_id) == (running, True)
            for attempt in (old, new):  # the old one ends first: its ack is fenced, its slot freed
                for frame in wire.Ack.frames([(attempt.id, attempt.lease_id, "ok", None)], 1 << 20):
                    worker.sock.send(frame)
            await eventually(lambda: harness.dispatcher.stats.succeeded == 2, timeout=30,
                             message="both answers arrived")
            fresh = set(await harness.enqueue(2))
            got: set[str] = set()
            while got != fresh:  # both slots free: two jobs at once
                got.update(job.id for job in await _jobs(worker))
            assert (await harness.info(running)).state.value == "succeeded"
