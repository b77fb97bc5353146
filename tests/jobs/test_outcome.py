"""`decide`: every row of the outcome table, and every end of an attempt against every policy."""

from __future__ import annotations

import json

import pytest

from actorq.jobs.outcome import DEFAULT_POLICY, AttemptEnd, Outcome, TaskPolicy, decide
from actorq.jobs.retry import RetryPolicy
from actorq.journal.protocol import JobState

BACKOFF = RetryPolicy(base=2.0, factor=3.0, cap=100.0, jitter=0.5)
RECLAIM = TaskPolicy(max_attempts=3, retry=BACKOFF, on_crash="reclaim")
FAIL_ON_CRASH = TaskPolicy(max_attempts=3, retry=BACKOFF, on_crash="fail")
E = AttemptEnd
S = JobState

# (end, policy, attempt, max_attempts, spread, outcome): one line per row of the table in
# actorq/jobs/outcome.py, each on both sides of its condition where it has one
TABLE = [
    # a returned task succeeds, whatever the attempt or the policy
    (E.OK, RECLAIM, 1, 3, 0.0, Outcome(S.SUCCEEDED)),
    (E.OK, FAIL_ON_CRASH, 3, 3, 0.9, Outcome(S.SUCCEEDED)),
    # cancelled while running
    (E.CANCELLED, RECLAIM, 1, 3, 0.0, Outcome(S.CANCELLED)),
    (E.CANCELLED, FAIL_ON_CRASH, 3, 3, 0.0, Outcome(S.CANCELLED)),
    # Discard: failed at once, attempts left or not
    (E.DISCARDED, RECLAIM, 1, 3, 0.0, Outcome(S.FAILED)),
    (E.DISCARDED, RECLAIM, 3, 3, 0.0, Outcome(S.FAILED)),
    # not retryable (PermanentError, retry_on / dont_retry_on): failed at once, attempts left or not
    (E.PERMANENT, RECLAIM, 1, 3, 0.0, Outcome(S.FAILED)),
    (E.PERMANENT, FAIL_ON_CRASH, 3, 3, 0.0, Outcome(S.FAILED)),
    # can never run (unknown task, payload too large): dead at once
    (E.UNRUNNABLE, RECLAIM, 1, 3, 0.0, Outcome(S.DEAD)),
    (E.UNRUNNABLE, FAIL_ON_CRASH, 1, 3, 0.0, Outcome(S.DEAD)),
    # raised with attempts left: retry after the backoff of that attempt (base * factor**(n-1), jittered)
    (E.RAISED, RECLAIM, 1, 3, 0.5, Outcome(S.RETRY, 2.0)),
    (E.RAISED, RECLAIM, 2, 3, 0.5, Outcome(S.RETRY, 6.0)),
    (E.RAISED, RECLAIM, 1, 3, 0.0, Outcome(S.RETRY, 1.0)),  # the low edge of the ±50 % jitter
    (E.RAISED, FAIL_ON_CRASH, 2, 3, 0.5, Outcome(S.RETRY, 6.0)),  # on_crash is about crashes only
    (E.TIMED_OUT, RECLAIM, 1, 3, 0.5, Outcome(S.RETRY, 2.0)),
    # raised on the last attempt (or past it): dead
    (E.RAISED, RECLAIM, 3, 3, 0.5, Outcome(S.DEAD)),
    (E.RAISED, RECLAIM, 4, 3, 0.5, Outcome(S.DEAD)),
    (E.TIMED_OUT, RECLAIM, 3, 3, 0.5, Outcome(S.DEAD)),
    # the job's own max_attempts decides, not the policy's (the producer may have set it)
    (E.RAISED, RECLAIM, 3, 5, 0.5, Outcome(S.RETRY, 18.0)),
    (E.RAISED, RECLAIM, 1, 1, 0.5, Outcome(S.DEAD)),
    # crashes and expired leases: on_crash="fail" ends the job failed, attempts left or not
    (E.CRASHED, FAIL_ON_CRASH, 1, 3, 0.0, Outcome(S.FAILED)),
    (E.CRASHED, FAIL_ON_CRASH, 3, 3, 0.0, Outcome(S.FAILED)),
    (E.LEASE_EXPIRED, FAIL_ON_CRASH, 1, 3, 0.0, Outcome(S.FAILED)),
    # otherwise dead on the last attempt
    (E.CRASHED, RECLAIM, 3, 3, 0.0, Outcome(S.DEAD)),
    (E.LEASE_EXPIRED, RECLAIM, 3, 3, 0.0, Outcome(S.DEAD)),
    # and back to ready at once (no backoff) with attempts left
    (E.CRASHED, RECLAIM, 1, 3, 0.0, Outcome(S.READY)),
    (E.CRASHED, RECLAIM, 2, 3, 0.9, Outcome(S.READY)),
    (E.LEASE_EXPIRED, RECLAIM, 2, 3, 0.0, Outcome(S.READY)),
    # a task this node does not know: the default policy (20 attempts, reclaim on crash)
    (E.CRASHED, DEFAULT_POLICY, 19, 20, 0.0, Outcome(S.READY)),
    (E.CRASHED, DEFAULT_POLICY, 20, 20, 0.0, Outcome(S.DEAD)),
]


@pytest.mark.parametrize(("end", "policy", "attempt", "max_attempts", "spread", "expected"), TABLE)
def test_every_row_of_the_outcome_table(end: AttemptEnd, policy: TaskPolicy, attempt: int, max_attempts: int,
                                        spread: float, expected: Outcome) -> None:
    outcome = decide(policy, end, attempt, max_attempts, spread)
    assert outcome.state == expected.state
    assert decide(policy, end, attempt, max_attempts, spread, None) == outcome  # no delay from the worker
    if expected.retry_in is None:
        assert outcome.retry_in is None
    else:
        assert outcome.retry_in == pytest.approx(expected.retry_in)


def test_every_end_is_in_the_table() -> None:
    assert {row[0] for row in TABLE} == set(AttemptEnd)


@pytest.mark.parametrize("end", list(AttemptEnd))
@pytest.mark.parametrize("policy", [RECLAIM, FAIL_ON_CRASH, DEFAULT_POLICY])
@pytest.mark.parametrize("attempt", [1, 2, 3, 20])
def test_decide_is_pure_and_ends_in_a_state_the_journal_stores(end: AttemptEnd, policy: TaskPolicy,
                                                               attempt: int) -> None:
    first = decide(policy, end, attempt, 3, 0.25)
    assert decide(policy, end, attempt, 3, 0.25) == first  # same arguments, same outcome
    assert (first.retry_in is not None) == (first.state == S.RETRY)
    if first.retry_in is not None:
        assert 0 <= first.retry_in <= BACKOFF.cap * (1 + BACKOFF.jitter)
    if attempt >= 3 and end not in (E.OK, E.CANCELLED, E.DISCARDED):
        assert first.state in (S.DEAD, S.FAILED), "no attempt left: the job is final"


def test_backoff_spread_covers_the_jitter_band() -> None:
    assert BACKOFF.delay(1, 0.0) == pytest.approx(1.0)
    assert BACKOFF.delay(1, 0.999999) == pytest.approx(3.0, rel=1e-5)
    assert BACKOFF.delay(10, 0.5) == BACKOFF.cap  # capped before the jitter


def test_a_policy_refuses_what_it_cannot_apply() -> None:
    for bad in ({"max_attempts": 0}, {"on_crash": "retry"}, {"queue": ""}, {"priority": True}):
        with pytest.raises(ValueError):
            TaskPolicy(**bad)  # type: ignore[arg-type]


def test_a_policy_survives_its_round_trip_through_plain_data() -> None:
    assert TaskPolicy.from_dict(FAIL_ON_CRASH.to_dict()) == FAIL_ON_CRASH


# (end, attempt, max_attempts, delay, outcome): the rows where the worker sent a delay
WITH_DELAY = [
    # used as given, without jitter, in place of the backoff
    (E.RAISED, 1, 3, 3600.0, Outcome(S.RETRY, 3600.0)),
    (E.RAISED, 2, 3, 0.0, Outcome(S.RETRY, 0.0)),
    (E.TIMED_OUT, 1, 3, 42.5, Outcome(S.RETRY, 42.5)),
    # never an attempt more: on the last one the job is dead, whatever the delay
    (E.RAISED, 3, 3, 5.0, Outcome(S.DEAD)),
    (E.TIMED_OUT, 3, 3, 5.0, Outcome(S.DEAD)),
    # any other end ignores it
    (E.PERMANENT, 1, 3, 5.0, Outcome(S.FAILED)),
    (E.DISCARDED, 1, 3, 5.0, Outcome(S.FAILED)),
    (E.OK, 1, 3, 5.0, Outcome(S.SUCCEEDED)),
    (E.CRASHED, 1, 3, 5.0, Outcome(S.READY)),
]


@pytest.mark.parametrize(("end", "attempt", "max_attempts", "delay", "expected"), WITH_DELAY)
def test_a_delay_from_the_worker_replaces_the_backoff_within_the_attempts(end: AttemptEnd, attempt: int,
                                                                          max_attempts: int, delay: float,
                                                                          expected: Outcome) -> None:
    for spread in (0.0, 0.7):
        assert decide(RECLAIM, end, attempt, max_attempts, spread, delay) == expected


FUNCTION = TaskPolicy(max_attempts=3, retry=RetryPolicy(base=2.0, factor=3.0, jitter=0.0, kind="function"))


def test_a_function_policy_without_the_workers_value_falls_back_to_exponential() -> None:
    assert decide(FUNCTION, E.RAISED, 2, 3, 0.5, 7.0) == Outcome(S.RETRY, 7.0)
    assert decide(FUNCTION, E.RAISED, 2, 3, 0.5) == Outcome(S.RETRY, 6.0)  # 2 * 3 ** 1


@pytest.mark.parametrize(("policy", "waits"), [
    (RetryPolicy(base=1.0, factor=2.0, cap=5.0, jitter=0.0), [1.0, 2.0, 4.0, 5.0, 5.0]),
    (RetryPolicy.linear(3.0, cap=10.0, jitter=0.0), [3.0, 6.0, 9.0, 10.0, 10.0]),
    (RetryPolicy.fixed(30.0), [30.0] * 5),
    (RetryPolicy(base=0.5, factor=1.0, jitter=0.0), [0.5] * 5),
    (RetryPolicy(base=2.0, factor=10.0, jitter=0.0, kind="function"), [2.0, 20.0, 200.0, 2000.0, 3600.0]),
])
def test_each_backoff_kind_waits_as_its_formula_says(policy: RetryPolicy, waits: list[float]) -> None:
    assert [policy.delay(n, 0.5) for n in range(1, 6)] == pytest.approx(waits)
    for n, wait in enumerate(waits, 1):  # and decide retries after it
        assert decide(TaskPolicy(max_attempts=9, retry=policy), E.RAISED, n, 9, 0.5) == Outcome(S.RETRY, wait)


def test_jitter_spreads_every_kind_alike() -> None:
    for policy in (RetryPolicy.linear(10.0, jitter=0.5), RetryPolicy.fixed(10.0, jitter=0.5),
                   RetryPolicy(base=10.0, jitter=0.5)):
        assert policy.delay(1, 0.0) == pytest.approx(5.0)
        assert policy.delay(1, 0.5) == pytest.approx(10.0)


def test_a_huge_attempt_number_is_capped_not_an_overflow() -> None:
    assert RetryPolicy(jitter=0.0).delay(10_000, 0.5) == 3600.0


@pytest.mark.parametrize("bad", [
    {"kind": "random"}, {"base": -1.0}, {"factor": 0.5}, {"cap": float("inf")}, {"cap": 10.0**9},
    {"base": float("nan")}, {"jitter": 1.0}, {"base": "1"}, {"jitter": True},
])
def test_a_retry_policy_refuses_what_it_cannot_apply(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", [RetryPolicy.linear(2.0), RetryPolicy.fixed(9.0), RetryPolicy(kind="function")])
def test_every_kind_survives_the_round_trip_through_plain_data(policy: RetryPolicy) -> None:
    declared = TaskPolicy(retry=policy)
    assert TaskPolicy.from_dict(json.loads(json.dumps(declared.to_dict()))) == declared


def test_a_policy_stored_before_kinds_existed_reads_as_exponential() -> None:
    old = {"queue": "q", "retry": {"base": 1.0, "factor": 2.0, "cap": 3600.0, "jitter": 0.2}}
    assert TaskPolicy.from_dict(old).retry.kind == "exponential"
