"""The journal contract suite, shipped so that any `Journal` backend can run it.

The same tests run against SQLite, PostgreSQL and the in-memory journal in actorq's own
suite (``tests/journal/test_journal_contract.py`` and ``test_journal_rules_contract.py``);
a third-party backend runs them unchanged by giving two fixtures in a test module of its
own and importing the tests there::

    # test_my_journal_contract.py
    import pytest
    from actorq.journal.contract import ContractBackend
    from actorq.journal.contract.journal_tests import *  # noqa: F401,F403  (the tests)
    from actorq.journal.contract.rules_tests import *  # noqa: F401,F403

    class MyBackend(ContractBackend):
        name, url, options = "mine", "mine://test", {}
        def open(self):                       # another handle on the same fresh place
            ...

    @pytest.fixture
    def backend():
        b = MyBackend()
        yield b
        b.close()

    @pytest.fixture
    def journal(backend):
        return backend.open()

A backend overrides the acts it can do (`ContractBackend`): each default skips the tests
that need it, saying why. `MemoryBackend` is a complete example. The helpers below build
journal states through the protocol only, and decide as the job runtime does where the
journal stores a decision (`fail`, `crash_outcome`). See docs/testing.md.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Collection, Sequence

import pytest

from actorq.journal.protocol import Attempt, Failure, JobState, Journal, LeasedJob, NewJob

__all__ = [
    "ContractBackend",
    "HOUR",
    "MemoryBackend",
    "crash_outcome",
    "expire",
    "fail",
    "job_in_every_state",
    "lease_one",
    "new_job",
    "reclaim",
    "reclaim_all",
    "state",
    "take_back",
    "wait_for",
]


class ContractBackend:
    """One fresh journal place for one test, and the backend-specific acts some tests need.

    Attributes:
        name: a short name of the backend (shown in skips; the suite never branches on it,
            except to skip a test of SQL statements).
        url: the journal's URL (given to other processes by the tests that start some).
        options: keyword arguments for `actorq.journal.open_journal` in those processes.
    """

    name: str
    url: str
    options: dict[str, Any]
    _opened: list[Journal]

    def open(self) -> Journal:
        """Open another journal (another connection or handle) on the same place."""
        raise NotImplementedError

    def raw(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one SQL statement outside the journal (``?`` placeholders); default: skip."""
        pytest.skip(f"runs SQL outside the journal: not a contract of the {self.name} journal")

    def integrity_error(self) -> tuple[type[BaseException], ...]:
        """The driver exceptions a constraint violation raises outside the journal; default: skip."""
        pytest.skip(f"a constraint of the SQL schema: not a contract of the {self.name} journal")

    def keep_statistics_stale(self) -> None:
        """Keep the planner from fresh statistics, where there is one; default: nothing."""

    def other_process(self) -> None:
        """Called by a test that opens the journal (`url`, `options`) in other processes;
        default: skip (a backend that can, overrides it with nothing)."""
        pytest.skip(f"another process cannot open a {self.name} journal")

    def backdate_finish(self, job_ids: Sequence[str], seconds: float) -> None:
        """Move the finish time of `job_ids` `seconds` into the past; default: skip."""
        pytest.skip(f"the {self.name} journal cannot move a finish time back")

    def age_bucket(self, kind: str, name: str, seconds: float) -> None:
        """Move the token bucket of queue or task (`kind`) `name` `seconds` into the past; default: skip."""
        pytest.skip(f"the {self.name} journal cannot age a token bucket")

    def age_breakers(self, seconds: float) -> None:
        """Move every circuit breaker's opening `seconds` into the past; default: skip."""
        pytest.skip(f"the {self.name} journal cannot age a circuit breaker")

    def set_breaker_failures(self, times: Sequence[float]) -> None:
        """Make every breaker's recorded failures those at `times`; default: skip."""
        pytest.skip(f"the {self.name} journal cannot set a breaker's failures")

    def age_keys(self, seconds: float) -> None:
        """Move every per-key rule row (its bucket, its breaker's opening, when it is due)
        `seconds` into the past; default: skip."""
        pytest.skip(f"the {self.name} journal cannot age its keys' rules")

    def error_rows(self, job_ids: Sequence[str]) -> int:
        """How many error rows the journal keeps of `job_ids`; default: skip."""
        pytest.skip(f"the {self.name} journal cannot count its error rows")

    def close(self) -> None:
        """Close every journal `open` gave."""
        for journal in self._opened:
            journal.close()
        self._opened.clear()


class MemoryBackend(ContractBackend):
    """The in-memory journal (`MemoryJournal`): `open` gives another handle on one store.

    It has no SQL and no file: a test that runs statements outside the journal (`raw`) or
    hands the journal to another process is not a contract test and is skipped here.
    """

    def __init__(self) -> None:
        from actorq.journal.memory import MemoryJournal

        self.name, self.url, self.options = "memory", "memory://contract", {}
        self._opened: list[Journal] = []
        self._first = MemoryJournal(name="contract")

    def open(self) -> Journal:
        """The first handle, then another handle on the same store at each call."""
        journal = self._first if not self._opened else self._first.reopen()
        self._opened.append(journal)
        return journal

    def backdate_finish(self, job_ids: Sequence[str], seconds: float) -> None:
        self._first.backdate_finish(job_ids, seconds)


    def age_bucket(self, kind: str, name: str, seconds: float) -> None:
        state = self._first.store.state
        bucket = (state.queues if kind == "queue" else state.tasks)[name][1]
        bucket.tokens_at -= seconds

    def age_breakers(self, seconds: float) -> None:
        breakers = self._first.store.state.breakers
        for task, (state, failed_at, opened_at) in breakers.items():
            breakers[task] = (state, failed_at, None if opened_at is None else opened_at - seconds)

    def set_breaker_failures(self, times: Sequence[float]) -> None:
        import json

        breakers = self._first.store.state.breakers
        for task, (state, _, opened_at) in breakers.items():
            breakers[task] = (state, json.dumps(list(times)), opened_at)

    def age_keys(self, seconds: float) -> None:
        keys = self._first.store.state.keys

        def back(at: float | None) -> float | None:
            return None if at is None else at - seconds

        for name, (row, due, idle) in keys.items():
            keys[name] = (row._replace(tokens_at=back(row.tokens_at), opened_at=back(row.opened_at)),
                          back(due), back(idle))

    def error_rows(self, job_ids: Sequence[str]) -> int:
        details = [self._first.inspect(job_id) for job_id in job_ids]
        return sum(len(d.errors) for d in details if d is not None)




# -- building journal states (shared by the contract and the backend-only tests) --------------

def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             message: str = "") -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` s (no timing asserted)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout:g} s: {message or predicate}; last value {value!r}")
        time.sleep(interval)


HOUR = 3600.0


def new_job(job_id: str, *, queue: str = "q", priority: int = 0, run_at: float | None = None,
            max_attempts: int = 3, payload: bytes = b"\x92\x90\x80", task: str = "tests.noop",
            **keys: Any) -> NewJob:
    return NewJob(id=job_id, queue=queue, task=task, payload=payload, priority=priority,
                  run_at=run_at, max_attempts=max_attempts, **keys)


def state(journal: Journal, job_id: str) -> JobState:
    info = journal.get(job_id)
    assert info is not None, f"job {job_id} is missing"
    return info.state


def lease_one(journal: Journal, owner: str = "w1", lease_for: float = HOUR) -> LeasedJob:
    leased = journal.lease(["q"], owner, 1, lease_for)
    assert len(leased) == 1, leased
    return leased[0]


def fail(job: LeasedJob, error: str = "ValueError: boom", retry_at: float | None = None,
         state: JobState | None = None) -> Failure:
    """An attempt of `job` that raised, decided as the job runtime does: retry (in an hour, or at
    `retry_at`) while attempts are left, else dead; `state` overrides the decision."""
    if state is None:
        state = JobState.DEAD if job.attempt >= job.max_attempts else JobState.RETRY
    return Failure(job.id, job.lease_id, error, state, time.time() + HOUR if retry_at is None else retry_at)


# -- taking jobs back: the caller reads the leases, decides, and stores with fail() ------------


def crash_outcome(row: Attempt, fail_tasks: Collection[str] = ()) -> JobState:
    """Where a job whose attempt was lost goes, decided as the job runtime does: failed for a
    task declared ``on_crash="fail"`` (in `fail_tasks`), dead with its attempts used up, else ready."""
    if row.task in fail_tasks:
        return JobState.FAILED
    return JobState.DEAD if row.attempt >= row.max_attempts else JobState.READY


def take_back(journal: Journal, rows: Sequence[Attempt], reason: str, fail_tasks: Collection[str] = ()) -> int:
    """`fail` every lease of `rows` with `reason`, each to its `crash_outcome`; returns how many were taken."""
    return journal.fail([Failure(r.job_id, r.lease_id, reason, crash_outcome(r, fail_tasks)) for r in rows])


def reclaim(journal: Journal, owner: str, reason: str, *, keep: Collection[int] = (),
            fail_tasks: Collection[str] = ()) -> int:
    """Take back `owner`'s leases except those in `keep`, in one transaction (a dead worker)."""
    with journal.transaction():
        return take_back(journal, journal.leased_by(owner, keep=keep), reason, fail_tasks)


def reclaim_all(journal: Journal, reason: str, prefix: str = "", *, fail_tasks: Collection[str] = ()) -> int:
    """Take back every lease whose owner starts with `prefix`, in one transaction (a restarted node)."""
    with journal.transaction():
        return take_back(journal, journal.leased_with_prefix(prefix), reason, fail_tasks)


def expire(journal: Journal, reason: str = "lease expired", *, fail_tasks: Collection[str] = ()) -> int:
    """Take back every expired lease, in one transaction (the rescue duty)."""
    with journal.transaction():
        return take_back(journal, journal.expired(), reason, fail_tasks)


def job_in_every_state(journal: Journal) -> dict[str, LeasedJob]:
    """Make one job per state, named after the state; return the last lease of each leased one."""
    # the scheduled job holds its ordering key: the next job of the key waits blocked
    journal.enqueue([new_job("scheduled", run_at=time.time() + HOUR, ordering_key="B")])
    journal.enqueue([new_job("blocked", ordering_key="B")])
    leases = {}
    for name, max_attempts in (("retry", 3), ("leased", 3), ("succeeded", 3), ("failed", 3),
                               ("dead", 1), ("cancelled", 3), ("ready", 3)):
        journal.enqueue([new_job(name, max_attempts=max_attempts)])
        if name == "ready":
            continue
        if name == "cancelled":
            assert journal.cancel(name)
            continue
        job = leases[name] = lease_one(journal)
        if name == "retry":
            journal.fail([fail(job)])
        elif name == "succeeded":
            journal.complete([(job.id, job.lease_id)])
        elif name == "failed":
            journal.fail([fail(job, state=JobState.FAILED)])
        elif name == "dead":
            journal.fail([fail(job)])
    for s in JobState:
        assert state(journal, s.value) is s
    return leases


