"""Flow-control rules that live in the lease, on both journals: rate limits (docs/rate-limits-and-breakers.md).

Parametrised over SQLite and PostgreSQL by the ``journal``/``backend`` fixtures of conftest.py, as
the journal contract (journal_tests.py) is. Time is each backend's own clock: rates here are slow ("2/h": a token every
1,800 s), so the seconds a test takes add no whole token, and time "passes" by moving a bucket's
stored time back (`age_bucket`), never by sleeping. The SQLite-only cases at the end run a
journal on an injected clock.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from actorq.journal import Failure, JobState, Journal, NewJob
from actorq.journal.contract import HOUR, new_job, state
from actorq.journal.contract import ContractBackend as Backend
from actorq.journal.protocol import CircuitBreaker, QueueLimits, TaskDefaults
from actorq.journal.sqlite import SQLiteJournal

pytestmark = pytest.mark.timeout(120)


def age_bucket(backend: Backend, queue: str, seconds: float) -> None:
    """Move `queue`'s bucket `seconds` into the past: that much time has passed for its refill."""
    backend.age_bucket("queue", queue, seconds)


def leased_ids(journal: Journal, queues: list[str], limit: int, owner: str = "w1") -> list[str]:
    return sorted(j.id for j in journal.lease(queues, owner, limit, HOUR))


# -- rate limits per queue ----------------------------------------------------------------------


def test_queue_rate_leases_at_most_its_tokens_and_refills_by_the_clock(backend: Backend, journal: Journal) -> None:
    journal.declare_queues([QueueLimits("api", rate="2/h", burst=3)])
    assert journal.queue_limits()["api"] == QueueLimits("api", rate="2/h", burst=3)
    journal.enqueue([new_job(f"a{n}", queue="api") for n in range(10)] + [new_job(f"f{n}") for n in range(4)])
    first = journal.lease(["api", "q"], "w1", 20, HOUR)
    assert [j.queue for j in first].count("api") == 3  # the burst, not the 10 asked
    assert [j.queue for j in first].count("q") == 4  # an unrated queue beside it leases as before
    assert journal.rate_wait is not None and 0 < journal.rate_wait <= 1800  # the next token: within 1,800 s
    assert journal.lease(["api"], "w2", 10, HOUR) == []  # no token: nothing leased...
    assert journal.rate_wait is not None
    assert state(journal, "a9") is JobState.READY and journal.get("a9").attempts == 0  # ...and nothing failed
    age_bucket(backend, "api", 1800)  # one token's time
    assert len(journal.lease(["api"], "w2", 10, HOUR)) == 1
    age_bucket(backend, "api", 100 * HOUR)  # a long quiet time fills it to the burst, never past it
    assert len(journal.lease(["api"], "w2", 10, HOUR)) == 3
    assert journal.counts()["api"] == {"leased": 7, "ready": 3}
    journal.lease(["q"], "w3", 1, HOUR)
    assert journal.rate_wait is None  # a lease that met no empty bucket says nothing


def test_a_rate_and_a_concurrency_bind_together_and_only_leased_jobs_spend_tokens(
        backend: Backend, journal: Journal) -> None:
    journal.declare_queues([QueueLimits("api", concurrency=2, rate="5/h")])  # burst: the count, 5
    journal.enqueue([new_job(f"a{n}", queue="api") for n in range(8)])
    first = journal.lease(["api"], "w1", 10, HOUR)
    assert len(first) == 2  # the concurrency binds first: 2 tokens spent, 3 left
    assert journal.complete([(j.id, j.lease_id) for j in first]) == 2
    second = journal.lease(["api"], "w1", 10, HOUR)
    assert len(second) == 2
    assert journal.complete([(j.id, j.lease_id) for j in second]) == 2
    assert len(journal.lease(["api"], "w1", 10, HOUR)) == 1  # the last token
    # a queue with fewer ready jobs than tokens spends only what it took
    journal.declare_queues([QueueLimits("few", rate="5/h")])
    journal.enqueue([new_job("x1", queue="few")])
    assert leased_ids(journal, ["few"], 10) == ["x1"]
    journal.enqueue([new_job(f"x{n}", queue="few") for n in range(2, 10)])
    assert len(journal.lease(["few"], "w1", 10, HOUR)) == 4


def test_a_declaration_keeps_the_bucket_s_tokens_and_no_rate_removes_it(backend: Backend, journal: Journal) -> None:
    journal.declare_queues([QueueLimits("api", rate="4/h")])
    journal.enqueue([new_job(f"a{n}", queue="api") for n in range(12)])
    assert len(journal.lease(["api"], "w1", 3, HOUR)) == 3  # 1 token left
    journal.declare_queues([QueueLimits("api", rate="4/h")])  # a node starting: no second burst
    assert len(journal.lease(["api"], "w1", 10, HOUR)) == 1
    journal.declare_queues([QueueLimits("api", rate="4/h", burst=2)])
    age_bucket(backend, "api", 10 * HOUR)
    assert len(journal.lease(["api"], "w1", 10, HOUR)) == 2  # the new burst bounds the refill
    journal.declare_queues([QueueLimits("api", rate="1/s", burst=1)])  # a faster rate refills from the stored time
    journal.declare_queues([QueueLimits("api")])  # the file's table without a rate: no bucket
    assert journal.queue_limits()["api"] == QueueLimits("api")
    assert len(journal.lease(["api"], "w1", 10, HOUR)) == 6


def test_the_bucket_is_shared_by_every_journal_on_the_place(backend: Backend, journal: Journal) -> None:
    journal.declare_queues([QueueLimits("api", rate="5/h")])
    journal.enqueue([new_job(f"a{n:02d}", queue="api") for n in range(40)])
    others = [backend.open() for _ in range(3)]
    for other in others:
        other.queue_limits()  # every journal reads the stored limits: each knows the queue is rated
    taken: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(len(others))

    def claim(j: Journal) -> None:
        start.wait()
        for _ in range(10):
            got = len(j.lease(["api"], f"w{id(j)}", 1, HOUR))
            with lock:
                taken.append(got)

    threads = [threading.Thread(target=claim, args=(j,)) for j in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 5  # the one bucket's burst, whichever journal (connection, node) leased
    assert journal.counts()["api"] == {"leased": 5, "ready": 35}


@pytest.mark.parametrize("rate, burst, error", [
    ("100/d", None, "UNIT s, m or h"), ("0/s", None, "COUNT from 1"), ("1.5/s", None, "COUNT/UNIT"),
    (100, None, "COUNT/UNIT"), ("10/s", 0, "burst"), ("10/s", True, "burst"), (None, 5, "needs a rate"),
])
def test_a_bad_rate_or_burst_is_refused_before_anything_is_stored(journal: Journal, rate: object, burst: object,
                                                                  error: str) -> None:
    with pytest.raises(ValueError, match=error):
        journal.declare_queues([QueueLimits("ok", rate="1/s"), QueueLimits("api", rate=rate, burst=burst)])  # type: ignore[arg-type]
    assert "ok" not in journal.queue_limits()


# -- SQLite on an injected clock: the bucket's arithmetic over time -------------------------------


def test_a_rate_never_leases_more_than_its_bound_over_a_simulated_minute(tmp_path: Path) -> None:
    now = [1_000_000.0]
    journal = SQLiteJournal(tmp_path / "j.db", clock=lambda: now[0])
    journal.declare_queues([QueueLimits("api", rate="10/s", burst=5)])
    journal.enqueue([new_job(f"a{n:04d}", queue="api") for n in range(1_000)])
    rng = random.Random(7)
    start, total = now[0], 0
    while now[0] - start < 60:
        total += len(journal.lease(["api"], "w1", rng.randint(1, 8), HOUR))
        elapsed = now[0] - start
        assert total <= 5 + 10 * elapsed + 1e-6  # never past the burst plus the refill
        if journal.rate_wait is not None:  # told when the next token is due: it is, then
            assert 0 < journal.rate_wait <= 0.1 + 1e-9
        now[0] += rng.choice([0.01, 0.05, 0.1, 0.3])
    assert total >= 10 * (now[0] - start) - 10  # and it keeps up with the rate (leases often, few at once)
    journal.close()


def test_the_next_token_is_due_when_rate_wait_says(tmp_path: Path) -> None:
    now = [500.0]
    journal = SQLiteJournal(tmp_path / "j.db", clock=lambda: now[0])
    journal.declare_queues([QueueLimits("api", rate="4/m", burst=1)])  # a token every 15 s
    journal.enqueue([new_job(f"a{n}", queue="api") for n in range(5)])
    assert len(journal.lease(["api"], "w1", 5, HOUR)) == 1
    assert journal.rate_wait == pytest.approx(15.0)
    now[0] += 10
    assert journal.lease(["api"], "w1", 5, HOUR) == []
    assert journal.rate_wait == pytest.approx(5.0)
    now[0] += 4.99
    assert journal.lease(["api"], "w1", 5, HOUR) == []
    now[0] += 0.01
    assert len(journal.lease(["api"], "w1", 5, HOUR)) == 1
    journal.close()


# -- a task's own rules: concurrency and rate (@task(concurrency=..., rate=...)) ------------------


def test_a_task_s_concurrency_bounds_its_jobs_and_the_others_lease_as_before(backend: Backend, journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("slow", "q", 0, 3, concurrency=2), TaskDefaults("plain", "q", 0, 3)])
    assert journal.task_rules() == {"slow": TaskDefaults("slow", "q", 0, 3, concurrency=2)}
    journal.enqueue([new_job(f"s{n}", task="slow") for n in range(6)] + [new_job(f"p{n}", task="plain") for n in range(4)])
    first = journal.lease(["q"], "w1", 20, HOUR)
    assert sorted(j.id for j in first) == ["p0", "p1", "p2", "p3", "s0", "s1"]  # the others pass the ruled backlog
    assert journal.lease(["q"], "w2", 20, HOUR) == []  # another owner: the limit is the task's
    if journal.shared:  # another node's journal meets the same limit
        other = backend.open()
        assert other.lease(["q"], "b/1", 20, HOUR) == []
        other.close()
    done = next(j for j in first if j.task == "slow")
    assert journal.complete([(done.id, done.lease_id)]) == 1
    assert [j.id for j in journal.lease(["q"], "w2", 20, HOUR)] == ["s2"]
    assert journal.counts()["q"] == {"leased": 6, "ready": 3, "succeeded": 1}
    # a task's limit counts its jobs in every queue; a queue's own limit binds its ruled tasks too
    journal.declare_queues([QueueLimits("other", concurrency=1)])
    journal.declare_tasks([TaskDefaults("slow", "other", 0, 3, concurrency=3)])
    journal.enqueue([new_job("o1", queue="other", task="slow"), new_job("o2", queue="other", task="slow")])
    assert [j.id for j in journal.lease(["other"], "w3", 20, HOUR)] == ["o1"]  # the queue's 1, within the task's 3
    assert journal.lease(["other", "q"], "w3", 20, HOUR) == []  # task: 3 leased (s1/s0 one done, s2, o1)


def test_a_task_s_rate_takes_tokens_of_its_own_bucket(backend: Backend, journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("api", "q", 0, 3, rate="2/h")])  # burst: the count, 2
    assert journal.task_rules()["api"].burst == 2
    journal.enqueue([new_job(f"a{n}", task="api") for n in range(5)] + [new_job("p0", task="plain")])
    assert leased_ids(journal, ["q"], 10) == ["a0", "a1", "p0"]
    assert journal.rate_wait is not None and 0 < journal.rate_wait <= 1800
    assert journal.lease(["q"], "w1", 10, HOUR) == []
    backend.age_bucket("task", "api", 1800)
    assert leased_ids(journal, ["q"], 10) == ["a2"]
    # declared again (a node starting): the bucket keeps its tokens; without rules: no bucket, no bound
    journal.declare_tasks([TaskDefaults("api", "q", 0, 3, rate="2/h")])
    assert journal.lease(["q"], "w1", 10, HOUR) == []
    journal.declare_tasks([TaskDefaults("api", "q", 0, 3)])
    assert journal.task_rules() == {}
    assert leased_ids(journal, ["q"], 10) == ["a3", "a4"]


def test_without_task_rules_a_lease_is_one_statement(backend: Backend, journal: Journal) -> None:
    """The cost of nothing: no task declared with rules, the plain lease alone runs."""
    journal.declare_tasks([TaskDefaults("plain", "q", 0, 3)])
    journal.enqueue([new_job(f"p{n}", task="plain") for n in range(3)])
    journal.lease(["q"], "w1", 1, HOUR)  # the rules are read (cached) here
    seen: list[str] = []
    if backend.name == "memory":
        pytest.skip("counts SQL statements: the memory journal runs none")
    if backend.name == "sqlite":
        journal._conn.set_trace_callback(seen.append)  # type: ignore[attr-defined]
        assert len(journal.lease(["q"], "w1", 5, HOUR)) == 2
        journal._conn.set_trace_callback(None)  # type: ignore[attr-defined]
        # distinct texts: SQLite reports a statement again as each row enters a trigger's program
        # (the flow keys' triggers test their WHEN there)
        # (the flow keys' triggers test their WHEN there); the lease's one write of its queue's
        # slot (its leases and queue waits, `Journal.queue_stats`) follows it, reading nothing
        statements = list(dict.fromkeys(s for s in seen if s.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT"))
                                        and "INTO actorq_queue_slots" not in s))
        assert len(statements) == 1 and "NOT IN (SELECT queue FROM actorq_paused_queues)" in statements[0]
    else:
        executed: list[str] = []
        real = journal._execute  # type: ignore[attr-defined]
        journal._execute = lambda query, params, **kw: (executed.append(query), real(query, params, **kw))[1]  # type: ignore[attr-defined]
        assert len(journal.lease(["q"], "w1", 5, HOUR)) == 2
        assert executed == [journal._sql.lease]  # type: ignore[attr-defined]


def test_task_rules_are_refused_when_out_of_range(journal: Journal) -> None:
    for bad, error in [(TaskDefaults("t", "q", 0, 3, concurrency=0), "concurrency"),
                       (TaskDefaults("t", "q", 0, 3, rate="5/week"), "rate"),
                       (TaskDefaults("t", "q", 0, 3, burst=4), "needs a rate")]:
        with pytest.raises(ValueError, match=error):
            journal.declare_tasks([bad])
    assert journal.task_rules() == {} and journal.declared_tasks(["t"]) == {}


# -- circuit breakers per task ----------------------------------------------------------------------


def _fail_back(journal: Journal, jobs: list, error: str = "OSError: down") -> int:
    """The attempts of `jobs` failed, their jobs ready again at once (as a crash's reclaim leaves them)."""
    return journal.fail([Failure(j.id, j.lease_id, error, JobState.READY) for j in jobs])


def test_a_breaker_opens_after_its_failures_then_lets_one_probe_through(backend: Backend, journal: Journal) -> None:
    breaker = CircuitBreaker(failures=3, window=HOUR, cool_down=HOUR, probes=1)
    journal.declare_tasks([TaskDefaults("flaky", "q", 0, 9, circuit_breaker=breaker)])
    assert journal.task_rules()["flaky"].circuit_breaker == breaker
    assert [(b.task, b.state, b.failures) for b in journal.breakers()] == [("flaky", "closed", 0)]
    journal.enqueue([NewJob(f"f{n}", "q", "flaky", b"\x90", max_attempts=9) for n in range(6)]
                    + [new_job("p0", task="plain"), new_job("p1", task="plain")])
    first = [j for j in journal.lease(["q"], "w1", 3, HOUR)]
    assert sorted(j.id for j in first) == ["f0", "f1", "f2"]
    assert _fail_back(journal, first[:2]) == 2
    assert [(b.state, b.failures) for b in journal.breakers()] == [("closed", 2)]
    assert _fail_back(journal, first[2:]) == 1  # the third failure within the hour opens it
    (opened,) = journal.breakers()
    assert opened.state == "open" and opened.opened_at is not None
    assert opened.reopens_at == pytest.approx(opened.opened_at + HOUR)
    # open: the task's jobs are not leased and stay ready; the others lease as before
    assert leased_ids(journal, ["q"], 10) == ["p0", "p1"]
    assert journal.rate_wait is not None and HOUR - 60 < journal.rate_wait <= HOUR  # when the cool-down ends
    assert journal.counts()["q"] == {"ready": 6, "leased": 2}
    if journal.shared:  # every node sees it open
        other = backend.open()
        assert other.lease(["q"], "b/1", 10, HOUR) == []
        other.close()
    # the cool-down over: half-open, one probe at a time
    backend.age_breakers(HOUR)
    probe = journal.lease(["q"], "w1", 10, HOUR)
    assert len(probe) == 1 and journal.breakers()[0].state == "half_open"
    assert journal.lease(["q"], "w1", 10, HOUR) == []  # the probe is still running
    assert _fail_back(journal, probe) == 1  # a failed probe opens it again, for a new cool-down
    assert journal.breakers()[0].state == "open" and journal.lease(["q"], "w1", 10, HOUR) == []
    backend.age_breakers(HOUR)
    probe = journal.lease(["q"], "w1", 10, HOUR)
    assert len(probe) == 1
    assert journal.complete([(probe[0].id, probe[0].lease_id)]) == 1  # a probe's success closes it
    assert [(b.state, b.failures) for b in journal.breakers()] == [("closed", 0)]
    assert len(journal.lease(["q"], "w1", 10, HOUR)) == 5


def test_failures_outside_the_window_do_not_open_a_breaker(backend: Backend, journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("flaky", "q", 0, 9, circuit_breaker=CircuitBreaker(failures=2, window=60))])
    journal.enqueue([NewJob(f"f{n}", "q", "flaky", b"\x90", max_attempts=9) for n in range(3)])
    assert _fail_back(journal, journal.lease(["q"], "w1", 1, HOUR)) == 1
    backend.set_breaker_failures([1000.0])  # that failure was long ago
    assert _fail_back(journal, journal.lease(["q"], "w1", 1, HOUR)) == 1
    assert [(b.state, b.failures) for b in journal.breakers()] == [("closed", 1)]
    assert _fail_back(journal, journal.lease(["q"], "w1", 1, HOUR)) == 1
    assert journal.breakers()[0].state == "open"
    # declared again without a breaker: none is kept, and its jobs lease
    journal.declare_tasks([TaskDefaults("flaky", "q", 0, 9)])
    assert journal.breakers() == [] and journal.task_rules() == {}
    assert len(journal.lease(["q"], "w1", 10, HOUR)) == 3


def test_a_circuit_breaker_refuses_values_out_of_range() -> None:
    for options, error in [({"failures": 0}, "failures"), ({"probes": 1.5}, "probes"), ({"window": 0}, "window"),
                           ({"cool_down": 86_401}, "cool_down"), ({"window": True}, "window")]:
        with pytest.raises(ValueError, match=f"circuit breaker: {error} must be"):
            CircuitBreaker(**options)  # type: ignore[arg-type]
    assert CircuitBreaker() == CircuitBreaker(5, 60.0, 30.0, 1)


def test_a_task_s_concurrency_and_breaker_hold_between_racing_journals(backend: Backend, journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("slow", "q", 0, 9, concurrency=3),
                           TaskDefaults("flaky", "f", 0, 9, circuit_breaker=CircuitBreaker(failures=4, window=HOUR))])
    journal.enqueue([new_job(f"s{n:02d}", task="slow") for n in range(30)]
                    + [NewJob(f"f{n}", "f", "flaky", b"\x90", max_attempts=9) for n in range(8)])
    others = [backend.open() for _ in range(4)]
    start = threading.Barrier(len(others))
    taken: list[int] = []
    failed: list[int] = []
    lock = threading.Lock()

    def claim(j: Journal, n: int) -> None:
        start.wait()
        for _ in range(10):
            got = len(j.lease(["q"], f"w{n}", 1, HOUR))
            flaky = j.lease(["f"], f"w{n}", 1, HOUR)
            done = _fail_back(j, flaky)  # every attempt of flaky fails, on every journal
            with lock:
                taken.append(got)
                failed.append(done)

    threads = [threading.Thread(target=claim, args=(j, n)) for n, j in enumerate(others)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 3  # the task's limit, whichever journal (node) leased
    # the fourth failure opened it; the other journals' jobs leased before that may still fail
    assert 4 <= sum(failed) <= 4 + len(others) - 1
    assert [(b.state, b.failures) for b in journal.breakers()] == [("open", 0)]
    assert all(j.lease(["f"], "late", 10, HOUR) == [] for j in others)  # open for every node


# -- rules per flow key: admission within each key's bucket and breaker ---------------------------


def _keyed(prefix: str, key: str, count: int, task: str = "k", limit: int = 100) -> list[NewJob]:
    return [NewJob(f"{prefix}{n:02d}", "q", task, b"\x90", max_attempts=9, concurrency_key=key, concurrency_limit=limit)
            for n in range(count)]


def _admitted(journal: Journal, prefix: str, count: int) -> int:
    return sum(1 for n in range(count) if state(journal, f"{prefix}{n:02d}") is not JobState.BLOCKED)


def test_a_key_rate_never_admits_more_than_its_bound_per_key_over_a_simulated_hour(
        backend: Backend, journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("k", "q", 0, 9, key_rate="10/h", key_burst=3)])
    journal.enqueue(_keyed("a", "A", 30) + _keyed("b", "B", 30) + _keyed("p", "P", 5, task="plain"))
    # each key its own bucket: its burst now, the rest blocked (not failed); a task without key rules flows
    assert (_admitted(journal, "a", 30), _admitted(journal, "b", 30), _admitted(journal, "p", 5)) == (3, 3, 5)
    assert journal.lease(["q"], "w1", 100, HOUR) and journal.get("a29").attempts == 0
    journal.enqueue(_keyed("c", "C", 30))  # a later key starts with a full bucket of its own
    assert _admitted(journal, "c", 30) == 3
    for step in range(1, 11):  # 10 steps of 360 s: one token each, for each key; nobody finishes a job
        backend.age_keys(360)
        assert journal.has_due()
        journal.promote()
        for prefix in "abc":
            assert _admitted(journal, prefix, 30) <= 3 + step  # burst + rate * t, at every step
    assert (_admitted(journal, "a", 30), _admitted(journal, "b", 30), _admitted(journal, "c", 30)) == (13, 13, 13)
    backend.age_keys(100 * HOUR)  # a long quiet time fills a key's bucket to its burst, never past it
    journal.promote()
    assert _admitted(journal, "a", 30) == 16


def test_a_key_breaker_holds_its_key_s_jobs_blocked_while_other_keys_flow(
        backend: Backend, journal: Journal) -> None:
    breaker = CircuitBreaker(failures=2, window=HOUR, cool_down=HOUR, probes=2)
    journal.declare_tasks([TaskDefaults("k", "q", 0, 9, key_circuit_breaker=breaker)])
    journal.enqueue(_keyed("a", "A", 8, limit=2) + _keyed("b", "B", 8, limit=2))
    first = journal.lease(["q"], "w1", 100, HOUR)
    assert sorted(j.id for j in first) == ["a00", "a01", "b00", "b01"]
    a_jobs = [j for j in first if j.id.startswith("a")]
    # a retry keeps its slot; its failure counts
    assert journal.fail([Failure(a_jobs[0].id, a_jobs[0].lease_id, "OSError: down", JobState.RETRY,
                                 retry_at=0.0)]) == 1
    assert journal.key_breakers(10) == ([], {})
    assert journal.fail([Failure(a_jobs[1].id, a_jobs[1].lease_id, "OSError: down", JobState.FAILED)]) == 1
    (opened,), counts = journal.key_breakers(10)
    assert (opened.task, opened.key, opened.state, counts) == ("k", "A", "open", {"open": 1})
    assert opened.reopens_at is not None and opened.opened_at is not None
    assert opened.reopens_at == pytest.approx(opened.opened_at + HOUR)
    # the failed job freed its slot, but the open breaker keeps A's next jobs blocked; B flows
    assert _admitted(journal, "a", 8) == 2
    b_jobs = [j for j in first if j.id.startswith("b")]
    assert journal.complete([(j.id, j.lease_id) for j in b_jobs]) == 2
    assert _admitted(journal, "b", 8) == 4
    journal.promote()  # a00's retry is due (it keeps its slot); nothing of A is admitted before the cool-down
    assert _admitted(journal, "a", 8) == 2
    # the cool-down over: half-open, `probes` admitted (one slot is held by a00's retry: one more)
    backend.age_keys(HOUR)
    assert journal.has_due()
    journal.promote()
    assert _admitted(journal, "a", 8) == 3
    assert journal.key_breakers(10)[1] == {"half_open": 1}
    probe = journal.lease(["q"], "w1", 100, HOUR)
    a_probe = [j for j in probe if j.id == "a02"] + [j for j in probe if j.id == "a00"]
    assert [j.id for j in a_probe] == ["a02", "a00"]  # the probe, and the retry (made ready above)
    assert journal.complete([(a_probe[0].id, a_probe[0].lease_id)]) == 1  # a probe's success closes it
    assert journal.key_breakers(10) == ([], {})
    assert _admitted(journal, "a", 8) == 4  # closed: A's free slot is filled at once


def test_a_key_breaker_half_open_admits_exactly_its_probes_and_a_failed_probe_opens_it(
        backend: Backend, journal: Journal) -> None:
    breaker = CircuitBreaker(failures=1, window=HOUR, cool_down=HOUR, probes=2)
    journal.declare_tasks([TaskDefaults("k", "q", 0, 9, key_circuit_breaker=breaker)])
    journal.enqueue(_keyed("a", "A", 10, limit=5))
    first = journal.lease(["q"], "w1", 1, HOUR)
    assert journal.fail([Failure(first[0].id, first[0].lease_id, "boom", JobState.FAILED)]) == 1
    running = journal.lease(["q"], "w1", 100, HOUR)  # admitted before it opened: they run
    assert len(running) == 4 and _admitted(journal, "a", 10) == 5
    assert journal.complete([(j.id, j.lease_id) for j in running]) == 4
    assert _admitted(journal, "a", 10) == 5  # open: their ends admitted nothing
    backend.age_keys(HOUR)
    journal.promote()
    assert _admitted(journal, "a", 10) == 7  # exactly its 2 probes, though 5 slots are free
    probes = journal.lease(["q"], "w1", 100, HOUR)
    assert len(probes) == 2
    assert journal.fail([Failure(probes[0].id, probes[0].lease_id, "boom", JobState.FAILED)]) == 1
    assert journal.key_breakers(10)[1] == {"open": 1}  # a failed probe: open again
    assert journal.complete([(probes[1].id, probes[1].lease_id)]) == 1  # a probe leased before: changes nothing
    assert journal.key_breakers(10)[1] == {"open": 1} and _admitted(journal, "a", 10) == 7


def test_key_breakers_are_listed_up_to_a_limit_and_counted(backend: Backend, journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("k", "q", 0, 9, key_circuit_breaker=CircuitBreaker(failures=1))])
    journal.enqueue([job for key in "ABCDE" for job in _keyed(f"{key.lower()}", key, 1)])
    leased = journal.lease(["q"], "w1", 100, HOUR)
    assert journal.fail([Failure(j.id, j.lease_id, "boom", JobState.FAILED) for j in leased]) == 5
    shown, counts = journal.key_breakers(2)
    assert [(b.key, b.state) for b in shown] == [("A", "open"), ("B", "open")] and counts == {"open": 5}
    journal.declare_tasks([TaskDefaults("k", "q", 0, 9)])  # declared again without rules per key: its rows go
    assert journal.key_breakers(10) == ([], {})
    if backend.name != "memory":
        assert backend.raw("SELECT count(*) FROM actorq_key_rules")[0][0] == 0


def test_idle_key_rows_are_deleted_and_change_nothing(backend: Backend, journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("k", "q", 0, 9, key_rate="10/h", key_burst=2,
                                        key_circuit_breaker=CircuitBreaker(failures=3, window=60))])
    journal.enqueue(_keyed("a", "A", 3))
    assert _admitted(journal, "a", 3) == 2
    backend.age_keys(HOUR)  # the bucket refilled (the third job admitted), then full again
    journal.promote()
    assert _admitted(journal, "a", 3) == 3
    backend.age_keys(HOUR)
    assert journal.has_due()  # an idle row: the tick deletes it
    journal.promote()
    try:
        rows = backend.raw("SELECT count(*) FROM actorq_key_rules")[0][0]
    except pytest.skip.Exception:
        rows = len(journal.store.state.keys)  # type: ignore[attr-defined]
    assert rows == 0
    assert not journal.has_due()
    journal.enqueue(_keyed("n", "A", 3))  # the key starts again from a full bucket, as before
    assert _admitted(journal, "n", 3) == 2


def test_key_rules_are_refused_when_out_of_range(journal: Journal) -> None:
    for bad, error in [(TaskDefaults("t", "q", 0, 3, key_rate="5/week"), "key_rate"),
                       (TaskDefaults("t", "q", 0, 3, key_rate="5/m", key_burst=0), "burst"),
                       (TaskDefaults("t", "q", 0, 3, key_burst=4), "key_burst needs a key_rate")]:
        with pytest.raises(ValueError, match=error):
            journal.declare_tasks([bad])
    assert journal.declared_tasks(["t"]) == {}


def test_a_key_s_bucket_is_shared_by_racing_journals(backend: Backend, journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("k", "q", 0, 9, key_rate="2/h", key_burst=5)])
    others = [backend.open() for _ in range(4)]
    start = threading.Barrier(len(others))

    def work(j: Journal, n: int) -> None:
        start.wait()
        for round_ in range(5):  # each adds jobs of the key, and ends what it leased: both admit
            j.enqueue(_keyed(f"j{n}r{round_}-", "A", 2))
            leased = j.lease(["q"], f"w{n}", 10, HOUR)
            j.complete([(x.id, x.lease_id) for x in leased])

    threads = [threading.Thread(target=work, args=(j, n)) for n, j in enumerate(others)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = journal.counts()["q"]
    assert counts.get("blocked", 0) == 40 - 5  # the key's one burst, whichever journal admitted
    assert sum(counts.values()) == 40


def test_an_open_key_breaker_whose_jobs_stopped_coming_is_forgotten(backend: Backend, journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("k", "q", 0, 9, key_circuit_breaker=CircuitBreaker(failures=1, window=60,
                                                                                           cool_down=30))])
    journal.enqueue(_keyed("a", "A", 1) + _keyed("b", "B", 2, limit=1))
    leased = journal.lease(["q"], "w1", 10, HOUR)
    assert journal.fail([Failure(j.id, j.lease_id, "boom", JobState.FAILED) for j in leased]) == 2
    assert journal.key_breakers(10)[1] == {"open": 2}
    backend.age_keys(100)  # past its cool-down and a window: A has no job left, B one blocked
    journal.promote()
    shown, counts = journal.key_breakers(10)
    assert [(b.key, b.state) for b in shown] == [("B", "half_open")] and counts == {"half_open": 1}
    assert _admitted(journal, "b", 2) == 2  # B's probe; A's row is gone: a new job of A is admitted as before
    journal.enqueue(_keyed("n", "A", 1))
    assert _admitted(journal, "n", 1) == 1


def test_a_key_s_breaker_counts_racing_journals_failures_once_each(backend: Backend, journal: Journal) -> None:
    journal.declare_tasks([TaskDefaults("k", "q", 0, 9, key_circuit_breaker=CircuitBreaker(failures=6, window=HOUR))])
    journal.enqueue(_keyed("a", "A", 40, limit=4) + _keyed("b", "B", 40, limit=4))
    others = [backend.open() for _ in range(4)]
    start = threading.Barrier(len(others))

    def work(j: Journal, n: int) -> None:
        start.wait()
        for _ in range(6):  # A's attempts fail, B's succeed; each end admits its key's next job
            leased = j.lease(["q"], f"w{n}", 2, HOUR)
            j.fail([Failure(x.id, x.lease_id, "boom", JobState.FAILED) for x in leased if x.id.startswith("a")])
            j.complete([(x.id, x.lease_id) for x in leased if x.id.startswith("b")])

    threads = [threading.Thread(target=work, args=(j, n)) for n, j in enumerate(others)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (opened,), counts = journal.key_breakers(10)
    assert (opened.key, opened.state, counts) == ("A", "open", {"open": 1})
    failed = sum(1 for n in range(40) if state(journal, f"a{n:02d}") is JobState.FAILED)
    # the sixth failure opened it; the jobs A's 4 slots held then may fail after it, nothing more is admitted
    assert 6 <= failed <= 6 + 4 - 1 and _admitted(journal, "a", 40) == failed + sum(
        1 for n in range(40) if state(journal, f"a{n:02d}") in (JobState.READY, JobState.LEASED))
    assert _admitted(journal, "b", 40) > 4  # B went on
