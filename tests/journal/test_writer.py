"""The journal writer's group commit on each backend, and under faults.

Group commit and error handling run on both backends (the ``backend`` fixture);
a full SQLite journal (E5) is SQLite-only. A PostgreSQL connection killed in the
middle of a group (E1) is in test_postgres.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from journal_support import Backend, collect_group

from actorq.errors import JournalError
from actorq.ids import new_id
from actorq.jobs import journal_writer as jw
from actorq.journal import NewJob, SQLiteJournal


def _job(size: int = 2000) -> NewJob:
    return NewJob(new_id(), "default", "t", b"x" * size)


@pytest.mark.timeout(30)
def test_e5_full_journal_fails_the_whole_group_and_recovers(tmp_path: Path) -> None:
    db = tmp_path / "full.db"

    async def main() -> None:
        journals: list[SQLiteJournal] = []

        def factory() -> SQLiteJournal:
            journal = SQLiteJournal(db)
            journals.append(journal)
            return journal

        writer = jw.JournalWriter(factory, asyncio.get_running_loop())
        await writer.start()
        await writer.call(jw.ENQUEUE, _job())
        pages = await writer.call(jw.CALL, lambda j: j.pragma("page_count"))
        await writer.call(jw.CALL, lambda j: j._conn.execute(f"PRAGMA max_page_count = {pages + 2}"))
        # many large inserts and a later kind of op in one group: the inserts cannot fit
        ops: list[tuple[int, Any]] = [(jw.ENQUEUE, _job()) for _ in range(200)] + [(jw.PROMOTE, None)]
        results = await collect_group(writer, ops)
        assert all(isinstance(error, JournalError) for _, error in results[:200]), results[:3]
        assert f"journal {db} is full" in str(results[0][1])
        counts = await writer.call(jw.CALL, lambda j: j.counts())
        assert counts == {"default": {"ready": 1}}  # nothing of the failed group was committed
        # raise the limit again: writes resume
        await writer.call(jw.CALL, lambda j: j._conn.execute("PRAGMA max_page_count = 1073741823"))
        await writer.call(jw.ENQUEUE, _job())
        assert (await writer.call(jw.CALL, lambda j: j.counts())) == {"default": {"ready": 2}}
        await writer.stop()

    asyncio.run(main())
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    conn.close()


@pytest.mark.timeout(30)
def test_an_op_submitted_after_stop_is_answered_with_an_error(backend: Backend) -> None:
    async def main() -> None:
        writer = jw.JournalWriter(backend.open, asyncio.get_running_loop())
        await writer.start()
        await writer.stop()
        with pytest.raises(JournalError, match="stopped"):
            await writer.call(jw.PROMOTE)

    asyncio.run(main())


@pytest.mark.timeout(30)
def test_an_unexpected_error_fails_its_group_and_the_writer_keeps_going(backend: Backend) -> None:
    async def main() -> None:
        writer = jw.JournalWriter(backend.open, asyncio.get_running_loop())
        await writer.start()
        # a bug outside the per-op guards: fail every op of the group, keep the thread alive
        writer.journal.transaction = _exploding_transaction(writer.journal)  # type: ignore[method-assign]
        with pytest.raises(AssertionError, match="a bug"):
            await writer.call(jw.ENQUEUE, _job())
        del writer.journal.transaction  # back to the class's method
        assert await writer.call(jw.ENQUEUE, _job()) is not None
        assert await writer.call(jw.CALL, lambda j: j.counts()) == {"default": {"ready": 1}}
        await writer.stop()

    asyncio.run(main())


def _exploding_transaction(journal: Any) -> Any:
    from contextlib import contextmanager

    @contextmanager
    def transaction() -> Any:
        raise AssertionError("a bug in the backend's transaction")
        yield  # pragma: no cover

    return transaction


@pytest.mark.timeout(60)
def test_group_commit_batches_many_ops_and_answers_after_the_commit(backend: Backend) -> None:
    """1,000 enqueues submitted without awaiting commit land in fewer than 1,000 transactions."""
    observer = backend.open()  # another connection: sees only committed jobs

    async def main() -> tuple[dict[str, Any], jw.WriterStats, list[tuple[Any, Any]], list[bool]]:
        writer = jw.JournalWriter(backend.open, asyncio.get_running_loop())
        await writer.start()
        callbacks: list[tuple[Any, Any]] = []
        visible_at_callback: list[bool] = []

        def on_done(result: Any, error: BaseException | None) -> None:
            callbacks.append((result, error))

        def on_first(result: Any, error: BaseException | None) -> None:
            # A job is accepted only once its group committed: another connection sees it.
            visible_at_callback.append(observer.get(result) is not None)
            on_done(result, error)

        for n in range(1000):
            writer.enqueue(NewJob(f"job-{n:04d}", "q", "t", b""), on_first if n in (0, 999) else on_done)
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
    assert observer.counts() == {"q": {"ready": 1000}}
