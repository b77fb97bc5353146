"""Journal fixtures: one contract suite, run unchanged against SQLite, PostgreSQL and the memory journal.

See journal_support.py for the test server (``ACTORQ_TEST_PG_URL``) and
``ACTORQ_SKIP_PG=1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from journal_support import PG_URL, Backend, MemoryBackend, drop_schema, new_schema_name, require_pg, sqlite_backend

from actorq.journal import Journal


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh journal location on each backend (memory: `actorq.journal.memory.MemoryJournal`)."""
    if request.param == "memory":
        m = MemoryBackend()
        yield m
        m.close()
        return
    if request.param == "sqlite":
        b = sqlite_backend(tmp_path)
        yield b
        b.close()
        return
    require_pg()
    schema = new_schema_name()
    b = Backend("postgres", PG_URL, {"schema": schema})
    try:
        yield b
    finally:
        b.close()
        drop_schema(schema)


@pytest.fixture
def journal(backend: Backend) -> Journal:
    """A journal on the fresh backend (closed at teardown)."""
    return backend.open()


@pytest.fixture
def needs_pg() -> None:
    """Skip (or fail, where PostgreSQL is required) when no test server answers."""
    require_pg()


@pytest.fixture
def pg_journal(needs_pg: None, pg_schema: str) -> Iterator[Journal]:
    """A `PostgresJournal` in a fresh schema (closed at teardown)."""
    from actorq.journal import PostgresJournal

    j = PostgresJournal(PG_URL, schema=pg_schema)
    yield j
    j.close()
