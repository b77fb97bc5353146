"""PostgreSQL under contention: rows another session holds, bounded waits, deadlocks.

Several nodes share one schema, and any of them may be paused or cut off in the
middle of a transaction. What the journal and its writer promise then:

- an ack, a failure or a release whose row another transaction holds is never
  waited for: it comes back *busy*, and the writer tries it again in a later group
  (once that transaction ends it is applied, or stale);
- renewals, promotions and rescues skip rows another transaction holds;
- any other wait on a lock ends after ``lock_timeout`` with a transient error, and
  a session idle inside a transaction is ended by the server after
  ``idle_in_transaction_timeout``, releasing its locks;
- a group that fails for a transient reason (a deadlock, a lock timeout, its
  connection ended) is run again, then split, and no op in it is dropped.

ACCEPTANCE ids: C17 (a session paused inside a transaction), C18 (a deadlock
between a group and another transaction). The same faults with two real nodes are
in tests/node/test_pg_cluster_faults.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import psycopg
import pytest
from journal_support import PG_URL, collect_group, pg_admin, wait_for

from actorq.errors import JournalError
from actorq.jobs import journal_writer as jw
from actorq.jobs.outcome import AttemptEnd
from actorq.journal import JobState, NewJob, PostgresJournal, enqueue_in
from actorq.journal._pgsql import LOCK_BUCKET

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("needs_pg")]


@pytest.fixture
def journal(pg_journal: PostgresJournal) -> PostgresJournal:
    return pg_journal


def job(job_id: str, **kw: Any) -> NewJob:
    return NewJob(job_id, "q", "tests.noop", b"", **kw)


def lock_rows(conn: psycopg.Connection[Any], schema: str, ids: list[str]) -> None:
    """Hold `ids`' rows locked in `conn`'s open transaction (as another node's rescue would)."""
    rows = conn.execute(f'SELECT id FROM "{schema}".actorq_jobs WHERE id = ANY(%s) FOR UPDATE', (ids,)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)


def waiting_on_a_lock(pid: int) -> bool:
    with pg_admin() as admin:
        row = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


def backend_pid(journal: Any) -> int:
    return journal._conn.info.backend_pid  # type: ignore[no-any-return]


# -- the journal: busy rows are skipped and named -----------------------------------------------------


def test_acks_failures_and_releases_skip_locked_rows_and_name_them_busy(journal: PostgresJournal,
                                                                          pg_schema: str) -> None:
    journal.enqueue([job(f"j{n}") for n in range(6)])
    leased = {j.id: j.lease_id for j in journal.lease(["q"], "w1", 6, 60.0)}
    pairs = sorted(leased.items())
    with pg_admin() as other:
        with other.transaction():
            lock_rows(other, pg_schema, ["j0", "j2", "j4"])
            started = time.monotonic()
            busy: list[tuple[str, int]] = []
            assert journal.complete(pairs[:2], busy=busy) == 1  # j1 done, j0 locked
            assert busy == [pairs[0]]
            busy = []
            found = journal.attempts(pairs[2:4], busy=busy)  # j3 current, j2 locked
            assert [a.job_id for a in found] == ["j3"] and busy == [pairs[2]]
            busy = []
            assert journal.release(pairs[4:], busy=busy) == 1 and busy == [pairs[4]]
            assert journal.complete([("j0", 999)], busy=busy) == 0 and busy == [pairs[4]]  # stale, not busy
            # nothing waited: every call came back well inside the session's lock_timeout
            assert time.monotonic() - started < 10
        # the other transaction ended without a change: the busy answers now apply
        busy = []
        assert journal.complete([pairs[0]], busy=busy) == 1 and busy == []
    assert journal.get("j0").state == JobState.SUCCEEDED  # type: ignore[union-attr]
    assert journal.get("j5").state == JobState.READY  # type: ignore[union-attr]


def test_renew_promote_and_reclaims_skip_locked_rows(journal: PostgresJournal, pg_schema: str) -> None:
    journal.enqueue([job("a"), job("b"), job("later", run_at=time.time() + 0.3)])
    journal.lease(["q"], "w1", 2, 1.0)
    with pg_admin() as other:
        with other.transaction():
            lock_rows(other, pg_schema, ["a", "later"])
            time.sleep(0.4)  # "later" is due now
            assert journal.renew(["w1"], 60.0) == 1  # b only
            assert journal.promote() == 0  # "later" is held
            with journal.transaction():
                assert [a.job_id for a in journal.leased_by("w1")] == ["b"]
                assert [a.job_id for a in journal.leased_with_prefix("w")] == ["b"]
    assert journal.promote() == 1


# -- bounded waits ----------------------------------------------------------------------------------------


def test_a_wait_on_a_lock_ends_after_lock_timeout_as_a_transient_error(pg_schema: str) -> None:
    journal = PostgresJournal(PG_URL, schema=pg_schema, lock_timeout=0.2)
    try:
        journal.enqueue([job("a")])
        with pg_admin() as other:
            with other.transaction():
                lock_rows(other, pg_schema, ["a"])
                with pytest.raises(JournalError, match="lock timeout") as info:
                    journal.cancel("a")  # one row, named: it waits, up to the limit
        assert info.value.transient and not info.value.maybe_committed
        assert journal.cancel("a")  # the lock is gone: it goes through
    finally:
        journal.close()


def test_c17_a_session_idle_inside_a_transaction_is_ended_and_its_locks_released(pg_schema: str) -> None:
    """The paused node's side: its session ends after idle_in_transaction_timeout, its rows are free
    for others, and its own next statement fails as transient (the group runs again)."""
    paused = PostgresJournal(PG_URL, schema=pg_schema, idle_in_transaction_timeout=0.3)
    other = PostgresJournal(PG_URL, schema=pg_schema, lock_timeout=5.0)
    try:
        paused.enqueue([job("a"), job("b")])
        (leased,) = paused.lease(["q"], "w1", 1, 60.0)
        pid = backend_pid(paused)
        with pytest.raises(JournalError) as info:
            with paused.transaction():
                assert paused.complete([(leased.id, leased.lease_id)]) == 1  # holds the row
                # "paused": the server ends the session, and the row is free for another
                assert other.cancel(leased.id)
                paused.promote()
        assert info.value.transient
        with pg_admin() as admin:
            assert admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 0
        assert paused.get(leased.id).state == JobState.CANCELLED  # type: ignore[union-attr]
        assert backend_pid(paused) != pid  # reconnected
    finally:
        paused.close()
        other.close()


# -- the writer: busy answers wait outside the database; failed groups are run again ----------------------


def test_the_writer_puts_busy_answers_aside_and_applies_them_once_the_row_is_free(pg_schema: str) -> None:
    async def main() -> None:
        writer = jw.JournalWriter(lambda: PostgresJournal(PG_URL, schema=pg_schema), asyncio.get_running_loop())
        await writer.start()
        await writer.call(jw.ENQUEUE, job("a"))
        await writer.call(jw.ENQUEUE, job("b"))
        leased = {j.id: j for j in await writer.call(jw.LEASE, jw.Lease(["q"], "w1", 2, 60.0))}
        a, b = leased["a"], leased["b"]
        with pg_admin() as other:
            other.execute("BEGIN")
            lock_rows(other, pg_schema, ["a"])
            results = await collect_group(writer, [
                (jw.COMPLETE, [(a.id, a.lease_id)]),
                (jw.FAIL, [jw.Ending(b.id, b.lease_id, AttemptEnd.RAISED, "ValueError: x")]),
                (jw.ENQUEUE, job("c")),
            ])
            assert [e for _, e in results] == [None, None, None]  # nobody waited on the lock
            assert writer.stats.busy_retries >= 1 and writer.stats.jobs_acked == 0
            assert writer.stats.attempts_failed == 1  # b's failure, a neighbour of the busy ack
            await asyncio.sleep(0.3)  # the ack was tried again meanwhile: still busy
            assert writer.stats.busy_retries >= 2 and writer.stats.stale_acks == 0
            other.execute("ROLLBACK")
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_for(lambda: writer.stats.jobs_acked == 1, message="the busy ack applied"))
        states = await writer.call(jw.CALL, lambda j: {i: j.get(i).state for i in "abc"})
        assert states == {"a": JobState.SUCCEEDED, "b": JobState.RETRY, "c": JobState.READY}
        await writer.stop()

    asyncio.run(main())


def test_c18_a_deadlocked_group_is_run_again_and_loses_no_op(pg_schema: str, caplog: pytest.LogCaptureFixture) -> None:
    """A test transaction and the writer's group take two unique keys in opposite orders.
    (The group takes its keys' locks in bucket order: k3's bucket comes before k2's.)

    The writer waits for the key the test holds; the test then asks for the key the writer
    holds. PostgreSQL's deadlock detector runs in the session that waited first (the writer's:
    the test's own detector waits 10 s) and aborts the group; the writer runs it again once
    the test has rolled back. Every op of the group, the neighbours included, is applied once.
    """
    caplog.set_level(logging.WARNING, logger="actorq.jobs.journal_writer")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # a lock wait long enough for the deadlock detector (deadlock_timeout, 1 s by default)
        writer = jw.JournalWriter(lambda: PostgresJournal(PG_URL, schema=pg_schema, lock_timeout=5.0), loop)
        await writer.start()
        await writer.call(jw.ENQUEUE, job("n"))
        (leased,) = await writer.call(jw.LEASE, jw.Lease(["q"], "w1", 1, 60.0))
        pid = backend_pid(writer.journal)
        with pg_admin() as test:
            buckets = ", ".join(LOCK_BUCKET.format(key=f"'{key}'") for key in ("k3", "k2"))
            k3, k2 = test.execute(f"SELECT {buckets}").fetchone()
            assert k3 < k2, (k3, k2)
            test.execute("BEGIN")
            test.execute("SET LOCAL deadlock_timeout = '10s'")
            enqueue_in(test, [job("test-k2", unique_key="k2")], schema=pg_schema)
            group = asyncio.ensure_future(collect_group(writer, [
                (jw.ENQUEUE, job("w-k3", unique_key="k3")),
                (jw.ENQUEUE, job("w-k2", unique_key="k2")),
                (jw.COMPLETE, [(leased.id, leased.lease_id)]),
            ]))
            await loop.run_in_executor(None, lambda: wait_for(lambda: waiting_on_a_lock(pid),
                                                              message="the writer waits for k2"))
            # the test asks for k3, which the writer holds: a cycle; the writer's detector breaks it
            await loop.run_in_executor(None, enqueue_in, test, [job("test-k3", unique_key="k3")], pg_schema)
            test.execute("ROLLBACK")
            results = await group
        assert results == [("w-k3", None), ("w-k2", None), (None, None)]
        counts = await writer.call(jw.CALL, lambda j: j.counts())
        assert counts == {"q": {"ready": 2, "succeeded": 1}}
        assert writer.stats.failed_commits >= 1 and writer.stats.jobs_acked == 1 and writer.stats.jobs_enqueued == 3
        await writer.stop()

    asyncio.run(main())
    assert any("deadlock detected" in r.getMessage() for r in caplog.records)


def test_an_op_the_schema_refuses_fails_alone_and_its_neighbours_commit(pg_schema: str) -> None:
    async def main() -> None:
        writer = jw.JournalWriter(lambda: PostgresJournal(PG_URL, schema=pg_schema), asyncio.get_running_loop())
        await writer.start()
        results = await collect_group(writer, [
            (jw.ENQUEUE, job("fine-1")),
            (jw.ENQUEUE, job("bad", max_attempts=0)),  # the schema's CHECK refuses it
            (jw.ENQUEUE, job("fine-2")),
            (jw.PROMOTE, None),
        ])
        assert [r for r, _ in results] == ["fine-1", None, "fine-2", 0]
        assert isinstance(results[1][1], JournalError) and results[1][1].refused
        assert await writer.call(jw.CALL, lambda j: j.counts()) == {"q": {"ready": 2}}
        await writer.stop()

    asyncio.run(main())


def test_an_op_that_keeps_waiting_on_a_lock_is_tried_again_later_not_with_its_group(pg_schema: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        writer = jw.JournalWriter(lambda: PostgresJournal(PG_URL, schema=pg_schema, lock_timeout=0.1), loop)
        await writer.start()
        await writer.call(jw.ENQUEUE, job("held"))
        with pg_admin() as other:
            other.execute("BEGIN")
            lock_rows(other, pg_schema, ["held"])
            cancel = loop.create_future()
            writer.submit(jw.CALL, lambda j: j.cancel("held"), lambda r, e: cancel.set_result((r, e)))
            # groups after it commit while the cancel waits its turn outside the database
            for n in range(5):
                assert await writer.call(jw.ENQUEUE, job(f"next-{n}")) == f"next-{n}"
            assert not cancel.done()
            other.execute("ROLLBACK")
        assert await cancel == (True, None)
        await writer.stop()

    asyncio.run(main())


def test_sessions_carry_the_name_they_are_given_unless_the_url_names_them(pg_schema: str) -> None:
    """Operators tell nodes' sessions apart in pg_stat_activity: ``actorq <node> journal`` and the like."""
    named = PostgresJournal(PG_URL, schema=pg_schema, application_name="actorq node-1 journal")
    own = PostgresJournal(f"{PG_URL}?application_name=mine", schema=pg_schema, application_name="actorq node-1 journal")
    try:
        with pg_admin() as admin:
            names = dict(admin.execute("SELECT pid, application_name FROM pg_stat_activity WHERE pid = ANY(%s)",
                                       ([backend_pid(named), backend_pid(own)],)).fetchall())
        assert names == {backend_pid(named): "actorq node-1 journal", backend_pid(own): "mine"}
    finally:
        named.close()
        own.close()


# -- a producer's insert waits for locks up to its own timeout ------------------------------------------


def test_a_client_insert_waits_for_a_lock_longer_than_a_nodes_lock_timeout(pg_schema: str) -> None:
    """A `Client` writing into PostgreSQL waits for a lock up to its call's timeout: a node's
    0.5 s `lock_timeout` (meant for row locks of other nodes) failed producers queueing behind
    one another, e.g. on the server's NOTIFY lock when many commit at once. Here the lock is a
    unique key that another transaction has inserted and not yet committed."""
    from actorq import Client, Job

    holder = PostgresJournal(PG_URL, schema=pg_schema, idle_in_transaction_timeout=60.0)
    client = Client(PG_URL, schema=pg_schema, timeout=20.0)
    answer: list[str] = []
    thread = threading.Thread(target=lambda: answer.append(client.enqueue(Job("tests.noop", unique_key="k"))))
    try:
        with holder.transaction():
            holder.enqueue([job("first", unique_key="k")])
            thread.start()
            pid = backend_pid(client._journal)
            wait_for(lambda: waiting_on_a_lock(pid), message="the client's insert waiting on the unique key")
            time.sleep(1.5)  # three of a node's lock timeouts: the client still waits
            assert thread.is_alive() and waiting_on_a_lock(pid)
        thread.join(20)
        assert answer == ["first"]  # the key's holder: nothing added twice
    finally:
        thread.join(20)
        holder.close()
        client.close()
