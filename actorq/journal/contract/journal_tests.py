"""The journal contract: one suite, run unchanged against SQLite, PostgreSQL and the memory journal.

Shipped with actorq so that another backend can run it too (see `actorq.journal.contract`);
actorq's own suite runs it from tests/journal/test_journal_contract.py.

Every test takes the ``journal`` (or ``backend``) fixture, parametrised over both
backends (see conftest.py), and uses only the `Journal` protocol; where a test
depends on what a backend allows, it asks the backend's declared capabilities
(``journal.shared``), never which backend it got. Backend-only checks live in
test_sqlite.py and test_postgres.py.

The journal stores the outcome of an attempt; it does not decide it. Where a
test takes jobs back (a dead owner, an expired lease), journal_support decides
as the job runtime does (`crash_outcome`) and the journal stores it with `fail`.

ACCEPTANCE ids: B1 (every transition, illegal ones rejected, cancel from each
non-final state), B2 (claim exclusivity across 4 processes), B3 (batch bound on
a large table with stale statistics; the attempts CHECK), B6 (idempotent
enqueue), B7 (unique keys), B8 (lease expiry, renewal, fencing), B9 (a crash
counts as an attempt), B10 (rescue of 10k leases next to leases that never
expire), B11 (scheduled jobs never leased early), B12 (retry backoff; dead jobs
inspected and retried), C16 (leadership of once-only duties), H11 (hostile
queue names are data).

Time is the real clock of each backend (SQLite: the process's, PostgreSQL: the
server's ``now()``): "expired" is a lease taken for a negative time, "future" is
an hour ahead. No test sleeps and then asserts, and none asserts a timing.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from actorq.errors import JournalError
from actorq.journal.contract import ContractBackend as Backend
from actorq.journal.contract import (
    HOUR, expire, fail, job_in_every_state, lease_one, new_job, reclaim, reclaim_all, state, wait_for,
)
from actorq.journal import TERMINAL_STATES, Failure, JobResult, JobState, Journal, KeptResult, NewJob
from actorq.journal.protocol import (
    LATEST_RUN_AT, LIVE_STATES, MAX_ATTEMPTS, MAX_PRIORITY, MIN_PRIORITY, Attempt, ScheduleRow, TaskDefaults,
)

pytestmark = pytest.mark.timeout(120)

# -- B1: enqueue, lease, complete ---------------------------------------------------------


def test_b1_enqueue_ready_or_scheduled(journal: Journal) -> None:
    now = time.time()
    assert journal.enqueue([
        new_job("now"),
        new_job("past", run_at=now - HOUR),
        new_job("future", run_at=now + HOUR),
    ]) == 3
    assert state(journal, "now") is JobState.READY
    assert state(journal, "past") is JobState.READY
    assert state(journal, "future") is JobState.SCHEDULED
    info = journal.get("future")
    assert info is not None
    assert (info.attempts, info.max_attempts, info.lease_owner, info.errors) == (0, 3, None, [])
    assert info.run_at == pytest.approx(now + HOUR, abs=1e-5)
    assert journal.counts() == {"q": {"ready": 2, "scheduled": 1}}
    assert journal.get("no-such-job") is None
    assert journal.enqueue([]) == 0


def test_b3_lease_counts_attempt_and_returns_at_most_limit(journal: Journal) -> None:
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


def test_b3_attempts_never_exceed_max_attempts_check_constraint(backend: Backend, journal: Journal) -> None:
    journal.enqueue([new_job("a", max_attempts=2)])
    with pytest.raises(backend.integrity_error()):
        backend.raw("UPDATE actorq_jobs SET attempts = 3 WHERE id = 'a'")
    with pytest.raises(JournalError):  # a max_attempts below 1 is refused by the schema
        journal.enqueue([new_job("b", max_attempts=0)])
    assert journal.get("b") is None
    # Leasing a job with no attempts left can't happen through the journal; forced, it is refused.
    backend.raw("UPDATE actorq_jobs SET attempts = 2 WHERE id = 'a'")
    with pytest.raises(JournalError):
        journal.lease(["q"], "w1", 1, 30.0)
    assert state(journal, "a") is JobState.READY


def test_b3_batch_bound_on_a_large_table_with_stale_statistics(backend: Backend, journal: Journal) -> None:
    backend.keep_statistics_stale()
    total = 20_000
    for start in range(0, total, 5_000):
        journal.enqueue([new_job(f"big-{n:06d}", priority=n % 3) for n in range(start, start + 5_000)])
    seen: set[str] = set()
    for limit in (1, 7, 100, 1_000, 3):
        leased = journal.lease(["q"], f"w-{limit}", limit, 30.0)
        assert len(leased) == limit  # exactly the limit: never more, and enough are ready
        ids = {j.id for j in leased}
        assert len(ids) == limit and not ids & seen
        seen |= ids
        assert {j.attempt for j in leased} == {1}
    assert journal.counts() == {"q": {"leased": len(seen), "ready": total - len(seen)}}


def test_b1_complete_moves_leased_to_succeeded(journal: Journal) -> None:
    journal.enqueue([new_job("a"), new_job("b")])
    a, b = journal.lease(["q"], "w1", 2, 30.0)
    assert journal.complete([(a.id, a.lease_id), (b.id, b.lease_id)]) == 2
    info = journal.get("a")
    assert info is not None and info.state is JobState.SUCCEEDED and info.lease_owner is None
    assert journal.complete([(a.id, a.lease_id)]) == 0  # already final: a second ack is refused
    assert journal.complete([]) == 0
    assert journal.cancel("a") is False
    assert journal.counts() == {"q": {"succeeded": 2}}


def test_payloads_are_bytes_and_names_are_data(journal: Journal) -> None:
    """H11: a queue or task name is a bound value, never SQL; payloads round-trip byte for byte."""
    hostile = "x'); DROP TABLE actorq_jobs;--"
    payload = bytes(range(256)) * 4
    journal.enqueue([NewJob("h", hostile, f"{hostile}.task", payload)])
    [job] = journal.lease([hostile], f"owner {hostile}", 5, 30.0)
    assert (job.queue, job.task, job.payload) == (hostile, f"{hostile}.task", payload)
    assert journal.counts() == {hostile: {"leased": 1}}
    assert reclaim_all(journal, "takeover", f"owner {hostile}") == 1
    assert journal.get("h").last_error == "takeover"  # type: ignore[union-attr]


# -- G12: a job's numbers at the columns' bounds ------------------------------------------


def test_g12_a_job_at_every_bound_is_stored_and_leased_in_priority_order(journal: Journal) -> None:
    journal.enqueue([
        new_job("last", priority=MAX_PRIORITY, max_attempts=MAX_ATTEMPTS),
        new_job("first", priority=MIN_PRIORITY, max_attempts=MAX_ATTEMPTS),
        new_job("year-9999", run_at=LATEST_RUN_AT),
    ])
    assert [j.id for j in journal.lease(["q"], "w1", 5, 30.0)] == ["first", "last"]
    info = journal.get("year-9999")
    assert info is not None and info.state is JobState.SCHEDULED and info.run_at == LATEST_RUN_AT
    assert journal.get("last").max_attempts == MAX_ATTEMPTS  # type: ignore[union-attr]


@pytest.mark.parametrize(("field", "value"), [
    ("priority", MAX_PRIORITY + 1), ("priority", MIN_PRIORITY - 1), ("priority", 2**70), ("priority", 1.5),
    ("priority", True), ("max_attempts", MAX_ATTEMPTS + 1), ("max_attempts", 2**70),
    ("run_at", math.nan), ("run_at", math.inf), ("run_at", -math.inf), ("run_at", LATEST_RUN_AT + 1),
])
def test_g12_a_number_no_column_holds_is_refused_where_the_job_is_made(field: str, value: object) -> None:
    # before: a priority of 2**70 reached SQLite as an OverflowError inside the batch, a run_at
    # of nan as "NOT NULL constraint failed", and 2**40 passed SQLite but not PostgreSQL's int4
    with pytest.raises(ValueError, match=f"job 'j': {field} must be"):
        NewJob("j", "q", "t", b"", **{field: value})  # type: ignore[arg-type]


# -- B1/B12: fail, retry, dead, failed, release ------------------------------------------


def test_b1_b12_fail_retries_after_backoff_then_goes_dead(journal: Journal) -> None:
    now = time.time()
    journal.enqueue([new_job("a", max_attempts=2), new_job("later", max_attempts=2)])
    later = lease_one(journal)
    first = lease_one(journal)
    assert {first.id, later.id} == {"a", "later"}
    if first.id != "a":
        first, later = later, first
    # B12: the retry is scheduled where the policy put it; a future one is not leased early.
    assert journal.fail([fail(first, "ValueError: one", retry_at=now - 1),
                         fail(later, "ValueError: not yet", retry_at=now + HOUR)]) == 2
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts, info.last_error, info.lease_owner) == (JobState.RETRY, 1, "ValueError: one", None)
    assert info.run_at == pytest.approx(now - 1, abs=1e-5)
    assert journal.get("later").run_at == pytest.approx(now + HOUR, abs=1e-5)  # type: ignore[union-attr]
    assert journal.lease(["q"], "w1", 10, 30.0) == []  # retry jobs wait for promotion
    assert journal.promote() == 1  # only the due one
    assert state(journal, "later") is JobState.RETRY
    second = lease_one(journal)
    assert (second.id, second.attempt) == ("a", 2)
    assert journal.fail([fail(second, "ValueError: two")]) == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts) == (JobState.DEAD, 2)  # attempts used up
    assert info.errors == ["ValueError: one", "ValueError: two"]
    assert journal.promote() == 0


def test_b1_fail_stores_failed_or_dead_as_given(journal: Journal) -> None:
    journal.enqueue([new_job("gave-up", max_attempts=5), new_job("unknown-task", max_attempts=5)])
    gave_up, unknown = sorted(journal.lease(["q"], "w1", 2, 30.0))
    assert journal.fail([
        fail(gave_up, "Discard: bad input", state=JobState.FAILED),
        fail(unknown, "UnknownTask: tests.nope", state=JobState.DEAD),
    ]) == 2
    assert state(journal, "gave-up") is JobState.FAILED
    assert state(journal, "unknown-task") is JobState.DEAD
    assert journal.get("unknown-task").errors == ["UnknownTask: tests.nope"]  # type: ignore[union-attr]
    assert journal.fail([]) == 0


def test_fail_stores_each_state_exactly_as_given(backend: Backend, journal: Journal) -> None:
    """The journal decides nothing: each outcome is stored as the caller decided it."""
    now = time.time()
    journal.enqueue([new_job(name, max_attempts=max_attempts, run_at=now - 60) for name, max_attempts in
                     (("to-ready", 2), ("to-retry", 1), ("to-dead", 5), ("to-failed", 5))])
    leased = {j.id: j for j in journal.lease(["q"], "w1", 4, HOUR)}
    outcomes = {"to-ready": (JobState.READY, now + HOUR),  # retry_at is ignored for READY
                "to-retry": (JobState.RETRY, now + 2 * HOUR),  # attempts used up, retried anyway
                "to-dead": (JobState.DEAD, None),  # attempts left, dead anyway
                "to-failed": (JobState.FAILED, None)}
    assert journal.fail([Failure(job_id, leased[job_id].lease_id, f"error of {job_id}", outcome, retry_at)
                         for job_id, (outcome, retry_at) in outcomes.items()]) == 4
    for job_id, (outcome, retry_at) in outcomes.items():
        info = journal.get(job_id)
        assert info is not None
        assert (info.state, info.attempts, info.lease_owner) == (outcome, 1, None), job_id
        assert info.errors == [f"error of {job_id}"] and info.last_error == f"error of {job_id}"
        expected_run_at = retry_at if outcome is JobState.RETRY else now - 60  # READY goes back at once
        assert info.run_at == pytest.approx(expected_run_at, abs=1e-5), job_id
        detail = journal.inspect(job_id)
        assert detail is not None and (detail.finished_at is not None) is (outcome in TERMINAL_STATES), job_id
    assert journal.expired() == [] and journal.leased_by("w1") == []  # every lease was cleared
    assert [j.id for j in journal.lease(["q"], "w2", 10, HOUR)] == ["to-ready"]  # RETRY waits for promotion


@pytest.mark.parametrize("bad", [JobState.SUCCEEDED, JobState.LEASED, JobState.CANCELLED, JobState.SCHEDULED,
                                 "bogus"])
def test_fail_refuses_a_state_it_does_not_store_and_records_nothing(journal: Journal, bad: JobState) -> None:
    journal.enqueue([new_job("fine"), new_job("c")])
    fine, c = sorted(journal.lease(["q"], "w1", 2, 30.0))
    with pytest.raises(ValueError, match="state must be one of"):
        journal.fail([fail(fine, state=JobState.FAILED), Failure(c.id, c.lease_id, "x", bad, time.time())])
    for job_id in ("fine", "c"):  # the bad batch changed nothing, not even its good part
        info = journal.get(job_id)
        assert info is not None and (info.state, info.errors) == (JobState.LEASED, [])


def test_fail_refuses_retry_without_retry_at(journal: Journal) -> None:
    journal.enqueue([new_job("a")])
    a = lease_one(journal)
    with pytest.raises(ValueError, match="needs retry_at"):
        journal.fail([Failure(a.id, a.lease_id, "ValueError: boom", JobState.RETRY)])
    assert state(journal, "a") is JobState.LEASED
    for outcome in (JobState.READY, JobState.DEAD, JobState.FAILED):  # the others need no time
        assert Failure(a.id, a.lease_id, "x", outcome).retry_at is None
    assert journal.fail([Failure(a.id, a.lease_id, "worker died", JobState.READY)]) == 1
    assert state(journal, "a") is JobState.READY


def test_b1_release_gives_the_attempt_back(journal: Journal) -> None:
    journal.enqueue([new_job("a", max_attempts=1)])
    first = lease_one(journal)
    assert first.attempt == 1
    assert journal.release([(first.id, first.lease_id)]) == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts, info.lease_owner, info.errors) == (JobState.READY, 0, None, [])
    again = lease_one(journal, "w2")
    assert again.attempt == 1  # a max_attempts=1 job can still run: the release cost nothing
    assert journal.release([]) == 0


def test_b1_illegal_transitions_are_rejected_in_every_state(journal: Journal) -> None:
    leases = job_in_every_state(journal)
    before = {s.value: journal.get(s.value) for s in JobState}
    for s in JobState:
        job_id = s.value
        last_lease = leases[job_id].lease_id if job_id in leases else 1
        if s is not JobState.LEASED:  # only a leased job can be answered, and only by its lease
            assert journal.complete([(job_id, last_lease)]) == 0, s
            assert journal.fail([Failure(job_id, last_lease, "late", JobState.RETRY, time.time())]) == 0, s
            assert journal.attempts([(job_id, last_lease)]) == [], s
            assert journal.release([(job_id, last_lease)]) == 0, s
        else:
            stale = last_lease + 1_000_000
            assert journal.complete([(job_id, stale)]) == 0
            assert journal.fail([Failure(job_id, stale, "stale", JobState.RETRY, time.time())]) == 0
            assert journal.attempts([(job_id, stale)]) == []
            assert journal.release([(job_id, stale)]) == 0
        if s not in (JobState.DEAD, JobState.FAILED):
            assert journal.retry_dead(job_id) is False, s
    assert journal.promote() == 0  # nothing is due: the scheduled and retry jobs wait an hour
    assert {s.value: journal.get(s.value) for s in JobState} == before


def test_b1_cancel_from_every_non_final_state_only(journal: Journal) -> None:
    job_in_every_state(journal)
    assert set(LIVE_STATES) == set(JobState) - TERMINAL_STATES and len(LIVE_STATES) == 5
    for s in JobState:
        cancelled = journal.cancel(s.value)
        if s in LIVE_STATES:
            assert cancelled, s
            info = journal.get(s.value)
            assert info is not None and (info.state, info.lease_owner) == (JobState.CANCELLED, None)
        else:
            assert not cancelled, s
            assert state(journal, s.value) is s, f"cancel changed a {s} job"
    assert journal.cancel("cancelled") is False  # already final
    assert journal.cancel("no-such-job") is False
    # Cancelled jobs never come back.
    assert journal.promote() == 0
    assert expire(journal) == 0 and reclaim_all(journal, "takeover") == 0
    assert journal.lease(["q"], "w", 100, 30.0) == []


def test_b1_b8_cancel_of_a_leased_job_fences_the_worker(journal: Journal) -> None:
    journal.enqueue([new_job("a"), new_job("b"), new_job("c")])
    a, b, c = sorted(journal.lease(["q"], "w1", 3, 30.0))
    for job in (a, b, c):
        assert journal.cancel(job.id)
    # The worker finishes later: its ack, failure, release and renewal are all stale.
    assert journal.complete([(a.id, a.lease_id)]) == 0
    assert journal.fail([fail(b)]) == 0
    assert journal.release([(c.id, c.lease_id)]) == 0
    assert journal.renew(["w1"], 30.0) == 0
    assert reclaim(journal, "w1", "worker died") == 0
    for job in (a, b, c):
        info = journal.get(job.id)
        assert info is not None
        assert (info.state, info.attempts, info.errors) == (JobState.CANCELLED, 1, [])


def test_b8_answers_naming_no_job_are_stale_not_errors(journal: Journal) -> None:
    """A malformed ack (an id no job can have, even with a NUL in it) is counted stale, in a group too."""
    journal.enqueue([new_job("a")])
    a = lease_one(journal)
    with journal.transaction():
        assert journal.complete([("no\x00such", a.lease_id), ("nope", a.lease_id)]) == 0
        assert journal.fail([Failure("bad\x00id", a.lease_id, "x", JobState.RETRY, time.time())]) == 0
        assert journal.attempts([("bad\x00id", a.lease_id)]) == []
        assert journal.leased_by("bad\x00owner") == [] and journal.leased_with_prefix("bad\x00") == []
        assert journal.release([("bad\x00id", a.lease_id)]) == 0
        assert journal.cancel("bad\x00id") is False and journal.retry_dead("bad\x00id") is False
        assert journal.get("bad\x00id") is None
        assert journal.complete([(a.id, a.lease_id)]) == 1
    assert state(journal, "a") is JobState.SUCCEEDED


# -- B9: reclaim: the caller reads the leases, decides (journal_support.crash_outcome), fail() stores --


def test_b9_reclaim_counts_the_crash_as_an_attempt_then_dead(journal: Journal) -> None:
    journal.enqueue([new_job("a", max_attempts=2), new_job("b", max_attempts=2)])
    a = lease_one(journal, "worker-1")
    b = lease_one(journal, "worker-2")
    assert reclaim(journal, "worker-1", "worker died (SIGKILL)") == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts, info.lease_owner) == (JobState.READY, 1, None)
    assert info.errors == ["worker died (SIGKILL)"] and info.last_error == "worker died (SIGKILL)"
    assert state(journal, "b") is JobState.LEASED  # another owner's lease is untouched
    assert reclaim(journal, "worker-1", "worker died") == 0  # nothing left to reclaim

    again = lease_one(journal, "worker-3")
    assert again.id == a.id and again.attempt == 2
    assert reclaim(journal, "worker-3", "worker died (SIGKILL)") == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts) == (JobState.DEAD, 2)  # B9: at max_attempts, dead
    assert info.errors == ["worker died (SIGKILL)", "worker died (SIGKILL)"]
    # The stale leases of the dead owners are fenced off.
    assert journal.complete([(a.id, a.lease_id), (again.id, again.lease_id)]) == 0
    assert journal.complete([(b.id, b.lease_id)]) == 1


def test_b9_reclaim_all_takes_every_owner(journal: Journal) -> None:
    journal.enqueue([new_job("a"), new_job("b", max_attempts=1), new_job("c")])
    lease_one(journal, "old-node/1/x")
    lease_one(journal, "old-node/2/x")
    assert reclaim_all(journal, "node restarted: old incarnation") == 2
    assert state(journal, "a") is JobState.READY
    assert state(journal, "b") is JobState.DEAD
    assert state(journal, "c") is JobState.READY  # was never leased: no attempt, no error
    assert journal.get("c").attempts == 0  # type: ignore[union-attr]
    assert journal.get("b").errors == ["node restarted: old incarnation"]  # type: ignore[union-attr]


def test_b9_reclaim_all_by_owner_prefix_treats_wildcards_literally(journal: Journal) -> None:
    owners = ["n%1/10/a", "n%1/11/b", "nX1/12/c", "n_2/13/d", "na2/14/e", "n%1x/15/f"]
    ids = [f"job-{k}" for k in range(len(owners))]
    journal.enqueue([new_job(job_id) for job_id in ids])
    for owner in owners:
        lease_one(journal, owner)

    def held() -> list[str]:
        return sorted(info.lease_owner for info in map(journal.get, ids)
                      if info is not None and info.lease_owner is not None)

    # '%' and '_' are not wildcards: "n%1/" matches only owners that start with exactly that.
    assert reclaim_all(journal, "node restarted", "n%1/") == 2
    assert held() == sorted(["n%1x/15/f", "n_2/13/d", "nX1/12/c", "na2/14/e"])
    assert reclaim_all(journal, "node restarted", "n_2/") == 1
    assert held() == sorted(["n%1x/15/f", "nX1/12/c", "na2/14/e"])
    assert reclaim_all(journal, "node restarted", "nobody/") == 0
    assert reclaim_all(journal, "node restarted", "") == 3  # the empty prefix takes every owner
    assert held() == []


def test_b9_reclaim_keeps_the_leases_the_worker_still_holds(journal: Journal) -> None:
    journal.enqueue([new_job(f"j{n}") for n in range(5)] + [new_job("other")])
    first = journal.lease(["q"], "w1", 2, 30.0)   # one lease id for these two
    second = journal.lease(["q"], "w1", 2, 30.0)  # and another for these
    third = journal.lease(["q"], "w1", 1, 30.0)
    theirs = journal.lease(["q"], "w2", 1, 30.0)
    kept = {first[0].lease_id, third[0].lease_id}
    # The worker re-announced holding `first` and `third`; the acks for `second` were lost.
    assert reclaim(journal, "w1", "lease not held after dispatcher restart", keep=kept) == 2
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
    assert reclaim(journal, "w1", "worker died", keep=kept) == 0
    assert reclaim(journal, "w1", "worker died", keep={12345}) == 0  # holds nothing any more


def test_b9_reclaim_fails_tasks_declared_on_crash_fail(journal: Journal) -> None:
    journal.enqueue([new_job("crash-fails", task="tests.fragile", max_attempts=5),
                     new_job("crash-retries", max_attempts=5),
                     new_job("crash-dead", max_attempts=1),
                     new_job("fragile-expired", task="tests.fragile", max_attempts=5)])
    leased = {j.id for j in journal.lease(["q"], "w1", 3, 30.0)}
    assert leased == {"crash-fails", "crash-retries", "crash-dead"}
    assert reclaim(journal, "w1", "worker died (killed)", fail_tasks={"tests.fragile", "tests.other"}) == 3
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
    assert reclaim_all(journal, "node restarted", "node/", fail_tasks=["tests.fragile"]) == 3
    assert state(journal, "fragile-expired") is JobState.FAILED
    assert state(journal, "crash-fails") is JobState.FAILED
    assert state(journal, "crash-retries") is JobState.READY
    journal.lease(["q"], "w3", 1, -1.0)  # crash-retries, its lease already expired
    assert expire(journal, fail_tasks=["tests.noop"]) == 1
    info = journal.get("crash-retries")
    assert info is not None and (info.state, info.errors[-1]) == (JobState.FAILED, "lease expired")


# -- reading the leases to take back: Attempt rows ----------------------------------------------


def test_attempt_rows_carry_the_lease_the_attempt_number_and_max_attempts(journal: Journal) -> None:
    journal.enqueue([new_job("a", max_attempts=3, task="tests.a"), new_job("b", max_attempts=7)])
    first = {j.id: j for j in journal.lease(["q"], "w1", 2, HOUR)}
    assert sorted(journal.leased_by("w1")) == [Attempt("a", first["a"].lease_id, "tests.a", 1, 3),
                                               Attempt("b", first["b"].lease_id, "tests.noop", 1, 7)]
    assert reclaim(journal, "w1", "worker died") == 2
    again = lease_one(journal, "w2")
    assert again.id == "a"
    row = Attempt("a", again.lease_id, "tests.a", 2, 3)  # the lease counted the second attempt
    assert journal.leased_by("w2") == [row]
    # Only current leases come back: not the stale one, not an unknown id, and a pair once.
    assert journal.attempts([("a", again.lease_id), ("a", first["a"].lease_id), ("b", first["b"].lease_id),
                             ("nope", again.lease_id), ("a", again.lease_id)]) == [row]
    assert journal.attempts([]) == []
    assert journal.counts() == {"q": {"leased": 1, "ready": 1}}  # reading took nothing back


def test_attempts_reads_named_leases_across_lease_ids(journal: Journal) -> None:
    journal.enqueue([new_job(f"j{n}") for n in range(5)])
    one = journal.lease(["q"], "w1", 2, HOUR)
    two = journal.lease(["q"], "w2", 3, HOUR)
    wanted = [(j.id, j.lease_id) for j in one[:1] + two]
    assert sorted((r.job_id, r.lease_id) for r in journal.attempts(wanted)) == sorted(wanted)
    with journal.transaction():  # the caller's half of answering named leases: read, decide, store
        rows = journal.attempts(wanted)
        assert journal.fail([Failure(r.job_id, r.lease_id, "lost", JobState.READY) for r in rows]) == 4
    assert journal.attempts(wanted) == []
    assert [(r.job_id, r.lease_id) for r in journal.attempts([(j.id, j.lease_id) for j in one])] == [
        (one[1].id, one[1].lease_id)]


def test_leased_by_skips_kept_leases_and_other_owners(journal: Journal) -> None:
    journal.enqueue([new_job(f"j{n}") for n in range(4)])
    first = journal.lease(["q"], "w1", 2, HOUR)
    second = journal.lease(["q"], "w1", 1, HOUR)
    journal.lease(["q"], "w2", 1, HOUR)

    def ids(rows: list[Attempt]) -> list[str]:
        return sorted(r.job_id for r in rows)

    assert ids(journal.leased_by("w1")) == sorted(j.id for j in first + second)
    assert ids(journal.leased_by("w1", keep={first[0].lease_id})) == [second[0].id]
    assert ids(journal.leased_by("w1", keep=[second[0].lease_id, 12345])) == sorted(j.id for j in first)
    assert journal.leased_by("w1", keep={first[0].lease_id, second[0].lease_id}) == []
    assert journal.leased_by("nobody") == [] and journal.leased_by("w") == []  # an owner is matched whole
    assert journal.counts() == {"q": {"leased": 4}}


def test_leased_with_prefix_compares_literally(journal: Journal) -> None:
    owners = ["n%1/10/a", "n%1/11/b", "nX1/12/c", "n_2/13/d", "na2/14/e", "n%1x/15/f"]
    owner_of = {}
    journal.enqueue([new_job(f"job-{k}") for k in range(len(owners))])
    for owner in owners:
        owner_of[lease_one(journal, owner).id] = owner

    def matched(prefix: str) -> list[str]:
        return sorted(owner_of[r.job_id] for r in journal.leased_with_prefix(prefix))

    assert matched("n%1/") == ["n%1/10/a", "n%1/11/b"]  # '%' is no wildcard
    assert matched("n_2/") == ["n_2/13/d"]  # nor is '_'
    assert matched("n%1") == ["n%1/10/a", "n%1/11/b", "n%1x/15/f"]
    assert matched("") == sorted(owners) and matched("n") == sorted(owners)  # "" matches every lease
    assert matched("nobody/") == [] and matched("N") == []


def test_expired_lists_leases_past_their_expiry_by_the_journals_clock(journal: Journal) -> None:
    journal.enqueue([new_job("a-gone"), new_job("b-live"), new_job("c-forever"), new_job("d-ready")])
    gone = lease_one(journal, "w1", lease_for=-1.0)
    live = lease_one(journal, "w2", lease_for=HOUR)
    lease_one(journal, "w3", lease_for=math.inf)
    assert journal.expired() == [Attempt("a-gone", gone.lease_id, "tests.noop", 1, 3)]
    assert len(journal.expired()) == 1  # reading took nothing back
    assert journal.renew(["w2"], -1.0) == 1
    assert sorted(journal.expired()) == [Attempt("a-gone", gone.lease_id, "tests.noop", 1, 3),
                                         Attempt("b-live", live.lease_id, "tests.noop", 1, 3)]
    assert journal.renew(["w1", "w2"], HOUR) == 2
    assert journal.expired() == []  # an infinite lease never expires; a ready job has no lease


# -- B8: expiry, renewal, fencing ----------------------------------------------------------


def test_b8_expire_and_renew(journal: Journal) -> None:
    journal.enqueue([new_job("a"), new_job("b")])
    lease_one(journal, "w1", lease_for=HOUR)
    lease_one(journal, "w2", lease_for=HOUR)
    assert expire(journal) == 0
    assert journal.renew(["w1"], -1.0) == 1  # w1's lease now ended a second ago
    assert expire(journal) == 1
    info = journal.get("a")
    assert info is not None
    assert (info.state, info.attempts, info.errors) == (JobState.READY, 1, ["lease expired"])
    assert state(journal, "b") is JobState.LEASED
    assert journal.renew(["w2", "nobody"], HOUR) == 1
    assert journal.renew([], 30.0) == 0


def test_b8_renew_by_a_stale_owner_is_rejected(journal: Journal) -> None:
    journal.enqueue([new_job("a")])
    lease_one(journal, "node/1/old", lease_for=-1.0)
    assert expire(journal) == 1
    current = lease_one(journal, "node/1/new", lease_for=-1.0)  # already expired, not yet reclaimed
    assert journal.renew(["node/1/old"], HOUR) == 0  # the old owner holds nothing now
    assert expire(journal) == 1  # the stale renewal did not extend the new lease
    assert journal.complete([(current.id, current.lease_id)]) == 0


def test_b8_fencing_rejects_and_counts_stale_leases(journal: Journal) -> None:
    journal.enqueue([new_job("a"), new_job("b")])
    stale_a, stale_b = sorted(journal.lease(["q"], "paused-worker", 2, -1.0))
    assert expire(journal) == 2
    fresh_a, fresh_b = sorted(journal.lease(["q"], "live-worker", 2, HOUR))
    assert fresh_a.lease_id != stale_a.lease_id

    # The paused worker wakes up and answers with its old leases: all refused.
    assert journal.complete([(stale_a.id, stale_a.lease_id), (stale_b.id, stale_b.lease_id)]) == 0
    assert journal.fail([fail(stale_a)]) == 0
    assert journal.release([(stale_b.id, stale_b.lease_id)]) == 0
    assert journal.renew(["paused-worker"], HOUR) == 0
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
    assert journal.fail([fail(stale_b), fail(fresh_b)]) == 1
    assert state(journal, "a") is JobState.SUCCEEDED
    assert state(journal, "b") is JobState.RETRY


# -- B10: rescue batching ----------------------------------------------------------------------


def test_b10_rescue_of_10k_leases_is_not_starved_by_leases_that_never_expire(journal: Journal) -> None:
    total, immortal = 10_000, 50
    # The never-expiring leases come first in every order (id, priority), where a batched
    # rescuer that re-reads them each round would starve the rest.
    journal.enqueue([new_job(f"a-immortal-{n:03d}", priority=-1) for n in range(immortal)])
    journal.enqueue([new_job(f"b-{n:05d}") for n in range(total)])
    assert len(journal.lease(["q"], "long-runner", immortal, math.inf)) == immortal
    for _ in range(total // 2_000):
        assert len(journal.lease(["q"], "dead-node/1/x", 2_000, -1.0)) == 2_000
    assert expire(journal, "lease expired (node died)") == total  # all of them, in one call
    assert journal.counts() == {"q": {"ready": total, "leased": immortal}}
    assert expire(journal) == 0  # an infinite lease never expires
    # The same owner-driven: 10k leases of one dead owner come back at once.
    for _ in range(total // 2_000):
        assert len(journal.lease(["q"], "worker/2/y", 2_000, HOUR)) == 2_000
    assert reclaim(journal, "worker/2/y", "worker died (killed)") == total
    assert reclaim(journal, "long-runner", "worker died (killed)") == immortal
    counts = journal.counts()["q"]
    assert counts == {"ready": total + immortal}
    info = journal.get("b-09999")
    assert info is not None and info.attempts == 2
    assert info.errors == ["lease expired (node died)", "worker died (killed)"]


# -- B11: scheduled jobs -----------------------------------------------------------------------


def test_b11_a_future_job_is_never_leased_early(journal: Journal) -> None:
    now = time.time()
    journal.enqueue([new_job("later", run_at=now + HOUR), new_job("soon", run_at=now + 0.3)])
    assert state(journal, "soon") is JobState.SCHEDULED
    for _ in range(3):
        # No visibility clock runs on a scheduled job: promotion, expiry and reclaim leave it be.
        assert journal.lease(["q"], "w1", 10, 30.0) == []
        assert expire(journal) == 0 and reclaim_all(journal, "takeover") == 0
        if state(journal, "soon") is JobState.SCHEDULED:
            assert journal.promote() in (0, 1)
    info = journal.get("later")
    assert info is not None and (info.state, info.attempts, info.errors) == (JobState.SCHEDULED, 0, [])
    # Once due (by the journal's clock), the scheduler's promotion makes it ready.
    wait_for(lambda: journal.promote() == 1 or state(journal, "soon") is JobState.READY,
             message="the job due in 0.3 s is promoted")
    assert [j.id for j in journal.lease(["q"], "w1", 10, 30.0)] == ["soon"]
    assert state(journal, "later") is JobState.SCHEDULED


def test_has_due_is_a_read_that_says_whether_promote_would_move_a_job(backend: Backend, journal: Journal) -> None:
    """The scheduler's tick reads first and writes only when something is due."""
    assert not journal.has_due()
    journal.enqueue([new_job("later", run_at=time.time() + HOUR), new_job("soon", run_at=time.time() + 0.2)])
    assert not journal.has_due()
    reader = backend.open()  # another connection, outside any transaction: a plain read
    try:
        wait_for(reader.has_due, message="the job due in 0.2 s is due")
    finally:
        reader.close()
    assert journal.promote() == 1 and not journal.has_due()
    assert journal.has_ready(["other", "q"]) and not journal.has_ready(["other"]) and not journal.has_ready([])
    (leased,) = journal.lease(["q"], "w1", 1, 30.0)
    assert not journal.has_ready(["q"])
    journal.fail([Failure(leased.id, leased.lease_id, "ValueError: x", JobState.RETRY, time.time() - 1)])
    assert journal.has_due()  # a retry whose time has come
    assert journal.promote() == 1 and not journal.has_due()


# -- B12: retry_dead ---------------------------------------------------------------------------


def test_b12_retry_dead_gives_fresh_attempts_and_keeps_history(journal: Journal) -> None:
    job_in_every_state(journal)
    for s in JobState:
        expected = s in (JobState.DEAD, JobState.FAILED)
        assert journal.retry_dead(s.value) is expected, s
    assert journal.retry_dead("no-such-job") is False
    info = journal.get("dead")
    assert info is not None and (info.state, info.attempts) == (JobState.READY, 0)
    assert state(journal, "failed") is JobState.READY
    assert state(journal, "succeeded") is JobState.SUCCEEDED

    leased = {j.id: j for j in journal.lease(["q"], "w2", 100, 30.0)}
    assert leased["dead"].attempt == 1
    assert journal.fail([fail(leased["dead"], "ValueError: after retry")]) == 1
    info = journal.get("dead")
    assert info is not None and info.state is JobState.DEAD
    assert info.errors == ["ValueError: boom", "ValueError: after retry"]


def test_b12_errors_stay_in_the_order_they_happened_across_retry_dead(journal: Journal) -> None:
    journal.enqueue([new_job("x", max_attempts=2)])
    journal.fail([fail(lease_one(journal), "first", retry_at=time.time() - 1)])
    journal.promote()
    lease_one(journal, "w2")
    reclaim(journal, "w2", "worker died")
    assert state(journal, "x") is JobState.DEAD
    assert journal.retry_dead("x")
    journal.fail([fail(lease_one(journal, "w3"), "third")])  # attempt 1 again
    info = journal.get("x")
    assert info is not None and info.state is JobState.RETRY
    assert info.errors == ["first", "worker died", "third"]


# -- B6: idempotent enqueue; transactions --------------------------------------------------------


def test_b6_enqueue_of_the_same_id_is_a_no_op(journal: Journal) -> None:
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


def test_b6_an_id_re_sent_by_another_connection_is_a_no_op(backend: Backend, journal: Journal) -> None:
    other = backend.open()
    assert journal.enqueue([new_job("a", payload=b"first")]) == 1
    assert other.enqueue([new_job("a", payload=b"again"), new_job("b")]) == 1
    assert journal.counts() == {"q": {"ready": 2}}


def test_transaction_groups_transitions_atomically(journal: Journal) -> None:
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


def test_a_failed_transition_inside_a_group_is_undone_alone(backend: Backend, journal: Journal) -> None:
    """What the journal writer relies on: one bad op fails, the rest of the group commits."""
    journal.enqueue([new_job("x")])
    with journal.transaction():
        journal.enqueue([new_job("a")])
        with pytest.raises(JournalError):
            journal.enqueue([new_job("bad", max_attempts=0), new_job("fine-but-same-batch")])
        leased = journal.lease(["q"], "w1", 5, 30.0)
        journal.enqueue([new_job("b")])
    assert {j.id for j in leased} == {"a", "x"}
    assert journal.get("bad") is None and journal.get("fine-but-same-batch") is None
    assert journal.counts() == {"q": {"leased": 2, "ready": 1}}
    # Another connection sees the committed group.
    assert backend.open().counts() == {"q": {"leased": 2, "ready": 1}}


# -- B2: claim exclusivity across processes ------------------------------------------------------

CLAIMER = textwrap.dedent("""
    import json, sys, time
    from actorq.journal import open_journal
    url, options, owner, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    journal = open_journal(url, busy_timeout=60.0, **options)
    claims = []
    with open(out + ".ready", "w"):
        pass
    while not __import__("os").path.exists(out + ".go"):
        time.sleep(0.005)
    empty = 0
    while empty < 3:
        leased = journal.lease(["q"], owner, 25, 3600.0)
        if not leased:
            empty += 1
            continue
        empty = 0
        time.sleep(0.002)  # the jobs run; other claimers lease meanwhile
        acks, accepted = [(j.id, j.lease_id) for j in leased], 0
        while acks:  # a row another claimer's lease scan holds for a moment comes back busy
            busy = []
            accepted += journal.complete(acks, busy=busy)
            acks = busy
        claims.extend([j.id, j.lease_id, j.attempt] for j in leased)
        assert accepted == len(leased), (accepted, len(leased))
    journal.close()
    with open(out, "w") as fp:
        json.dump(claims, fp)
""")


def test_b2_concurrent_claimers_each_job_leased_once(backend: Backend, journal: Journal, tmp_path: Path) -> None:
    """B2: 4 claimer processes, each with its own connection, drain 8,000 jobs.

    PostgreSQL claims with SKIP LOCKED, so the claimers run side by side. SQLite
    serialises the writers: each lease is a ``BEGIN IMMEDIATE`` transaction that
    waits up to ``busy_timeout`` for the file's write lock, so the claimers take
    turns (the busy handler is not fair: a claimer that leased and acked back to
    back kept the lock to itself, so each one "runs" its jobs for 2 ms between
    lease and ack, as a worker would). That is what one SQLite file allows: one
    writer at a time; readers never wait (B13).
    """
    backend.other_process()
    total, claimers = 8_000, 4
    for start in range(0, total, 1_000):
        journal.enqueue([new_job(f"c-{n:05d}") for n in range(start, start + 1_000)])
    outs = [tmp_path / f"claims-{k}.json" for k in range(claimers)]
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, backend.url, json.dumps(backend.options),
                               f"claimer-{k}", str(out)], stderr=subprocess.PIPE, text=True)
             for k, out in enumerate(outs)]
    try:
        wait_for(lambda: all(Path(f"{out}.ready").exists() for out in outs) or any(p.poll() is not None for p in procs),
                 timeout=60, message="every claimer connected")
        for out in outs:
            Path(f"{out}.go").touch()  # start them together
        errors = [p.communicate(timeout=100)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * claimers, errors
    claims = [(job_id, lease_id, attempt, k)
              for k, out in enumerate(outs) for job_id, lease_id, attempt in json.loads(out.read_text())]
    per_job: dict[str, list[tuple[int, int, int]]] = {}
    for job_id, lease_id, attempt, k in claims:
        per_job.setdefault(job_id, []).append((lease_id, attempt, k))
    print("claims per process:", [sum(1 for c in claims if c[3] == k) for k in range(claimers)])
    assert len(per_job) == total  # the union covers every job
    assert all(len(c) == 1 for c in per_job.values())  # each leased by exactly one claimer, once
    assert {attempt for c in per_job.values() for _, attempt, _ in c} == {1}
    assert journal.counts() == {"q": {"succeeded": total}}


# -- leadership of once-only duties (C16's journal half) ---------------------------------------------
def test_c16_one_leader_at_a_time_and_resign_hands_over(backend: Backend) -> None:
    a = backend.open()
    a.attach_node()
    assert a.try_lead("rescue", "n1/10/aa", 30.0)
    assert a.try_lead("rescue", "n1/10/aa", 30.0)  # the holder renews
    b = backend.open()
    if not b.shared:
        # one node per file (B14): a connection without the node lock never leads
        assert not b.try_lead("rescue", "n2/20/bb", 30.0)
        return
    b.attach_node()
    assert not b.try_lead("rescue", "n2/20/bb", 30.0)  # held and not expired
    assert b.try_lead("cron", "n2/20/bb", 30.0)  # names are independent
    assert not b.resign("rescue", "n2/20/bb")  # only the holder can give it up
    assert a.resign("rescue", "n1/10/aa")
    assert b.try_lead("rescue", "n2/20/bb", 30.0)
    assert not a.try_lead("rescue", "n1/10/aa", 30.0)


def test_c16_an_expired_leadership_goes_to_the_next_claimant(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    if not a.shared:  # one node per file: its leadership never changes hands
        a.attach_node()
        assert a.try_lead("rescue", "n1/10/aa", 0.001) and not b.try_lead("rescue", "n2/20/bb", 30.0)
        a.close()  # the node lock goes with it
        b.attach_node()
        assert b.try_lead("rescue", "n2/20/bb", 30.0)
        return
    assert a.try_lead("rescue", "n1/10/aa", 0.3)
    assert not b.try_lead("rescue", "n2/20/bb", 0.3)
    assert wait_for(lambda: b.try_lead("rescue", "n2/20/bb", 30.0), timeout=10.0), "expiry by the database's clock"
    assert not a.try_lead("rescue", "n1/10/aa", 0.3)


# -- the task defaults catalog ----------------------------------------------------------------------
def test_declared_tasks_round_trip_and_the_last_declaration_wins(backend: Backend, journal: Journal) -> None:
    assert journal.declared_tasks(["emails.send"]) == {}
    journal.declare_tasks([TaskDefaults("emails.send", "mail", 5, 3),
                           TaskDefaults("reports.build", "slow", 0, 1, unique_for=3600.0)])
    assert journal.declared_tasks(["emails.send", "reports.build", "unknown", "emails.send"]) == {
        "emails.send": TaskDefaults("emails.send", "mail", 5, 3),
        "reports.build": TaskDefaults("reports.build", "slow", 0, 1, 3600.0)}
    # Another node, started later with a newer registry, declares again: it wins.
    other = backend.open()
    other.declare_tasks([TaskDefaults("emails.send", "mail-fast", -1, 10),
                         TaskDefaults("x'); DROP TABLE actorq_tasks;--", "q", 0, 1)])
    assert journal.declared_tasks(["emails.send", "reports.build"]) == {
        "emails.send": TaskDefaults("emails.send", "mail-fast", -1, 10),
        "reports.build": TaskDefaults("reports.build", "slow", 0, 1, 3600.0)}  # untouched by the other node
    assert list(journal.declared_tasks(["x'); DROP TABLE actorq_tasks;--"])) == ["x'); DROP TABLE actorq_tasks;--"]
    # Within one batch the last of a name wins too.
    journal.declare_tasks([TaskDefaults("dup", "a", 1, 1), TaskDefaults("dup", "b", 2, 2)])
    assert journal.declared_tasks(["dup"]) == {"dup": TaskDefaults("dup", "b", 2, 2)}
    journal.declare_tasks([])
    assert journal.declared_tasks([]) == {} and journal.declared_tasks(["no\x00such"]) == {}
    many = [TaskDefaults(f"t{n:04d}", "q", n, 1) for n in range(1_200)]  # more than one IN list's worth
    journal.declare_tasks(many)
    assert journal.declared_tasks([t.name for t in many]) == {t.name: t for t in many}


def test_a_declaration_with_max_attempts_below_one_is_refused_whole(journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("kept", "q", 0, 2)])
    with journal.transaction():  # fails alone, as a refused enqueue does: the group goes on
        with pytest.raises(JournalError):
            journal.declare_tasks([TaskDefaults("fine", "q", 0, 1), TaskDefaults("kept", "q", 0, 0)])
        journal.enqueue([new_job("after")])
    assert journal.declared_tasks(["fine", "kept"]) == {"kept": TaskDefaults("kept", "q", 0, 2)}
    assert state(journal, "after") is JobState.READY


# -- what a backend declares it can do -------------------------------------------------------------
def test_capabilities_are_declared_on_the_backend_class(backend: Backend, journal: Journal) -> None:
    assert isinstance(journal, Journal)
    assert type(journal).shared is journal.shared and type(journal).notifies is journal.notifies
    assert isinstance(journal.shared, bool) and isinstance(journal.notifies, bool)
    assert journal.outage is None  # reachable
    journal.enqueue([new_job("a")])
    assert journal.maintain() is None  # a fresh journal needs no upkeep
    if journal.shared:  # several nodes may attach at once
        other = backend.open()
        journal.attach_node()
        other.attach_node()


# -- B7: unique keys ---------------------------------------------------------------------------------
def _keyed(job_id: str, key: str) -> NewJob:
    return NewJob(job_id, "q", "t", b"\x92\x90\x80", unique_key=key)


def test_b7_a_held_unique_key_adds_no_second_job_and_is_free_once_the_holder_is_final(journal: Journal) -> None:
    assert journal.enqueue([_keyed("k1", "report:2026-11-24")]) == 1
    assert journal.enqueue([_keyed("k2", "report:2026-11-24"), _keyed("k3", "report:2026-11-25")]) == 1
    assert journal.holders(["report:2026-11-24", "report:2026-11-25", "nobody"]) == {
        "report:2026-11-24": "k1", "report:2026-11-25": "k3"}
    assert journal.get("k2") is None
    leased = journal.lease(["q"], "w1", 10, HOUR)  # still held while running
    assert journal.enqueue([_keyed("k4", "report:2026-11-24")]) == 0
    journal.complete([(j.id, j.lease_id) for j in leased])
    assert journal.holders(["report:2026-11-24"]) == {}  # final: the key is free
    assert journal.enqueue([_keyed("k5", "report:2026-11-24")]) == 1
    assert journal.holders(["report:2026-11-24"]) == {"report:2026-11-24": "k5"}


UNIQUE_RACER = """
import sys, time
from actorq.journal import NewJob, open_journal
url, options, start, me = sys.argv[1], eval(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
journal = open_journal(url, busy_timeout=30.0, **options)
while time.time() < start:
    time.sleep(0.001)
with journal.transaction():
    inserted = journal.enqueue([NewJob(me, "q", "t", b"\\x92\\x90\\x80", unique_key="the-one")])
    holder = journal.holders(["the-one"])["the-one"]
print(inserted, holder)
journal.close()
"""


def test_b7_racing_processes_insert_one_job_and_all_learn_its_id(backend: Backend) -> None:
    import subprocess
    import sys
    import time as _time

    backend.other_process()
    backend.open()  # create the schema before the race
    start = _time.time() + 1.0
    racers = [subprocess.Popen([sys.executable, "-c", UNIQUE_RACER, backend.url, repr(backend.options),
                                str(start), f"racer-{n}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for n in range(4)]
    outcomes = []
    for racer in racers:
        out, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err
        inserted, holder = out.split()
        outcomes.append((int(inserted), holder))
    assert sorted(inserted for inserted, _ in outcomes) == [0, 0, 0, 1]  # exactly one job
    (winner,) = {holder for _, holder in outcomes}  # every racer got the same id: "conflict" and the id
    assert winner.startswith("racer-")
    assert backend.raw("SELECT count(*) FROM actorq_jobs")[0][0] == 1


# -- unique_for: a key held for a period from the insert, whatever the holder's state -------------
def _held_for(job_id: str, key: str, unique_for: float | None) -> NewJob:
    return NewJob(job_id, "q", "t", b"\x92\x90\x80", unique_key=key, unique_for=unique_for)


def _finish(journal: Journal, outcome: str) -> None:
    """End the one ready job as `outcome`: succeeded, dead or cancelled."""
    (job,) = journal.lease(["q"], "w1", 1, HOUR)
    if outcome == "succeeded":
        assert journal.complete([(job.id, job.lease_id)]) == 1
    elif outcome == "dead":
        assert journal.fail([Failure(job.id, job.lease_id, "ValueError: x", JobState.DEAD)]) == 1
    else:
        assert journal.cancel(job.id)


@pytest.mark.parametrize("outcome", ["succeeded", "dead", "cancelled"])
def test_unique_for_holds_the_key_after_the_holder_ended_until_its_period_is_over(
        journal: Journal, outcome: str) -> None:
    """The period is the holder's: unique_until = its insert + unique_for, by the journal's clock.
    "Over" is a period that ended when it began (unique_for < 0): no test waits for a deadline."""
    assert journal.enqueue([_held_for("a", "daily", HOUR), _held_for("over", "gone", -1.0)]) == 2
    assert journal.holders(["daily", "gone"]) == {"daily": "a", "gone": "over"}  # live: both held
    assert journal.enqueue([_held_for("a2", "daily", HOUR), _keyed("a3", "daily")]) == 0
    _finish(journal, outcome)  # "a" ends (lease order: oldest id first)
    assert state(journal, "a") is not JobState.LEASED and state(journal, "a") in TERMINAL_STATES
    # ended, inside its period: still the holder, for a job with a period or without one
    assert journal.holders(["daily", "gone"]) == {"daily": "a", "gone": "over"}
    assert journal.enqueue([_held_for("b", "daily", HOUR), _keyed("c", "daily")]) == 0
    assert journal.get("b") is None and journal.get("c") is None
    _finish(journal, outcome)  # "over" ends: its period is over too, so the key is free
    assert journal.holders(["gone"]) == {}
    assert journal.enqueue([_held_for("d", "gone", HOUR)]) == 1
    assert journal.holders(["gone", "daily", "nobody"]) == {"gone": "d", "daily": "a"}


def test_unique_for_and_a_live_holder_without_one_block_each_other_and_a_batch_inserts_one(
        journal: Journal) -> None:
    assert journal.enqueue([_keyed("live", "k")]) == 1
    assert journal.enqueue([_held_for("p", "k", HOUR)]) == 0  # the live holder blocks a period job
    assert journal.holders(["k"]) == {"k": "live"}
    # two jobs of one batch with one free key: the first wins, its period applies
    assert journal.enqueue([_held_for("first", "b", HOUR), _held_for("second", "b", HOUR),
                            _held_for("third", "b", -1.0)]) == 1
    assert journal.holders(["b"]) == {"b": "first"} and journal.get("second") is None
    # a re-sent id with a period is a no-op as any re-sent id
    assert journal.enqueue([_held_for("first", "other-key", HOUR)]) == 0
    assert journal.holders(["other-key"]) == {}


def test_unique_for_takes_effect_in_a_transaction_as_its_enqueue_and_holders_see_it(journal: Journal) -> None:
    with journal.transaction():
        assert journal.enqueue([_held_for("t1", "tx", HOUR)]) == 1
        assert journal.enqueue([_held_for("t2", "tx", HOUR)]) == 0
        assert journal.holders(["tx"]) == {"tx": "t1"}
    _finish(journal, "succeeded")
    assert journal.enqueue([_held_for("t3", "tx", HOUR)]) == 0


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, 366 * 86400 + 1, "60", True])
def test_g12_a_period_the_journal_cannot_hold_is_refused_where_the_job_is_made(bad: object) -> None:
    with pytest.raises(ValueError, match="unique_for must be a number of seconds"):
        NewJob("j", "q", "t", b"", unique_key="k", unique_for=bad)  # type: ignore[arg-type]


def test_a_period_needs_a_unique_key() -> None:
    with pytest.raises(ValueError, match="unique_for needs a unique_key"):
        NewJob("j", "q", "t", b"", unique_for=60.0)


# -- results: stored with the completion, read by id, expired by the journal's clock ------------


def test_results_are_stored_with_the_completion_and_read_by_id(journal: Journal) -> None:
    journal.enqueue([new_job("value"), new_job("none"), new_job("stale")])
    leased = {j.id: j for j in journal.lease(["q"], "w1", 3, 30.0)}
    results = {"value": KeptResult(b"\x93\x01\x02\x03", HOUR), "stale": KeptResult(b"\xa1x", HOUR)}
    acks = [("value", leased["value"].lease_id), ("none", leased["none"].lease_id), ("stale", -1)]
    assert journal.complete(acks, results=results) == 2  # a stale ack stores nothing
    assert journal.result("value") == JobResult("value", JobState.SUCCEEDED, b"\x93\x01\x02\x03", False, None, None)
    assert journal.result("none") == JobResult("none", JobState.SUCCEEDED, None, False, None, None)
    assert journal.result("stale") == JobResult("stale", JobState.LEASED, None, False, None, None)
    assert journal.result("no-such-job") is None and journal.result("bad\x00id") is None


def test_results_of_jobs_still_running_or_failed_carry_state_error_and_traceback(journal: Journal) -> None:
    journal.enqueue([new_job("boom"), new_job("waiting")])
    job = lease_one(journal, "w1")
    assert job.id == "boom"
    trace = 'Traceback (most recent call last):\n  File "t.py", line 1\nValueError: bad'
    assert journal.fail([Failure("boom", job.lease_id, "ValueError: bad", JobState.DEAD, traceback=trace)]) == 1
    assert journal.result("boom") == JobResult("boom", JobState.DEAD, None, False, "ValueError: bad", trace)
    assert journal.result("waiting") == JobResult("waiting", JobState.READY, None, False, None, None)


def test_an_expired_result_reads_as_expired_and_is_swept_in_batches(journal: Journal) -> None:
    journal.enqueue([new_job(f"e{n}") for n in range(5)] + [new_job("kept")])
    leased = journal.lease(["q"], "w1", 6, 30.0)
    results = {j.id: KeptResult(b"\xa2ok", -1.0 if j.id != "kept" else HOUR) for j in leased}
    assert journal.complete([(j.id, j.lease_id) for j in leased], results=results) == 6
    assert journal.result("e0") == JobResult("e0", JobState.SUCCEEDED, None, True, None, None)
    assert journal.result("kept") == JobResult("kept", JobState.SUCCEEDED, b"\xa2ok", False, None, None)
    assert journal.expire_results(3) == 3
    assert journal.expire_results(0) == 0
    assert journal.expire_results(100) == 2
    assert journal.expire_results(100) == 0
    assert all(journal.result(f"e{n}") == JobResult(f"e{n}", JobState.SUCCEEDED, None, True, None, None)
               for n in range(5))
    assert journal.result("kept") == JobResult("kept", JobState.SUCCEEDED, b"\xa2ok", False, None, None)


# -- retention: finished jobs pruned by state and age, oldest first, with their errors ----------------
FINAL_AGES_NEGATIVE = {state: -HOUR for state in TERMINAL_STATES}  # everything finished so far


def _errors_of(backend: Backend, job_ids: list[str]) -> int:
    return backend.error_rows(job_ids)


def test_prune_removes_finished_jobs_past_their_states_age_oldest_first_with_errors_and_results(
        backend: Backend, journal: Journal) -> None:
    job_in_every_state(journal)  # one job per state, named after it; "dead" and "retry" have errors
    # three more succeeded jobs: one returned a value, one succeeded after an attempt that raised
    journal.enqueue([new_job("old-1"), new_job("old-2"), new_job("new")])
    first = journal.lease(["q"], "w1", 3, 30.0)
    flaky = next(j for j in first if j.id == "old-2")
    assert journal.fail([Failure(flaky.id, flaky.lease_id, "OSError: flaky", JobState.READY)]) == 1
    again = journal.lease(["q"], "w1", 1, 30.0)
    done = [(j.id, j.lease_id) for j in first if j.id != "old-2"] + [(again[0].id, again[0].lease_id)]
    assert journal.complete(done, results={"old-1": KeptResult(b"\xa2ok", HOUR)}) == 3
    assert _errors_of(backend, ["old-2", "dead"]) == 2

    everything = {state: HOUR for state in TERMINAL_STATES}
    assert journal.prune(everything, 100) == 0  # nothing finished an hour ago
    backend.backdate_finish(["old-1"], 3 * HOUR)
    backend.backdate_finish(["old-2", "dead", "cancelled"], 2 * HOUR)

    assert journal.prune({JobState.SUCCEEDED: HOUR}, 1) == 1  # the oldest first
    assert journal.get("old-1") is None and journal.result("old-1") is None  # its result went with it
    assert journal.get("old-2") is not None
    assert journal.prune({JobState.SUCCEEDED: HOUR, JobState.DEAD: 3 * HOUR}, 100) == 1  # dead: not that old
    assert journal.get("old-2") is None and _errors_of(backend, ["old-2"]) == 0  # its error rows too
    assert journal.get("dead") is not None and journal.get("new") is not None
    # the other final states, by their own ages; the newer ones and every live job stay
    assert journal.prune({JobState.DEAD: HOUR, JobState.CANCELLED: HOUR, JobState.FAILED: HOUR}, 100) == 2
    assert journal.get("dead") is None and _errors_of(backend, ["dead"]) == 0
    assert journal.get("cancelled") is None and journal.get("failed") is not None
    assert _errors_of(backend, ["retry"]) == 1  # a live job's errors are its own

    assert journal.prune(FINAL_AGES_NEGATIVE, 100) == 3  # succeeded, new, failed: everything finished
    assert journal.counts() == {"q": {"blocked": 1, "scheduled": 1, "ready": 1, "leased": 1, "retry": 1}}
    assert journal.prune(FINAL_AGES_NEGATIVE, 100) == 0


def test_prune_deletes_at_most_its_limit_across_states_and_keeps_states_left_out(journal: Journal) -> None:
    journal.enqueue([new_job(f"s{n}") for n in range(5)] + [new_job(f"c{n}") for n in range(3)])
    for n in range(3):
        assert journal.cancel(f"c{n}")
    leased = journal.lease(["q"], "w1", 5, 30.0)
    assert journal.complete([(j.id, j.lease_id) for j in leased]) == 5
    assert journal.prune(FINAL_AGES_NEGATIVE, 0) == 0
    assert journal.prune({}, 100) == 0  # every state kept forever
    assert journal.prune(FINAL_AGES_NEGATIVE, 6) == 6  # the limit holds across states
    assert journal.prune({JobState.CANCELLED: -HOUR}, 100) + journal.prune({JobState.SUCCEEDED: -HOUR}, 100) == 2
    assert journal.counts() == {}


def test_prune_never_touches_a_dead_job_retried_by_hand(journal: Journal) -> None:
    journal.enqueue([new_job("revived", max_attempts=1)])
    job = lease_one(journal)
    assert journal.fail([fail(job)]) == 1 and state(journal, "revived") is JobState.DEAD
    assert journal.retry_dead("revived")  # live again: no finish time
    assert journal.prune(FINAL_AGES_NEGATIVE, 100) == 0
    assert state(journal, "revived") is JobState.READY


def test_prune_keeps_a_finished_job_whose_unique_period_is_ahead(journal: Journal) -> None:
    """A finished holder inside its unique period still holds the key (unique_for): pruning it
    would free the key early. One whose period is over goes like any other."""
    journal.enqueue([_held_for("held", "k-held", HOUR), _held_for("over", "k-over", -1.0), new_job("plain")])
    leased = journal.lease(["q"], "w1", 3, 30.0)
    assert journal.complete([(j.id, j.lease_id) for j in leased]) == 3
    assert journal.prune(FINAL_AGES_NEGATIVE, 100) == 2
    assert journal.get("over") is None and journal.get("plain") is None
    assert state(journal, "held") is JobState.SUCCEEDED
    assert journal.holders(["k-held", "k-over"]) == {"k-held": "held"}
    journal.enqueue([_held_for("again", "k-held", HOUR)])
    assert journal.get("again") is None  # the key is still held: nothing added


BAD_PRUNES = [
    ({JobState.READY: 1.0}, 10), ({JobState.LEASED: 1.0}, 10), ({"bogus": 1.0}, 10),
    ({JobState.DEAD: math.nan}, 10), ({JobState.DEAD: math.inf}, 10), ({JobState.DEAD: 1e12}, 10),
    ({JobState.DEAD: "1d"}, 10), ({JobState.DEAD: True}, 10), ({JobState.DEAD: 1.0}, -1),
    ({JobState.DEAD: 1.0}, 2.5), ({JobState.DEAD: 1.0}, True),
]


def test_prune_refuses_a_live_state_a_bad_age_or_a_bad_limit(journal: Journal) -> None:
    journal.enqueue([new_job("ready")])
    for older_than, limit in BAD_PRUNES:
        with pytest.raises(ValueError, match="prune"):
            journal.prune(older_than, limit)  # type: ignore[arg-type]
    assert state(journal, "ready") is JobState.READY


# -- cron schedules: definitions, and last_fired moved with the enqueue (C5, F2) ------------------------
def _schedule(name: str, *, cron: str = "*/5 * * * *", source: str = "api", added_at: float = 1_000.0,
              last_fired: float | None = None, catch_up: str = "last") -> ScheduleRow:
    return ScheduleRow(name, cron, "tests.noop", b"\x92\x90\x80", None, "UTC", catch_up, source, added_at, last_fired)


def test_schedules_round_trip_and_a_new_definition_keeps_last_fired(backend: Backend, journal: Journal) -> None:
    assert journal.schedules() == []
    hostile = "x'); DROP TABLE actorq_schedules;--"
    journal.put_schedules([_schedule("b", source="file"), _schedule("a", last_fired=1_500.0), _schedule(hostile)])
    assert [s.name for s in journal.schedules()] == sorted(["a", "b", hostile])
    assert journal.schedules()[0] == _schedule("a", last_fired=1_500.0)
    # Redefined (another cron, queue, source; a later added_at): the definition is replaced,
    # added_at and last_fired are kept, so what fired does not fire again.
    changed = ScheduleRow("a", "0 * * * *", "tests.other", b"\x92\x91\x01\x80", "q2", "Europe/Berlin", "all",
                          "file", 9_999.0, None)
    backend.open().put_schedules([changed])
    assert journal.schedules()[0] == changed._replace(added_at=1_000.0, last_fired=1_500.0)
    assert journal.remove_schedules(["a", "no-such", "a"]) == 1
    assert [s.name for s in journal.schedules()] == sorted(["b", hostile])
    assert journal.remove_schedules([]) == 0
    journal.put_schedules([])


def test_a_schedule_row_with_an_unknown_catch_up_is_refused(journal: Journal) -> None:
    with pytest.raises(JournalError):
        journal.put_schedules([_schedule("ok"), _schedule("bad", catch_up="sometimes")])
    assert journal.schedules() == []


def test_fire_schedule_moves_last_fired_and_enqueues_together_once(backend: Backend, journal: Journal) -> None:
    journal.put_schedules([_schedule("s")])
    first = [new_job("s-1"), new_job("s-2")]
    assert journal.fire_schedule("s", None, 1_300.0, first) is True
    assert journal.schedules()[0].last_fired == 1_300.0
    assert journal.counts() == {"q": {"ready": 2}}
    # Another scheduler (another node, or this one before a restart) read last_fired before
    # that firing: its compare-and-set fails and it enqueues nothing, even though the jobs
    # of the first firing are finished by now.
    for leased in journal.lease(["q"], "w", 10, 30.0):
        journal.complete([(leased.id, leased.lease_id)])
    other = backend.open()
    assert other.fire_schedule("s", None, 1_300.0, [new_job("s-1-again")]) is False
    assert other.fire_schedule("s", 1_000.0, 1_300.0, [new_job("s-1-again")]) is False
    assert journal.get("s-1-again") is None
    # From the value it read, it moves on; times only go forward by the caller's choice.
    assert other.fire_schedule("s", 1_300.0, 1_600.0, []) is True  # a skipped time moves it too
    assert journal.schedules()[0].last_fired == 1_600.0
    assert journal.fire_schedule("gone", None, 1_300.0, [new_job("never")]) is False  # removed or unknown
    assert journal.get("never") is None
    assert journal.counts() == {"q": {"succeeded": 2}}


def test_a_refused_job_undoes_the_firing_with_it(journal: Journal) -> None:
    journal.put_schedules([_schedule("s")])
    bad = NewJob(id="bad", queue="q", task="tests.noop", payload=b"\x92\x90\x80", max_attempts=0)  # CHECK refuses it
    with pytest.raises(JournalError):
        with journal.transaction():
            journal.fire_schedule("s", None, 1_300.0, [new_job("fine"), bad])
    assert journal.schedules()[0].last_fired is None
    assert journal.get("fine") is None


# -- pause and resume a queue; a job's own time limit ------------------------------------------


def test_a_paused_queue_leases_nothing_until_resumed(backend: Backend, journal: Journal) -> None:
    journal.enqueue([new_job("a1", queue="a"), new_job("a2", queue="a"), new_job("b1", queue="b")])
    (running,) = journal.lease(["a"], "w1", 1, HOUR)
    assert journal.paused_queues() == []
    assert journal.pause_queue("a") is True
    assert journal.pause_queue("a") is False  # already paused: still paused
    assert journal.paused_queues() == ["a"]
    other = backend.open()  # every connection, so every node on a shared journal, sees it
    try:
        assert other.paused_queues() == ["a"]
        assert [j.id for j in other.lease(["a", "b"], "w2", 10, HOUR)] == ["b1"]
    finally:
        other.close()
    assert journal.lease(["a"], "w1", 10, HOUR) == []
    assert not journal.has_ready(["a"])  # the scheduler wakes no dispatcher for it
    # jobs already leased finish
    assert journal.complete([(running.id, running.lease_id)]) == 1
    assert state(journal, "a2") is JobState.READY and journal.counts()["a"] == {"succeeded": 1, "ready": 1}
    assert journal.resume_queue("a") is True
    assert journal.resume_queue("a") is False
    assert journal.paused_queues() == []
    assert journal.has_ready(["a"])
    assert [j.id for j in journal.lease(["a"], "w1", 10, HOUR)] == ["a2"]


def test_other_queues_lease_while_one_is_paused(journal: Journal) -> None:
    journal.enqueue([new_job("a1", queue="a"), new_job("b1", queue="b")])
    journal.pause_queue("a")
    journal.pause_queue("never-used")  # a queue need not exist to be paused
    assert [j.id for j in journal.lease(["a", "b"], "w1", 10, HOUR)] == ["b1"]
    assert journal.has_ready(["a", "b"]) is False
    assert journal.paused_queues() == ["a", "never-used"]


def test_h11_hostile_queue_names_pause_as_data(journal: Journal) -> None:
    name = "q'); DROP TABLE actorq_jobs; --"
    journal.enqueue([new_job("x", queue=name)])
    assert journal.pause_queue(name) is True
    assert journal.lease([name], "w1", 1, HOUR) == []
    assert journal.paused_queues() == [name]
    assert journal.resume_queue(name) is True
    assert [j.id for j in journal.lease([name], "w1", 1, HOUR)] == ["x"]


def test_a_jobs_time_limit_is_kept_and_leased_with_it(journal: Journal) -> None:
    journal.enqueue([NewJob("limited", "q", "tests.noop", b"\x92\x90\x80", timeout=0.2),
                     NewJob("whole", "q", "tests.noop", b"\x92\x90\x80", timeout=30),
                     NewJob("free", "q", "tests.noop", b"\x92\x90\x80")])
    leased = {j.id: j.timeout for j in journal.lease(["q"], "w1", 10, HOUR)}
    assert leased == {"limited": 0.2, "whole": 30.0, "free": None}
    assert type(leased["whole"]) is float  # as the worker's frame check wants it


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, True, "1"])
def test_g12_a_time_limit_the_journal_cannot_hold_is_refused_where_the_job_is_made(bad: object) -> None:
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        NewJob("j", "q", "tests.noop", b"", timeout=bad)  # type: ignore[arg-type]


def test_b1_cancelled_names_the_cancelled_jobs_among_those_asked(journal: Journal) -> None:
    jobs = job_in_every_state(journal)
    assert journal.cancelled([]) == []
    everything = ["scheduled", "ready", "retry", "leased", "succeeded", "failed", "dead", "cancelled", "nope"]
    assert journal.cancelled(everything) == ["cancelled"]
    assert journal.cancel("leased")  # what a node polls for: its running job was cancelled elsewhere
    assert sorted(journal.cancelled(everything)) == ["cancelled", "leased"]
    held = jobs["leased"]
    assert journal.complete([(held.id, held.lease_id)]) == 0  # the worker's late ack is fenced


# -- queue limits: concurrency and max_depth (docs/flow-control.md) -----------------------------


def test_queue_concurrency_bounds_every_lease(journal: Journal) -> None:
    from actorq.journal.protocol import QueueLimits

    journal.declare_queues([QueueLimits("lim", concurrency=3)])
    assert journal.queue_limits()["lim"] == QueueLimits("lim", 3, None, None)
    journal.enqueue([new_job(f"l{i}", queue="lim") for i in range(10)] + [new_job(f"f{i}") for i in range(4)])
    first = journal.lease(["lim", "q"], "node/1/a", 10, 60)
    assert sorted(j.queue for j in first).count("lim") == 3  # the limit, not the 10 asked
    assert [j.queue for j in first].count("q") == 4  # an unlimited queue beside it leases as before
    assert journal.lease(["lim"], "node/2/b", 10, 60) == []  # another owner: the limit is the queue's
    # two limited queues in one lease share what it asks for
    journal.declare_queues([QueueLimits("lim", concurrency=3), QueueLimits("aa", concurrency=5),
                            QueueLimits("two", concurrency=5)])
    journal.enqueue([new_job("a0", queue="aa")] + [new_job(f"t{i}", queue="two") for i in range(5)])
    assert sorted(j.queue for j in journal.lease(["two", "aa"], "node/3/c", 2, 60)) == ["aa", "two"]
    done = next(j for j in first if j.queue == "lim")
    assert journal.complete([(done.id, done.lease_id)]) == 1
    again = journal.lease(["lim"], "node/2/b", 10, 60)
    assert len(again) == 1  # one finished: one more may run
    # a re-declaration replaces the row (the file wins); no concurrency lifts the limit
    journal.declare_queues([QueueLimits("lim", max_depth=100)])
    assert len(journal.lease(["lim"], "node/2/b", 10, 60)) == 6


def test_queue_node_concurrency_counts_the_node_prefix(backend: Backend, journal: Journal) -> None:
    from actorq.journal.protocol import QueueLimits

    journal.declare_queues([QueueLimits("lim", node_concurrency=2)], node_prefix="a/")
    assert journal.queue_limits()["lim"] == QueueLimits("lim", None, None, None)  # never stored
    journal.enqueue([new_job(f"l{i}", queue="lim") for i in range(6)])
    assert len(journal.lease(["lim"], "a/1/x", 5, 60)) == 2
    assert journal.lease(["lim"], "a/2/y", 5, 60) == []  # the node's other worker: same node
    if journal.shared:  # another node (its own journal, no node limit) is not bound by this node's
        other = backend.open()
        assert len(other.lease(["lim"], "b/1/z", 5, 60)) == 4
        other.close()


def test_queue_max_depth_refuses_past_the_limit(journal: Journal) -> None:
    from actorq.errors import QueueFull
    from actorq.journal.protocol import QueueLimits

    journal.declare_queues([QueueLimits("small", max_depth=3)])
    assert journal.enqueue([new_job("a", queue="small"), new_job("b", queue="small", run_at=time.time() + HOUR)]) == 2
    with pytest.raises(QueueFull) as caught:  # all or nothing without `refused`
        journal.enqueue([new_job("c", queue="small"), new_job("d", queue="small"), new_job("free")])
    assert (caught.value.queue, caught.value.depth, caught.value.limit) == ("small", 3, 3)
    assert "'small'" in str(caught.value) and "max_depth 3" in str(caught.value)
    assert journal.get("c") is None and journal.get("free") is None
    refused: list = []
    assert journal.enqueue([new_job("c", queue="small"), new_job("d", queue="small"), new_job("free")],
                           refused=refused) == 2
    assert [(job.id, error.depth) for job, error in refused] == [("d", 3)]
    assert journal.get("d") is None and state(journal, "free") is JobState.READY
    assert journal.enqueue([new_job("c", queue="small")]) == 0  # a re-sent id takes no room: no refusal
    # a leased job no longer waits: room for one more
    assert len(journal.lease(["small"], "w1", 1, HOUR)) == 1
    assert journal.enqueue([new_job("d", queue="small")]) == 1
    with pytest.raises(QueueFull):
        journal.enqueue([new_job("e", queue="small")])


def test_a_schedule_firing_into_a_full_queue_moves_on_without_its_job(journal: Journal) -> None:
    from actorq.journal.protocol import QueueLimits

    journal.declare_queues([QueueLimits("small", max_depth=1)])
    journal.put_schedules([_schedule("tick")])
    assert journal.enqueue([new_job("waiting", queue="small")]) == 1
    assert journal.fire_schedule("tick", None, 60.0, [new_job("fired", queue="small")])
    assert journal.get("fired") is None
    assert [row.last_fired for row in journal.schedules()] == [60.0]


# -- the operator's reads and clears (actorq jobs / queues) --------------------------------------


def test_list_jobs_pages_by_id_from_a_cursor_with_every_filter(journal: Journal) -> None:
    from actorq.journal.protocol import MAX_LIST_LIMIT

    job_in_every_state(journal)  # one job per state in queue "q", named after its state
    journal.enqueue([new_job("a1", queue="other"), new_job("a2", queue="other", task="t2"),
                     new_job("zz", queue="other", run_at=time.time() + HOUR)])
    everything = sorted([s.value for s in JobState] + ["a1", "a2", "zz"])
    assert [j.id for j in journal.list_jobs(limit=100)] == everything
    first = journal.list_jobs(limit=4)
    second = journal.list_jobs(limit=4, after=first[-1].id)
    assert [j.id for j in first + second] == everything[:8]  # keyset pages: no gap, no repeat
    assert journal.list_jobs(limit=4, after="zz") == []
    # a state alone: merged across queues in id order
    assert [j.id for j in journal.list_jobs(state=JobState.READY, limit=10)] == ["a1", "a2", "ready"]
    assert [j.id for j in journal.list_jobs(state=JobState.READY, limit=2, after="a1")] == ["a2", "ready"]
    assert [j.id for j in journal.list_jobs(state=JobState.SCHEDULED, queue="other", limit=10)] == ["zz"]
    # a queue alone: every state of it; a task narrows either
    assert [j.id for j in journal.list_jobs(queue="other", limit=10)] == ["a1", "a2", "zz"]
    assert [j.id for j in journal.list_jobs(queue="other", task="t2", limit=10)] == ["a2"]
    assert [j.id for j in journal.list_jobs(task="t2", limit=10)] == ["a2"]
    assert journal.list_jobs(queue="nope\x00", limit=10) == [] and journal.list_jobs(queue="nope", limit=10) == []
    dead = journal.list_jobs(state=JobState.DEAD, limit=1)[0]
    assert (dead.queue, dead.task, dead.state, dead.attempts, dead.max_attempts) == ("q", "tests.noop", JobState.DEAD, 1, 1)
    assert dead.finished_at is not None and dead.last_error == "ValueError: boom" and dead.lease_owner is None
    leased = journal.list_jobs(state=JobState.LEASED, limit=1)[0]
    assert leased.lease_owner == "w1" and leased.finished_at is None
    assert abs(leased.created_at - time.time()) < HOUR and leased.run_at <= time.time() + 1
    for bad in (0, MAX_LIST_LIMIT + 1, True):
        with pytest.raises(ValueError, match="limit"):
            journal.list_jobs(limit=bad)
    with pytest.raises(ValueError, match="unknown state"):
        journal.list_jobs(state="lost", limit=1)  # type: ignore[arg-type]


def test_inspect_returns_every_kept_field_and_each_attempts_error(journal: Journal) -> None:
    journal.enqueue([NewJob("x", "q", "t", b"\x92\x91\x01\x80", priority=3, max_attempts=3, unique_key="k",
                            timeout=9.0)])
    for n in (1, 2):
        job = lease_one(journal)
        assert journal.fail([Failure(job.id, job.lease_id, f"OSError: try {n}", JobState.READY,
                                     traceback=f"Traceback {n}")]) == 1
    job = lease_one(journal)
    assert journal.complete([(job.id, job.lease_id)], results={"x": KeptResult(b"\xa2ok", HOUR)}) == 1
    detail = journal.inspect("x")
    assert detail is not None
    assert (detail.queue, detail.task, detail.state, detail.payload, detail.priority) == (
        "q", "t", JobState.SUCCEEDED, b"\x92\x91\x01\x80", 3)
    assert (detail.attempts, detail.max_attempts, detail.timeout, detail.unique_key) == (3, 3, 9.0, "k")
    assert (detail.lease_id, detail.lease_owner, detail.lease_expires) == (None, None, None)
    assert detail.result == b"\xa2ok" and detail.result_expires is not None and detail.finished_at is not None
    assert detail.last_error == "OSError: try 2" and detail.last_traceback == "Traceback 2"
    assert [(e.attempt, e.error) for e in detail.errors] == [(1, "OSError: try 1"), (2, "OSError: try 2")]
    assert all(abs(e.at - time.time()) < HOUR for e in detail.errors)
    journal.enqueue([new_job("held")])
    held = lease_one(journal)
    live = journal.inspect("held")
    assert live is not None and live.lease_owner == "w1" and live.lease_id == held.lease_id
    assert live.lease_expires is not None and live.lease_expires > time.time()
    assert journal.inspect("nope") is None and journal.inspect("nope\x00") is None


def test_oldest_ready_names_each_queue_s_earliest_ready_job(journal: Journal) -> None:
    assert journal.oldest_ready() == {}
    journal.enqueue([new_job("b1", queue="b"), new_job("a1", queue="a"), new_job("a2", queue="a"),
                     new_job("c1", queue="c", run_at=time.time() + HOUR)])
    oldest = journal.oldest_ready()
    assert sorted(oldest) == ["a", "b"]  # "c" has nothing ready
    assert oldest["a"] == journal.inspect("a1").created_at  # type: ignore[union-attr]
    # the earliest by id, whatever the priorities: each priority's first job is looked at
    for n, priority in enumerate((5, -3, 5, 0)):  # an enqueue each: d1 is created first
        journal.enqueue([new_job(f"d{n + 1}", queue="d", priority=priority)])
    first, urgent = journal.inspect("d1"), journal.inspect("d2")
    assert first is not None and urgent is not None and first.created_at < urgent.created_at
    assert journal.oldest_ready()["d"] == first.created_at


def test_clear_queue_deletes_waiting_jobs_of_one_queue_in_batches_with_their_errors(journal: Journal) -> None:
    job_in_every_state(journal)
    journal.enqueue([new_job(f"r{n}") for n in range(5)] + [new_job("keep", queue="other")])
    assert journal.clear_queue("q", [JobState.READY], 0) == 0
    assert journal.clear_queue("q", [JobState.READY], 4) == 4
    assert journal.clear_queue("q", [JobState.READY], 4) == 2  # less than the batch: done
    assert journal.clear_queue("q", [JobState.SCHEDULED, JobState.RETRY], 10) == 2
    assert journal.get("retry") is None and journal.inspect("retry") is None
    # the scheduled job held its ordering key: deleting it admitted the next job of the key
    assert state(journal, "blocked") is JobState.READY
    assert journal.clear_queue("q", [JobState.READY], 10) == 1
    counts = journal.counts()
    assert counts["q"] == {"leased": 1, "succeeded": 1, "failed": 1, "dead": 1, "cancelled": 1}
    assert counts["other"] == {"ready": 1}  # another queue is never touched
    for bad in (JobState.LEASED, JobState.DEAD, "lost"):
        with pytest.raises(ValueError, match="waiting"):
            journal.clear_queue("q", [bad], 10)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="limit"):
        journal.clear_queue("q", [JobState.READY], -1)


# -- flow-control keys: ordering keys and concurrency keys (docs/flow-control-keys.md) ----------


def _flow_job(job_id: str, *, ordering: str | None = None, concurrency: str | None = None, limit: int | None = None,
           discard: bool = False, run_at: float | None = None, priority: int = 0) -> NewJob:
    return NewJob(job_id, "q", "tests.noop", b"\x92\x90\x80", priority=priority, run_at=run_at, max_attempts=3,
                  ordering_key=ordering, concurrency_key=concurrency, concurrency_limit=limit,
                  discard_over_limit=discard)


def _leased_ids(journal: Journal, limit: int = 100, owner: str = "w1") -> list[str]:
    return sorted(j.id for j in journal.lease(["q"], owner, limit, HOUR))


def _done(journal: Journal, leased: list) -> None:  # type: ignore[type-arg]
    assert journal.complete([(j.id, j.lease_id) for j in leased]) == len(leased)


def test_ordering_keys_run_one_job_of_a_key_at_a_time_in_enqueue_order(journal: Journal) -> None:
    # a lower priority does not jump its key's order; other keys and jobs without a key run beside
    journal.enqueue([_flow_job("a1", ordering="A"), _flow_job("a2", ordering="A", priority=-5), _flow_job("a3", ordering="A"),
                     _flow_job("b1", ordering="B"), _flow_job("b2", ordering="B"), new_job("free")])
    seen: list[list[str]] = []
    while True:
        leased = journal.lease(["q"], "w1", 100, HOUR)
        if not leased:
            break
        seen.append(sorted(j.id for j in leased))
        _done(journal, leased)
    assert seen == [["a1", "b1", "free"], ["a2", "b2"], ["a3"]]


def test_an_ordering_keys_retry_keeps_the_next_job_waiting(journal: Journal) -> None:
    journal.enqueue([_flow_job("first", ordering="K"), _flow_job("second", ordering="K")])
    [first] = journal.lease(["q"], "w1", 10, HOUR)
    assert first.id == "first"
    assert journal.fail([fail(first, retry_at=time.time() - 1)]) == 1  # waits in retry
    assert state(journal, "first") is JobState.RETRY
    assert journal.lease(["q"], "w1", 10, HOUR) == []  # "second" waits for it
    journal.promote()
    [again] = journal.lease(["q"], "w1", 10, HOUR)
    assert (again.id, again.attempt) == ("first", 2)
    _done(journal, [again])
    assert _leased_ids(journal) == ["second"]


def test_an_ordering_keys_job_whose_owner_died_blocks_the_next_until_it_is_reclaimed_and_finished(
        journal: Journal) -> None:
    journal.enqueue([_flow_job("first", ordering="K"), _flow_job("second", ordering="K")])
    assert _leased_ids(journal, owner="dead-worker") == ["first"]
    assert journal.lease(["q"], "w2", 10, HOUR) == []
    assert reclaim(journal, "dead-worker", "worker died") == 1
    assert state(journal, "first") is JobState.READY
    [first] = journal.lease(["q"], "w2", 10, HOUR)  # the reclaimed job again, not the next one
    assert first.id == "first"
    assert journal.lease(["q"], "w2", 10, HOUR) == []
    _done(journal, [first])
    assert _leased_ids(journal) == ["second"]


@pytest.mark.parametrize("end", ["dead", "failed", "cancelled"])
def test_an_ordering_keys_job_that_ends_without_success_lets_the_next_run(journal: Journal, end: str) -> None:
    journal.enqueue([_flow_job("first", ordering="K"), _flow_job("second", ordering="K")])
    [first] = journal.lease(["q"], "w1", 10, HOUR)
    if end == "cancelled":
        assert journal.cancel("first")
    else:
        assert journal.fail([fail(first, state=JobState(end))]) == 1
    assert _leased_ids(journal) == ["second"]


def test_an_earlier_scheduled_job_of_an_ordering_key_holds_back_a_later_ready_one(journal: Journal) -> None:
    journal.enqueue([_flow_job("later-run", ordering="K", run_at=time.time() + HOUR), _flow_job("now", ordering="K")])
    assert journal.lease(["q"], "w1", 10, HOUR) == []
    assert journal.cancel("later-run")
    assert _leased_ids(journal) == ["now"]


def test_a_concurrency_key_leases_at_most_its_limit_at_once(journal: Journal) -> None:
    journal.enqueue([_flow_job(f"c{n}", concurrency="T", limit=3) for n in range(7)] + [new_job("free")])
    first = journal.lease(["q"], "w1", 2, HOUR)  # the batch's own limit first
    assert sorted(j.id for j in first) == ["c0", "c1"]
    assert _leased_ids(journal) == ["c2", "free"]  # one slot left of three, in one lease of many
    assert journal.lease(["q"], "w2", 100, HOUR) == []
    _done(journal, first)
    assert _leased_ids(journal) == ["c3", "c4"]
    assert journal.lease(["q"], "w2", 100, HOUR) == []


def test_a_batch_fills_its_keys_free_slots_in_id_order_and_the_rest_wait(journal: Journal) -> None:
    # two jobs of T run already: a batch of five more (in shuffled order) admits the next one by id
    journal.enqueue([_flow_job("t0", concurrency="T", limit=3), _flow_job("t1", concurrency="T", limit=3)])
    journal.enqueue([_flow_job(f"t{n}", concurrency="T", limit=3) for n in (5, 3, 6, 2, 4)]
                    + [_flow_job(f"o{n}", ordering="O") for n in range(3)])
    assert _leased_ids(journal) == ["o0", "t0", "t1", "t2"]
    assert journal.lease(["q"], "w2", 100, HOUR) == []


def test_a_batch_whose_insert_skipped_a_keyed_row_still_admits_the_key(journal: Journal) -> None:
    # "k1" is re-sent (already finished): the batch's next job of the key counted it before
    # itself; once the row turns out skipped, the key's free slot still goes to "k2"
    journal.enqueue([_flow_job("k1", ordering="K")])
    _done(journal, journal.lease(["q"], "w1", 10, HOUR))
    assert journal.enqueue([_flow_job("k1", ordering="K"), _flow_job("k2", ordering="K"),
                            _flow_job("k3", ordering="K")]) == 2
    assert _leased_ids(journal) == ["k2"]
    assert state(journal, "k3") is JobState.BLOCKED


def test_a_key_with_no_free_slot_does_not_hold_back_other_keys(journal: Journal) -> None:
    journal.enqueue([_flow_job(f"full{n}", concurrency="busy") for n in range(5)]
                    + [_flow_job("other", concurrency="quiet"), new_job("zfree")])
    assert _leased_ids(journal, 1) == ["full0"]
    # the four waiting jobs of the full key come first in order, yet a lease of one takes the next eligible
    assert _leased_ids(journal, 1) == ["other"]
    assert _leased_ids(journal, 1) == ["zfree"]


def test_a_concurrency_keys_crashed_job_holds_its_slot_until_reclaimed(journal: Journal) -> None:
    journal.enqueue([_flow_job("c0", concurrency="T"), _flow_job("c1", concurrency="T")])
    assert _leased_ids(journal, owner="dead-worker") == ["c0"]
    assert journal.lease(["q"], "w2", 10, HOUR) == []
    assert reclaim(journal, "dead-worker", "worker died") == 1
    assert _leased_ids(journal, 1) == ["c0"]


def test_a_discarding_enqueue_adds_nothing_once_its_key_has_limit_live_jobs(journal: Journal) -> None:
    # three in one batch with a limit of two: the third is discarded (it sees the batch's first two)
    assert journal.enqueue([_flow_job(f"d{n}", concurrency="T", limit=2, discard=True) for n in range(3)]) == 2
    assert journal.get("d2") is None
    assert journal.enqueue([_flow_job("late", concurrency="T", limit=2, discard=True)]) == 0
    assert journal.enqueue([_flow_job("x-blocking", concurrency="T", limit=2)]) == 1  # the default waits instead
    leased = journal.lease(["q"], "w1", 10, HOUR)
    _done(journal, leased)
    assert sorted(j.id for j in leased) == ["d0", "d1"]
    # one live job left ("x-blocking"): a slot is free again
    assert journal.enqueue([_flow_job("again", concurrency="T", limit=2, discard=True)]) == 1


@pytest.mark.parametrize("fields, message", [
    ({"concurrency_key": "T", "concurrency_limit": 0}, "concurrency_limit must be an integer from 1"),
    ({"concurrency_key": "T", "concurrency_limit": True}, "concurrency_limit must be an integer from 1"),
    ({"concurrency_key": "T", "concurrency_limit": 1.5}, "concurrency_limit must be an integer from 1"),
    ({"concurrency_key": "T", "concurrency_limit": 10**9}, "concurrency_limit must be an integer from 1"),
    ({"concurrency_limit": 2}, "concurrency_limit needs a concurrency_key"),
    ({"discard_over_limit": True}, "discard_over_limit needs a concurrency_key"),
])
def test_g12_concurrency_fields_are_checked_where_the_job_is_made(fields: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        NewJob("j", "q", "t", b"", **fields)
    assert NewJob("j", "q", "t", b"", concurrency_key="T").concurrency_limit == 1


def test_a_tasks_concurrency_limit_and_rule_are_in_the_catalog(journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("reports.render", "default", 0, 3, None, 2, "discard"),
                           TaskDefaults("plain", "default", 0, 3)])
    assert journal.declared_tasks(["reports.render", "plain"]) == {
        "reports.render": TaskDefaults("reports.render", "default", 0, 3, None, 2, "discard"),
        "plain": TaskDefaults("plain", "default", 0, 3, None, None, None)}


@pytest.mark.parametrize("end", ["cancel", "release", "retry", "complete", "failed", "dead"])
def test_a_concurrency_slot_is_held_until_its_job_finishes(journal: Journal, end: str) -> None:
    """A slot is held from admission to a final state: a release or a retry keeps it (the
    same job runs again first); success, failure, death and cancel admit the next."""
    journal.enqueue([_flow_job("c0", concurrency="T"), _flow_job("c1", concurrency="T")])
    [first] = journal.lease(["q"], "w1", 10, HOUR)
    assert journal.lease(["q"], "w1", 10, HOUR) == []
    assert state(journal, "c1") is JobState.BLOCKED
    if end == "cancel":
        assert journal.cancel(first.id)
    elif end == "release":
        assert journal.release([(first.id, first.lease_id)]) == 1
    elif end == "retry":
        assert journal.fail([fail(first, retry_at=0.0)]) == 1
        assert journal.promote() == 1
    elif end == "failed":
        assert journal.fail([fail(first, state=JobState.FAILED)]) == 1
    elif end == "dead":
        assert journal.fail([fail(first, state=JobState.DEAD)]) == 1
    else:
        _done(journal, [first])
    kept = end in ("release", "retry")
    assert state(journal, "c1") is (JobState.BLOCKED if kept else JobState.READY)
    [second] = journal.lease(["q"], "w1", 1, HOUR)
    assert second.id == ("c0" if kept else "c1")
    # the key's last job ends with nothing blocked behind it: nothing to admit, no error
    assert journal.complete([(second.id, second.lease_id)]) == 1


# -- kept counts and per-queue figures (docs/architecture.md, "Queue figures") ------------------


def scanned_counts(journal: Journal) -> dict[str, dict[str, int]]:
    """The counts by a pass over every job (each journal's test-only ``_scan_counts``)."""
    return journal._scan_counts()  # type: ignore[attr-defined,no-any-return]


def test_counts_kept_as_jobs_move_match_a_count_of_every_job(backend: Backend, journal: Journal) -> None:
    """Every path that moves a job keeps counts() equal to a GROUP BY of the jobs."""
    checked: list[str] = []

    def check(step: str) -> None:
        checked.append(step)
        assert journal.counts() == scanned_counts(journal), f"after {step}"

    leases = job_in_every_state(journal)  # enqueue, admit, lease, complete, fail to retry/failed/dead, cancel
    journal.enqueue([new_job(f"o{n}", queue="other", run_at=time.time() - 5) for n in range(4)]
                    + [new_job("o-later", queue="other", run_at=time.time() + HOUR)])
    check("a job in every state")
    journal.enqueue([new_job("o0", queue="other")])  # a re-sent id: no row, no count
    check("a re-sent id")
    a, b = journal.lease(["other"], "w2", 2, HOUR)
    assert journal.release([(a.id, a.lease_id)]) == 1  # back to ready
    check("lease and release")
    assert reclaim(journal, "w2", "node died") == 1  # leased -> retry (a crash counts)
    check("reclaim")
    journal.complete([(leases["leased"].id, leases["leased"].lease_id)])
    journal.complete([(leases["leased"].id, leases["leased"].lease_id)])  # a stale ack moves nothing
    check("complete and a stale ack")
    assert journal.retry_dead("dead") and journal.retry_dead("failed")  # by hand: back to ready
    check("retry by hand")
    assert journal.cancel("ready") and not journal.cancel("succeeded")
    check("cancel")
    journal.promote()
    check("promote")
    assert journal.clear_queue("q", [JobState.READY, JobState.SCHEDULED, JobState.RETRY], 100) >= 1
    check("clear a queue (admits the next job of a key)")
    backend.backdate_finish(["succeeded", "cancelled", "leased"], 2 * HOUR)
    assert journal.prune({JobState.SUCCEEDED: HOUR, JobState.CANCELLED: HOUR}, 100) == 3
    check("prune")
    assert journal.counts()["other"] == scanned_counts(journal)["other"]
    assert all(n > 0 for states in journal.counts().values() for n in states.values())  # no zero rows shown


def test_counts_of_a_rolled_back_transaction_roll_back_too(journal: Journal) -> None:
    journal.enqueue([new_job("kept")])
    with pytest.raises(RuntimeError):
        with journal.transaction():
            journal.enqueue([new_job("gone"), new_job("gone-too", queue="q2")])
            raise RuntimeError("roll back")
    assert journal.counts() == scanned_counts(journal) == {"q": {"ready": 1}}


def test_queue_stats_count_finishes_leases_and_the_wait_from_due_to_lease(journal: Journal) -> None:
    assert journal.queue_stats() == {}
    now = time.time()
    journal.enqueue([new_job("late", run_at=now - 100), new_job("due", run_at=now - 40),
                     new_job("idle", queue="idle")])
    first, second = journal.lease(["q"], "w1", 2, HOUR)
    journal.complete([(first.id, first.lease_id)])
    journal.fail([fail(second, state=JobState.DEAD)])
    stats = journal.queue_stats(60)
    assert set(stats) == {"q"}  # a queue that leased and finished nothing is left out
    q = stats["q"]
    assert (q.finished, q.failed, q.leased) == (2, 1, 2)
    assert 60 <= q.seconds <= 70 + 5  # the window and the rest of its first slot (and a slow test)
    assert q.wait_max == pytest.approx(100, abs=5)  # by each backend's clock, near the test's
    assert q.wait_mean == pytest.approx(70, abs=5)
    assert q.rate == pytest.approx(2 / q.seconds)
    for bad in (0, 9.9, 3601, float("nan"), "60", True):
        with pytest.raises(ValueError, match="window"):
            journal.queue_stats(bad)  # type: ignore[arg-type]
    journal.maintain()  # keeps the last hour's slots
    assert journal.queue_stats(3600)["q"].finished == 2
