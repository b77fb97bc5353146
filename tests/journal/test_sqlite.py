"""SQLite-only journal tests: every transition on a real file, pragmas, locking, errors.

ACCEPTANCE ids: B1 (state machine), B3 (lease batch bound, attempts bound),
B6 (idempotent enqueue), B8 (expiry, renewal, fencing), B9 (a crash counts as an
attempt), B11 (scheduled jobs are never leased early), B12 (dead jobs can be
inspected and retried), B13 (open-time pragmas, BEGIN IMMEDIATE, a reader process
never sees SQLITE_BUSY), B14 (one node per file), E7/E8 (errors that name the
file). The journal writer's group commit is checked at the end.

Time is an injected clock, never a sleep; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from actorq.errors import JournalError, JournalLocked
from actorq.jobs import journal_writer as jw
from actorq.journal import Failure, JobState, LeasedJob, NewJob, SQLiteJournal

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000.0


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(db_path: Path, clock: Clock) -> Iterator[SQLiteJournal]:
    j = SQLiteJournal(db_path, clock=clock)
    yield j
    j.close()


def new_job(job_id: str, *, queue: str = "q", priority: int = 0, run_at: float | None = None,
            max_attempts: int = 3, payload: bytes = b"\x92\x90\x80") -> NewJob:
    return NewJob(id=job_id, queue=queue, task="tests.noop", payload=payload, priority=priority,
                  run_at=run_at, max_attempts=max_attempts)


def state(journal: SQLiteJournal, job_id: str) -> JobState:
    info = journal.get(job_id)
    assert info is not None, f"job {job_id} is missing"
    return info.state


def lease_one(journal: SQLiteJournal, owner: str = "w1", lease_for: float = 30.0) -> LeasedJob:
    leased = journal.lease(["q"], owner, 1, lease_for)
    assert len(leased) == 1, leased
    return leased[0]


def fail(job: LeasedJob, error: str = "ValueError: boom", retry_at: float = T0 + 10,
         final_state: str | None = None) -> Failure:
    return Failure(job.id, job.lease_id, error, retry_at, final_state)


# -- B1: enqueue, lease, complete ---------------------------------------------------------


def test_b1_enqueue_ready_or_scheduled(journal: SQLiteJournal, clock: Clock) -> None:
    assert journal.enqueue([
        new_job("now"),
        new_job("past", run_at=T0 - 5),
        new_job("due-exactly", run_at=T0),
        new_job("future", run_at=T0 + 60),
    ]) == 4
    assert state(journal, "now") is JobState.READY
    assert state(journal, "past") is JobState.READY
    assert state(journal, "due-exactly") is JobState.READY
    assert state(journal, "future") is JobState.SCHEDULED
    info = journal.get("future")
    assert info is not None
    assert (info.attempts, info.max_attempts, info.run_at, info.lease_owner, info.errors) == (0, 3, T0 + 60, None, [])
    assert journal.counts() == {"q": {"ready": 3, "scheduled": 1}}
    assert journal.get("no-such-job") is None


def test_b3_lease_counts_attempt_and_returns_at_most_limit(journal: SQLiteJournal) -> None:
    journal.enqueue([new_job(f"j{n:02d}", priority=1 if n < 5 else 0) for n in range(10)])
    journal.enqueue([new_job("other", queue="other-queue")])
    first = journal.lease(["q"], "w1", 3, 30.0)
    assert len(first) == 3  # B3: never more than the limit
    # Lower priority first, then oldest id.
    assert sorted(j.id for j in first) == ["j05", "j06", "j07"]
    assert {j.attempt for j in first} == {1}
    assert len({j.lease_id for j in first}) == 1
    assert first[0].payload == b"\x92\x90\x80" and first[0].task == "tests.noop" and first[0].max_attempts == 3
    info = journal.get("j05")
    assert info is not None and info.state is JobState.LEASED and info.attempts == 1 and info.lease_owner == "w1"

    assert journal.lease(["q"], "w1", 0, 30.0) == []
    assert journal.lease([], "w1", 5, 30.0) == []
    # The selection honours priority; the order of the returned list is not promised.
    assert {j.id for j in journal.lease(["q"], "w2", 2, 30.0)} == {"j08", "j09"}
    rest = journal.lease(["q"], "w2", 100, 30.0)
    assert sorted(j.id for j in rest) == ["j00", "j01", "j02", "j03", "j04"]
    assert journal.lease(["q"], "w2", 100, 30.0) == []  # nothing ready is left
    assert [j.id for j in journal.lease(["q", "other-queue"], "w3", 5, 30.0)] == ["other"]
    assert journal.counts() == {"q": {"leased": 10}, "other-queue": {"leased": 1}}


def test_b3_attempts_never_exceed_max_attempts_check_constraint(journal: SQLiteJournal, db_path: Path) -> None:
    journal.enqueue([new_job("a", max_attempts=2)])
    raw = sqlite3.connect(db_path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            raw.execute("UPDATE actorq_jobs SET attempts = 3 WHERE id = 'a'")
    finally:
        raw.close()
    with pytest.raises(JournalError):  # a max_attempts below 1 is refused by the schema
        journal.enqueue([new_job("b", max_attempts=0)])
    assert journal.get("b") is None


def test_b1_complete_moves_leased_to_succeeded(journal: SQLiteJournal) -> None:
    journal.enqueue([new_job("a"), new_job("b")])
    a, b = journal.lease(["q"], "w1", 2, 30.0)
    assert journal.complete([(a.id, a.lease_id), (b.id, b.lease_id)]) == 2
    info = journal.get("a")
    assert info is not None and info.state is JobState.SUCCEEDED and info.lease_owner is None
    assert journal.complete([(a.id, a.lease_id)]) == 0  # already final: a second ack is refused
    assert journal.complete([]) == 0
    assert journal.cancel("a") is False
    assert journal.counts() == {"q": {"succeeded": 2}}


# -- B1/B12: fail, retry, dead, failed, release ------------------------------------------


def test_b1_fail_retries_with_backoff_then_goes_dead(journal: SQLiteJournal, clock: Clock) -> None:
    journal.enqueue([new_job("a", max_attempts=2)])
    first = lease_one(journal)
    assert journal.fail([fail(first, "ValueError: one", retry_at=T0 + 10)]) == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts, info.run_at, info.last_error) == (JobState.RETRY, 1, T0 + 10, "ValueError: one")
    assert info.lease_owner is None
    # B11/B12: a retry waits for its backoff; it is not leased before run_at.
    assert journal.lease(["q"], "w1", 10, 30.0) == []
    clock.now = T0 + 9.999
    assert journal.promote() == 0
    clock.now = T0 + 10
    assert journal.promote() == 1
    second = lease_one(journal)
    assert second.attempt == 2
    assert journal.fail([fail(second, "ValueError: two", retry_at=T0 + 100)]) == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts) == (JobState.DEAD, 2)  # attempts used up
    assert info.errors == ["ValueError: one", "ValueError: two"]
    assert journal.promote() == 0


def test_b1_fail_with_final_state_failed_or_dead(journal: SQLiteJournal) -> None:
    journal.enqueue([new_job("gave-up", max_attempts=5), new_job("unknown-task", max_attempts=5)])
    gave_up, unknown = journal.lease(["q"], "w1", 2, 30.0)
    assert journal.fail([
        fail(gave_up, "Discard: bad input", final_state="failed"),
        fail(unknown, "UnknownTask: tests.nope", final_state=JobState.DEAD),
    ]) == 2
    assert state(journal, "gave-up") is JobState.FAILED
    assert state(journal, "unknown-task") is JobState.DEAD
    assert journal.get("unknown-task").errors == ["UnknownTask: tests.nope"]  # type: ignore[union-attr]
    journal.enqueue([new_job("c")])
    c = lease_one(journal)
    with pytest.raises(ValueError, match="final_state"):
        journal.fail([fail(c, final_state="succeeded")])
    assert state(journal, "c") is JobState.LEASED  # the bad batch changed nothing


def test_b1_release_gives_the_attempt_back(journal: SQLiteJournal) -> None:
    journal.enqueue([new_job("a", max_attempts=1)])
    first = lease_one(journal)
    assert first.attempt == 1
    assert journal.release([(first.id, first.lease_id)]) == 1
    info = journal.get("a")
    assert info is not None and (info.state, info.attempts, info.lease_owner, info.errors) == (JobState.READY, 0, None, [])
    again = lease_one(journal, "w2")
    assert again.attempt == 1  # a max_attempts=1 job can still run: the release cost nothing
    assert journal.release([]) == 0


# -- B9: reclaim ---------------------------------------------------------------------------


def test_b9_reclaim_counts_the_crash_as_an_attempt_then_dead(journal: SQLiteJournal) -> None:
    journal.enqueue([new_job("a", max_attempts=2), new_job("b", max_attempts=2)])
    a = lease_one(journal, "worker-1")
    b = lease_one(journal, "worker-2")
    assert journal.reclaim("worker-1", "worker died (SIGKILL)") == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts, info.lease_owner) == (JobState.READY, 1, None)
    assert info.errors == ["worker died (SIGKILL)"] and info.last_error == "worker died (SIGKILL)"
    assert state(journal, "b") is JobState.LEASED  # another owner's lease is untouched
    assert journal.reclaim("worker-1", "worker died") == 0  # nothing left to reclaim

    again = lease_one(journal, "worker-3")
    assert again.id == a.id and again.attempt == 2
    assert journal.reclaim("worker-3", "worker died (SIGKILL)") == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts) == (JobState.DEAD, 2)  # B9: at max_attempts, dead
    assert info.errors == ["worker died (SIGKILL)", "worker died (SIGKILL)"]
    assert all("worker died" in e for e in info.errors)
    # The stale leases of the dead owners are fenced off.
    assert journal.complete([(a.id, a.lease_id), (again.id, again.lease_id)]) == 0
    assert journal.complete([(b.id, b.lease_id)]) == 1


def test_b9_reclaim_all_takes_every_owner(journal: SQLiteJournal) -> None:
    journal.enqueue([new_job("a"), new_job("b", max_attempts=1), new_job("c")])
    lease_one(journal, "old-node/1/x")
    lease_one(journal, "old-node/2/x")
    assert journal.reclaim_all("node restarted: old incarnation") == 2
    assert state(journal, "a") is JobState.READY
    assert state(journal, "b") is JobState.DEAD
    assert state(journal, "c") is JobState.READY  # was never leased: no attempt, no error
    assert journal.get("c").attempts == 0  # type: ignore[union-attr]
    assert journal.get("b").errors == ["node restarted: old incarnation"]  # type: ignore[union-attr]


def test_b9_reclaim_all_by_owner_prefix_treats_wildcards_literally(journal: SQLiteJournal) -> None:
    owners = ["n%1/10/a", "n%1/11/b", "nX1/12/c", "n_2/13/d", "na2/14/e", "n%1x/15/f"]
    journal.enqueue([new_job(f"job-{k}") for k in range(len(owners))])
    for owner in owners:
        lease_one(journal, owner)
    held = lambda: sorted(j.lease_owner for j in map(journal.get, [f"job-{k}" for k in range(len(owners))])  # noqa: E731
                          if j is not None and j.lease_owner is not None)
    # '%' and '_' are not wildcards: "n%1/" matches only owners that start with exactly that.
    assert journal.reclaim_all("node restarted", "n%1/") == 2
    assert held() == sorted(["n%1x/15/f", "n_2/13/d", "nX1/12/c", "na2/14/e"])
    assert journal.reclaim_all("node restarted", "n_2/") == 1
    assert held() == sorted(["n%1x/15/f", "nX1/12/c", "na2/14/e"])
    assert journal.reclaim_all("node restarted", "nobody/") == 0
    assert journal.reclaim_all("node restarted", "") == 3  # the empty prefix takes every owner
    assert held() == []


def test_b9_reclaim_keeps_the_leases_the_worker_still_holds(journal: SQLiteJournal) -> None:
    journal.enqueue([new_job(f"j{n}") for n in range(5)] + [new_job("other")])
    first = journal.lease(["q"], "w1", 2, 30.0)   # one lease id for these two
    second = journal.lease(["q"], "w1", 2, 30.0)  # and another for these
    third = journal.lease(["q"], "w1", 1, 30.0)
    theirs = journal.lease(["q"], "w2", 1, 30.0)
    kept = {first[0].lease_id, third[0].lease_id}
    # The worker re-announced holding `first` and `third`; the acks for `second` were lost.
    assert journal.reclaim("w1", "lease not held after dispatcher restart", keep=kept) == 2
    for job in second:
        info = journal.get(job.id)
        assert info is not None
        assert (info.state, info.attempts, info.errors) == (
            JobState.READY, 1, ["lease not held after dispatcher restart"])
    for job in first + third + theirs:
        assert state(journal, job.id) is JobState.LEASED
    # The kept leases are still current: their acks count.
    assert journal.complete([(j.id, j.lease_id) for j in first + third]) == 3
    assert journal.complete([(j.id, j.lease_id) for j in second]) == 0
    assert journal.reclaim("w1", "worker died", keep=kept) == 0
    assert journal.reclaim("w1", "worker died", keep={12345}) == 0  # holds nothing any more


def test_b9_reclaim_fails_tasks_declared_on_crash_fail(journal: SQLiteJournal) -> None:
    jobs = [NewJob("crash-fails", "q", "tests.fragile", b"", max_attempts=5),
            NewJob("crash-retries", "q", "tests.noop", b"", max_attempts=5),
            NewJob("crash-dead", "q", "tests.noop", b"", max_attempts=1),
            NewJob("fragile-expired", "q", "tests.fragile", b"", max_attempts=5)]
    journal.enqueue(jobs)
    by_id = {j.id: j for j in journal.lease(["q"], "w1", 3, 30.0)}
    assert set(by_id) == {"crash-fails", "crash-retries", "crash-dead"}
    assert journal.reclaim("w1", "worker died (killed)", fail_tasks={"tests.fragile", "tests.other"}) == 3
    expected = {"crash-fails": JobState.FAILED, "crash-retries": JobState.READY, "crash-dead": JobState.DEAD}
    for job_id, final in expected.items():
        info = journal.get(job_id)
        assert info is not None
        assert (info.state, info.attempts, info.lease_owner) == (final, 1, None), job_id
        assert info.errors == ["worker died (killed)"] and info.last_error == "worker died (killed)"
    assert journal.promote() == 0 and state(journal, "crash-fails") is JobState.FAILED
    assert journal.retry_dead("crash-fails")  # a failed job can be retried by hand
    # reclaim_all and expire take the same list.
    assert {j.id for j in journal.lease(["q"], "node/1/x", 3, 30.0)} == {
        "crash-fails", "crash-retries", "fragile-expired"}
    assert journal.reclaim_all("node restarted", "node/", fail_tasks=["tests.fragile"]) == 3
    assert state(journal, "fragile-expired") is JobState.FAILED
    assert state(journal, "crash-fails") is JobState.FAILED
    assert state(journal, "crash-retries") is JobState.READY
    journal.lease(["q"], "w3", 1, -1.0)  # crash-retries, its lease already expired
    assert journal.expire(fail_tasks=["tests.noop"]) == 1
    info = journal.get("crash-retries")
    assert info is not None and (info.state, info.errors[-1]) == (JobState.FAILED, "lease expired")


# -- B8: expiry, renewal, fencing ----------------------------------------------------------


def test_b8_expire_and_renew_use_the_injected_clock(journal: SQLiteJournal, clock: Clock) -> None:
    journal.enqueue([new_job("a")])
    lease_one(journal, "w1", lease_for=30.0)  # expires at T0 + 30
    clock.now = T0 + 20
    assert journal.expire() == 0
    assert journal.renew(["w1"], 30.0) == 1  # now expires at T0 + 50
    clock.now = T0 + 45
    assert journal.expire() == 0
    assert state(journal, "a") is JobState.LEASED
    clock.now = T0 + 51
    assert journal.expire() == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts, info.errors) == (JobState.READY, 1, ["lease expired"])
    assert journal.renew([], 30.0) == 0


def test_b8_renew_by_a_stale_owner_is_rejected(journal: SQLiteJournal, clock: Clock) -> None:
    journal.enqueue([new_job("a")])
    lease_one(journal, "node/1/old", lease_for=10.0)
    clock.now = T0 + 11
    assert journal.expire() == 1
    current = lease_one(journal, "node/1/new", lease_for=10.0)  # expires at T0 + 21
    clock.now = T0 + 15
    assert journal.renew(["node/1/old"], 100.0) == 0  # the old owner holds nothing now
    clock.now = T0 + 22
    assert journal.expire() == 1  # the stale renewal did not extend the new lease
    assert journal.complete([(current.id, current.lease_id)]) == 0


def test_b8_fencing_rejects_and_counts_stale_leases(journal: SQLiteJournal, clock: Clock) -> None:
    journal.enqueue([new_job("a"), new_job("b")])
    stale_a, stale_b = journal.lease(["q"], "paused-worker", 2, 10.0)
    clock.now = T0 + 11
    assert journal.expire() == 2
    fresh_a, fresh_b = journal.lease(["q"], "live-worker", 2, 10.0)
    assert fresh_a.lease_id != stale_a.lease_id

    # The paused worker wakes up and answers with its old leases: all refused.
    assert journal.complete([(stale_a.id, stale_a.lease_id), (stale_b.id, stale_b.lease_id)]) == 0
    assert journal.fail([fail(stale_a)]) == 0
    assert journal.release([(stale_b.id, stale_b.lease_id)]) == 0
    assert journal.complete([(fresh_a.id, fresh_b.lease_id + 1)]) == 0  # an unknown lease id
    for job_id in ("a", "b"):
        info = journal.get(job_id)
        assert info is not None
        assert (info.state, info.attempts, info.lease_owner) == (JobState.LEASED, 2, "live-worker")
        assert info.errors == ["lease expired"]  # the stale fail left no error behind

    # A batch mixing stale and current acks: the return value counts the accepted ones.
    acks = [(stale_a.id, stale_a.lease_id), (fresh_a.id, fresh_a.lease_id)]
    accepted = journal.complete(acks)
    assert accepted == 1 and len(acks) - accepted == 1
    failures = [fail(stale_b), fail(fresh_b, retry_at=T0 + 100)]
    assert journal.fail(failures) == 1
    assert state(journal, "a") is JobState.SUCCEEDED
    assert state(journal, "b") is JobState.RETRY


# -- B11: scheduled jobs ---------------------------------------------------------------------


def test_b11_a_future_job_is_never_leased_early(journal: SQLiteJournal, clock: Clock) -> None:
    journal.enqueue([new_job("later", run_at=T0 + 60), new_job("much-later", run_at=T0 + 3600)])
    for now in (T0, T0 + 30, T0 + 59.999):
        clock.now = now
        assert journal.promote() == 0
        assert journal.lease(["q"], "w1", 10, 30.0) == []
        # No visibility clock runs on a scheduled job: expiry and reclaim do not touch it.
        assert journal.expire() == 0 and journal.reclaim_all("takeover") == 0
    info = journal.get("later")
    assert info is not None and (info.state, info.attempts, info.errors) == (JobState.SCHEDULED, 0, [])
    clock.now = T0 + 60
    assert journal.promote() == 1
    assert [j.id for j in journal.lease(["q"], "w1", 10, 30.0)] == ["later"]
    assert state(journal, "much-later") is JobState.SCHEDULED


# -- B1: cancel ------------------------------------------------------------------------------


def _job_in_every_state(journal: SQLiteJournal, clock: Clock) -> None:
    """Make one job per state, named after the state."""
    journal.enqueue([new_job("scheduled", run_at=T0 + 1000)])
    for name, max_attempts in (("retry", 3), ("leased", 3), ("succeeded", 3), ("failed", 3),
                               ("dead", 1), ("cancelled", 3), ("ready", 3)):
        journal.enqueue([new_job(name, max_attempts=max_attempts)])
        if name == "ready":
            continue
        if name == "cancelled":
            assert journal.cancel(name)
            continue
        job = lease_one(journal)
        if name == "retry":
            journal.fail([fail(job, retry_at=T0 + 1000)])
        elif name == "succeeded":
            journal.complete([(job.id, job.lease_id)])
        elif name == "failed":
            journal.fail([fail(job, final_state="failed")])
        elif name == "dead":
            journal.fail([fail(job)])
    for s in JobState:
        assert state(journal, s.value) is s


def test_b1_cancel_from_every_non_final_state_only(journal: SQLiteJournal, clock: Clock) -> None:
    _job_in_every_state(journal, clock)
    leased = journal.get("leased")
    assert leased is not None and leased.lease_owner == "w1"
    for s in JobState:
        cancelled = journal.cancel(s.value)
        if s in (JobState.SCHEDULED, JobState.READY, JobState.LEASED, JobState.RETRY):
            assert cancelled, s
            info = journal.get(s.value)
            assert info is not None and (info.state, info.lease_owner) == (JobState.CANCELLED, None)
        else:
            assert not cancelled, s
            assert state(journal, s.value) is s, f"cancel changed a {s} job"
    assert journal.cancel("cancelled") is False  # already final
    assert journal.cancel("no-such-job") is False
    # Cancelled jobs never come back.
    clock.now = T0 + 2000
    journal.promote()
    assert journal.expire() == 0 and journal.reclaim_all("takeover") == 0
    assert [j.id for j in journal.lease(["q"], "w", 100, 30.0)] == []


def test_b1_b8_cancel_of_a_leased_job_fences_the_worker(journal: SQLiteJournal) -> None:
    journal.enqueue([new_job("a"), new_job("b"), new_job("c")])
    a, b, c = sorted(journal.lease(["q"], "w1", 3, 30.0))
    for job in (a, b, c):
        assert journal.cancel(job.id)
    # The worker finishes later: its ack, failure, release and renewal are all stale.
    assert journal.complete([(a.id, a.lease_id)]) == 0
    assert journal.fail([fail(b)]) == 0
    assert journal.release([(c.id, c.lease_id)]) == 0
    assert journal.renew(["w1"], 30.0) == 0
    assert journal.reclaim("w1", "worker died") == 0
    for job in (a, b, c):
        info = journal.get(job.id)
        assert info is not None
        assert (info.state, info.attempts, info.errors) == (JobState.CANCELLED, 1, [])


# -- B12: retry_dead -------------------------------------------------------------------------


def test_b12_retry_dead_gives_fresh_attempts_and_keeps_history(journal: SQLiteJournal, clock: Clock) -> None:
    _job_in_every_state(journal, clock)
    for s in JobState:
        expected = s in (JobState.DEAD, JobState.FAILED)
        assert journal.retry_dead(s.value) is expected, s
    assert journal.retry_dead("no-such-job") is False
    info = journal.get("dead")
    assert info is not None and (info.state, info.attempts) == (JobState.READY, 0)
    assert state(journal, "failed") is JobState.READY
    assert state(journal, "succeeded") is JobState.SUCCEEDED

    clock.now = T0 + 1
    leased = {j.id: j for j in journal.lease(["q"], "w2", 100, 30.0)}
    assert leased["dead"].attempt == 1
    assert journal.fail([fail(leased["dead"], "ValueError: after retry")]) == 1
    info = journal.get("dead")
    assert info is not None and info.state is JobState.DEAD
    assert info.errors == ["ValueError: boom", "ValueError: after retry"]


def test_b12_errors_stay_in_the_order_they_happened_across_retry_dead(
        journal: SQLiteJournal, clock: Clock) -> None:
    journal.enqueue([new_job("x", max_attempts=2)])
    journal.fail([fail(lease_one(journal), "first", retry_at=T0)])
    journal.promote()
    journal.reclaim(lease_one(journal, "w2").lease_id and "w2", "worker died")
    assert state(journal, "x") is JobState.DEAD
    assert journal.retry_dead("x")
    journal.fail([fail(lease_one(journal, "w3"), "third", retry_at=T0)])  # attempt 1 again
    info = journal.get("x")
    assert info is not None and info.state is JobState.RETRY
    assert info.errors == ["first", "worker died", "third"]


# -- B6: idempotent enqueue ------------------------------------------------------------------


def test_b6_enqueue_of_the_same_id_is_a_no_op(journal: SQLiteJournal) -> None:
    assert journal.enqueue([new_job("a", payload=b"first")]) == 1
    # The confirmation was lost and the client re-sends: still one job, the first one.
    assert journal.enqueue([new_job("a", payload=b"second", queue="elsewhere")]) == 0
    assert journal.enqueue([new_job("b"), new_job("b"), new_job("c")]) == 2
    assert journal.counts() == {"q": {"ready": 3}}
    job = lease_one(journal)
    assert (job.id, job.payload) == ("a", b"first")
    journal.complete([(job.id, job.lease_id)])
    assert journal.enqueue([new_job("a")]) == 0  # a finished job is not resurrected
    assert state(journal, "a") is JobState.SUCCEEDED


def test_transaction_groups_transitions_atomically(journal: SQLiteJournal) -> None:
    with journal.transaction():
        journal.enqueue([new_job("a")])
        with journal.transaction():  # nested use joins the outer transaction
            journal.enqueue([new_job("b")])
    assert journal.counts() == {"q": {"ready": 2}}
    with pytest.raises(RuntimeError):
        with journal.transaction():
            journal.enqueue([new_job("c")])
            raise RuntimeError("caller failed")
    assert journal.get("c") is None  # rolled back with the block


# -- B13: pragmas, BEGIN IMMEDIATE, a concurrent reader process ---------------------------


@pytest.mark.parametrize(("level", "code"), [("full", 2), ("normal", 1), ("extra", 3)])
def test_b13_pragmas_read_back_after_open(db_path: Path, level: str, code: int) -> None:
    j = SQLiteJournal(db_path, synchronous=level, busy_timeout=2.5)
    try:
        assert j.pragma("journal_mode") == "wal"
        assert j.pragma("synchronous") == code
        assert j.pragma("busy_timeout") == 2500
    finally:
        j.close()
    j = SQLiteJournal(db_path)
    try:
        assert j.pragma("synchronous") == 2  # the documented default is FULL
        assert j.pragma("busy_timeout") > 0
    finally:
        j.close()
    with pytest.raises(ValueError):
        SQLiteJournal(db_path, synchronous="off")


def test_b13_every_write_transaction_is_begin_immediate(journal: SQLiteJournal, clock: Clock) -> None:
    statements: list[str] = []
    journal._conn.set_trace_callback(statements.append)  # observe the real statements sent
    try:
        _job_in_every_state(journal, clock)
        journal.reclaim("w1", "worker died")
        journal.reclaim_all("takeover")
        journal.expire()
        journal.renew(["w1"], 10.0)
        journal.promote()
        journal.retry_dead("dead")
        journal.release([("x", 1)])
    finally:
        journal._conn.set_trace_callback(None)
    begins = [s.strip().upper() for s in statements if s.strip().upper().startswith("BEGIN")]
    assert begins, "no transaction was traced"
    assert set(begins) == {"BEGIN IMMEDIATE"}
    writes = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert writes


READER = textwrap.dedent("""
    import json, sqlite3, sys
    path, target = sys.argv[1], int(sys.argv[2])
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0, isolation_level=None)
    reads = busy = 0
    seen = set()
    announced = False
    while True:
        try:
            (n,) = conn.execute("SELECT count(*) FROM actorq_jobs").fetchone()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED
                busy += 1
                if busy > 1000:
                    break
                continue
            raise
        reads += 1
        seen.add(n)
        if not announced:
            print("reading", flush=True)
            announced = True
        if n >= target:
            break
    print(json.dumps({"reads": reads, "busy": busy, "distinct": len(seen)}), flush=True)
""")


def test_b13_reader_process_never_sees_sqlite_busy(journal: SQLiteJournal, db_path: Path) -> None:
    """A reader in another process, with *no* busy timeout, reads while we commit 300 transactions.

    The payloads push the WAL past SQLite's 1,000-page auto-checkpoint, so the reader
    also runs across checkpoints.
    """
    transactions, per_tx = 300, 5
    payload = os.urandom(3000)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db_path), str(transactions * per_tx)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "reading", reader.stderr.read() if reader.stderr else ""
        for t in range(transactions):  # the reader is running: every commit overlaps its reads
            assert journal.enqueue([new_job(f"t{t:04d}-{k}", payload=payload) for k in range(per_tx)]) == per_tx
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    print("reader:", result, "wal bytes:", Path(f"{db_path}-wal").stat().st_size)
    assert result["busy"] == 0
    assert result["reads"] >= 2 and result["distinct"] >= 2  # it saw the writes land


# -- B14: one node per file ----------------------------------------------------------------


def test_b14_second_attach_node_on_the_same_file_is_refused(db_path: Path) -> None:
    first = SQLiteJournal(db_path)
    second = SQLiteJournal(db_path)
    try:
        first.attach_node()
        first.attach_node()  # idempotent for the holder
        with pytest.raises(JournalLocked) as info:
            second.attach_node()
        assert str(db_path) in str(info.value)
        assert isinstance(info.value, JournalError)
        first.close()  # closing releases the node lock
        second.attach_node()
    finally:
        first.close()
        second.close()


CHILD_ATTACH = textwrap.dedent("""
    import sys
    from actorq.errors import JournalLocked
    from actorq.journal import SQLiteJournal
    journal = SQLiteJournal(sys.argv[1])
    try:
        journal.attach_node()
    except JournalLocked as exc:
        print("LOCKED", exc, flush=True)
        sys.exit(3)
    print("ATTACHED", flush=True)
    sys.stdin.read()  # hold the lock until the parent says so (or kills us)
""")


def test_b14_attach_node_from_another_process_is_refused(db_path: Path) -> None:
    holder = SQLiteJournal(db_path)
    try:
        holder.attach_node()
        child = subprocess.run([sys.executable, "-c", CHILD_ATTACH, str(db_path)],
                               capture_output=True, text=True, timeout=30)
        assert child.returncode == 3, child.stderr
        assert child.stdout.startswith("LOCKED") and str(db_path) in child.stdout
    finally:
        holder.close()


def test_b14_lock_is_released_when_the_holding_process_dies(db_path: Path) -> None:
    SQLiteJournal(db_path).close()  # create the schema first
    child = subprocess.Popen([sys.executable, "-c", CHILD_ATTACH, str(db_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = SQLiteJournal(db_path)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ATTACHED"
        with pytest.raises(JournalLocked):
            journal.attach_node()
        child.kill()  # SIGKILL: no cleanup runs in the child
        child.wait(timeout=30)
        journal.attach_node()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        journal.close()


# -- errors that name the file: schema version, not a database, E8 permissions ---------------


def test_newer_schema_version_is_refused_naming_the_path(db_path: Path) -> None:
    SQLiteJournal(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(JournalError) as info:
        SQLiteJournal(db_path)
    assert str(db_path) in str(info.value) and "99" in str(info.value)


def test_e7_a_file_that_is_not_a_database_is_refused_naming_the_path(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database, just some text " * 200)
    with pytest.raises(JournalError) as info:
        SQLiteJournal(db_path)
    assert str(db_path) in str(info.value)


E8_CHILD = textwrap.dedent("""
    import ctypes, json, os, sys

    def drop_dac_override():
        # Root passes every permission check through CAP_DAC_OVERRIDE (and friends).
        # Drop them from this process only, so the file modes apply to us as to anyone.
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
        if libc.capget(ctypes.byref(header), data) != 0:
            return False
        mask = ~((1 << 1) | (1 << 2) | (1 << 3)) & 0xFFFFFFFF  # DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER
        data[0].effective &= mask
        data[0].permitted &= mask
        return libc.capset(ctypes.byref(header), data) == 0

    if os.geteuid() == 0 and not drop_dac_override():
        print(json.dumps({"skip": "running as root and could not drop CAP_DAC_OVERRIDE"}))
        sys.exit(0)
    probe = sys.argv[1]
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600))
        print(json.dumps({"skip": f"{probe}: a read-only directory is still writable here"}))
        sys.exit(0)
    except PermissionError:
        pass

    from actorq.errors import JournalError
    from actorq.journal import NewJob, SQLiteJournal
    results = {}
    for path in sys.argv[2:]:
        try:
            journal = SQLiteJournal(path)
        except JournalError as exc:
            results[path] = ["open", str(exc)]
            continue
        steps = []
        for step, run in (("attach_node", journal.attach_node),
                          ("enqueue", lambda: journal.enqueue([NewJob("e8", "q", "t", b"")]))):
            try:
                run()
                steps.append([step, "ok"])
            except JournalError as exc:
                steps.append([step, str(exc)])
                break
        journal.close()
        results[path] = steps[-1] if steps[-1][1] != "ok" else ["none", "no error"]
    print(json.dumps(results))
""")


def test_e8_journal_without_write_permission_names_the_path(tmp_path: Path) -> None:
    """E8: a read-only directory or DB file gives a JournalError naming the path and permission.

    Tests run as root here, and root ignores file modes; the child process drops
    CAP_DAC_OVERRIDE first so that the modes apply to it.
    """
    read_only_dir = tmp_path / "read-only-dir"
    read_only_dir.mkdir()
    existing_dir = tmp_path / "read-only-dir-existing-db"
    existing_dir.mkdir()
    writable_dir = tmp_path / "writable-dir"
    writable_dir.mkdir()
    existing_db = existing_dir / "journal.db"
    read_only_file = writable_dir / "read-only-file.db"
    for path in (existing_db, read_only_file):
        SQLiteJournal(path).close()
    for leftover in list(existing_dir.iterdir()) + list(writable_dir.iterdir()):
        if leftover.suffix != ".db":
            leftover.unlink()
    read_only_file.chmod(0o444)
    read_only_dir.chmod(0o555)
    existing_dir.chmod(0o555)
    new_db = read_only_dir / "journal.db"
    try:
        child = subprocess.run(
            [sys.executable, "-c", E8_CHILD, str(read_only_dir / "probe"), str(new_db), str(existing_db),
             str(read_only_file)],
            capture_output=True, text=True, timeout=30)
    finally:
        for d in (read_only_dir, existing_dir):
            d.chmod(0o755)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    print(result)
    # A new journal in a read-only directory, and an existing one there: refused at open.
    # A read-only file: refused no later than attach_node, before a node takes any work.
    expected_step = {str(new_db): "open", str(existing_db): "open", str(read_only_file): "attach_node"}
    for path, (step, message) in result.items():
        assert step == expected_step[path], (path, step, message)
        assert path in message, message
        assert "permission" in message, message


# -- the journal writer: group commit ------------------------------------------------------


def test_journal_writer_group_commit_batches_many_ops(db_path: Path) -> None:
    """1,000 enqueues submitted without awaiting commit in fewer than 1,000 transactions."""

    async def main() -> tuple[dict[str, Any], jw.WriterStats, list[tuple[Any, Any]], list[bool]]:
        loop = asyncio.get_running_loop()
        writer = jw.JournalWriter(lambda: SQLiteJournal(db_path), loop)
        await writer.start()
        callbacks: list[tuple[Any, Any]] = []
        visible_at_callback: list[bool] = []

        def on_done(result: Any, error: BaseException | None) -> None:
            callbacks.append((result, error))

        def on_first(result: Any, error: BaseException | None) -> None:
            # A job is accepted only once its group committed: another connection sees it.
            raw = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            try:
                found = raw.execute("SELECT count(*) FROM actorq_jobs WHERE id = ?", (result,)).fetchone()[0]
            finally:
                raw.close()
            visible_at_callback.append(found == 1)
            on_done(result, error)

        for n in range(1000):
            writer.enqueue(new_job(f"job-{n:04d}"), on_first if n in (0, 999) else on_done)
        counts = await writer.call(jw.CALL, lambda journal: journal.counts())
        await writer.stop()
        await writer.stop()  # idempotent
        return counts, writer.stats, callbacks, visible_at_callback

    counts, stats, callbacks, visible = asyncio.run(main())
    assert counts == {"q": {"ready": 1000}}
    assert len(callbacks) == 1000 and all(error is None for _, error in callbacks)
    assert sorted(result for result, _ in callbacks) == [f"job-{n:04d}" for n in range(1000)]
    assert visible == [True, True]
    assert stats.jobs_enqueued == 1000
    print(f"commits={stats.commits} max_group={stats.max_group}")
    assert stats.commits < 1000  # fewer commits than ops: the ops were grouped
    assert stats.max_group > 1
    check = SQLiteJournal(db_path)
    try:
        assert check.counts() == {"q": {"ready": 1000}}
    finally:
        check.close()
