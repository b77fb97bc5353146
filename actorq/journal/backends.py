"""Choosing a backend by URL: `journal_class`, `open_journal` and `migrate`.

``sqlite:///path`` opens `SQLiteJournal`; ``postgresql://`` and ``postgres://``
open `PostgresJournal`, which needs the optional ``postgres`` extra. psycopg
is imported only when a PostgreSQL URL is used, so actorq imports without it.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from actorq.errors import JournalError
from actorq.journal.config import (
    DEFAULT_BUSY_TIMEOUT, DEFAULT_CONNECT_RETRY_FOR, DEFAULT_SCHEMA, DEFAULT_SYNCHRONOUS, DEFAULT_WAL_LIMIT_MB,
    POSTGRES_SCHEMES, JournalConfig, check_url,
)
from actorq.journal.protocol import Journal
from actorq.journal.sqlite import SQLiteJournal

if TYPE_CHECKING:
    from actorq.journal.postgres import PostgresJournal


def _postgres() -> ModuleType:
    try:
        from actorq.journal import postgres
    except ImportError as exc:  # its message says what to install: pip install 'actorq[postgres]'
        raise JournalError(str(exc)) from None
    return postgres


def journal_class(url: str) -> type[SQLiteJournal] | type[PostgresJournal]:
    """The backend class for `url`: what it can do is on the class (``shared``, ``notifies``).

    Args:
        url: ``sqlite:///path``, ``postgresql://...`` or ``postgres://...``.

    Returns:
        `SQLiteJournal` or `PostgresJournal`; psycopg is imported for the latter only.

    Raises:
        ValueError: the URL names no journal (the message hides its password).
        JournalError: a PostgreSQL URL, and psycopg is not installed (the message says
            ``pip install 'actorq[postgres]'``).
    """
    check_url(url)
    if url.startswith(POSTGRES_SCHEMES):
        postgres_class: type[PostgresJournal] = _postgres().PostgresJournal
        return postgres_class
    return SQLiteJournal


def open_journal_config(config: JournalConfig, *, create: bool = True, **session: str) -> Journal:
    """Open the journal `config` describes (its `url` as given: a relative SQLite path is the CWD's).

    Args:
        config: the ``[journal]`` settings; those of the other backend are ignored.
        create: False: a journal that does not exist yet (a missing SQLite file, a PostgreSQL
            schema not migrated) is an error rather than created, for commands that only read.
        session: PostgreSQL only: ``application_name`` (how the session shows in
            ``pg_stat_activity``) and ``purpose`` (what its log lines call it).

    Returns:
        The open journal.

    Raises:
        ValueError: as `journal_class`, or a setting is invalid (schema name, synchronous level).
        JournalError: as `journal_class`, or the journal cannot be opened or does not exist.
    """
    cls = journal_class(config.url)
    if cls is SQLiteJournal:
        return SQLiteJournal.from_config(config, create=create)
    journal: Journal = cls.from_config(config, create=create, **session)
    return journal


def open_journal(
    url: str,
    *,
    synchronous: str = DEFAULT_SYNCHRONOUS,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    schema: str = DEFAULT_SCHEMA,
    connect_retry_for: float = DEFAULT_CONNECT_RETRY_FOR,
    wal_limit_mb: float = DEFAULT_WAL_LIMIT_MB,
    create: bool = True,
    lock_timeout: float | None = None,
) -> Journal:
    """Open the journal named by `url`.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, or
            ``postgresql://user@host:port/dbname`` (also ``postgres://``).
        synchronous: SQLite only: ``full`` (default), ``normal`` or ``extra``.
        busy_timeout: SQLite only: seconds a write waits for another process's lock.
        schema: PostgreSQL only: the journal's schema (default ``actorq``).
        connect_retry_for: PostgreSQL only: seconds to retry an unreachable server.
        wal_limit_mb: SQLite only: the WAL size past which `Journal.maintain` checkpoints.
        create: False: a journal that does not exist yet is an error (see `open_journal_config`).
        lock_timeout: PostgreSQL only: seconds a statement may wait for a lock (None: the
            journal's default, `JournalConfig.lock_timeout`).

    Returns:
        The open journal.

    Raises:
        ValueError: the URL scheme is not supported, or the schema name is invalid.
        JournalError: the journal cannot be opened or, with `create` False, does not exist;
            for PostgreSQL also when psycopg is not installed (the message says
            ``pip install 'actorq[postgres]'``).
    """
    return open_journal_config(JournalConfig(
        url=url, schema=schema, connect_retry_for=connect_retry_for,
        synchronous=synchronous,  # type: ignore[arg-type]  # checked by SQLiteJournal
        busy_timeout=busy_timeout, wal_limit_mb=wal_limit_mb, lock_timeout=lock_timeout), create=create)


def migrate(url: str, schema: str = DEFAULT_SCHEMA, *,
            connect_retry_for: float = DEFAULT_CONNECT_RETRY_FOR) -> list[int]:
    """Create or upgrade the journal schema at `url`; returns the versions applied now.

    For PostgreSQL, applies the numbered migrations missing from `schema` (safe to run
    from several processes at once). For SQLite, brings the file's schema up to date
    (`schema` is ignored); a SQLite journal also does this when opened.

    Raises:
        ValueError: as `open_journal`.
        JournalError: the journal cannot be reached, holds something else, or is newer
            than this actorq.
    """
    if journal_class(url) is not SQLiteJournal:
        return _postgres().migrate(url, schema, connect_retry_for=connect_retry_for)  # type: ignore[no-any-return]
    journal = SQLiteJournal.from_config(JournalConfig(url=url))
    try:
        return list(journal.applied_versions)
    finally:
        journal.close()
