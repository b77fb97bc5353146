"""Choosing a backend by URL: `open_journal` and `migrate`.

``sqlite:///path`` opens `SQLiteJournal`; ``postgresql://`` and ``postgres://``
open `PostgresJournal`, which needs the optional ``postgres`` extra. psycopg
is imported only when a PostgreSQL URL is used, so actorq imports without it.
"""

from __future__ import annotations

from types import ModuleType

from actorq.errors import JournalError
from actorq.journal import sqlite
from actorq.journal.protocol import Journal

DEFAULT_SCHEMA = "actorq"
DEFAULT_CONNECT_RETRY_FOR = 30.0  # seconds an unreachable PostgreSQL is retried before JournalError
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _postgres() -> ModuleType:
    try:
        from actorq.journal import postgres
    except ImportError as exc:  # its message says what to install: pip install 'actorq[postgres]'
        raise JournalError(str(exc)) from None
    return postgres


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.partition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hosts}"
    return url


def open_journal(
    url: str,
    *,
    synchronous: str = "full",
    busy_timeout: float = 5.0,
    schema: str = DEFAULT_SCHEMA,
    connect_retry_for: float = DEFAULT_CONNECT_RETRY_FOR,
) -> Journal:
    """Open the journal named by `url`.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, or
            ``postgresql://user@host:port/dbname`` (also ``postgres://``).
        synchronous: SQLite only: ``full`` (default), ``normal`` or ``extra``.
        busy_timeout: SQLite only: seconds a write waits for another process's lock.
        schema: PostgreSQL only: the journal's schema (default ``actorq``).
        connect_retry_for: PostgreSQL only: seconds to retry an unreachable server.

    Raises:
        ValueError: the URL scheme is not supported, or the schema name is invalid.
        JournalError: the journal cannot be opened; for PostgreSQL also when psycopg is
            not installed (the message says ``pip install 'actorq[postgres]'``).
    """
    if url.startswith(POSTGRES_SCHEMES):
        journal: Journal = _postgres().PostgresJournal(url, schema=schema, connect_retry_for=connect_retry_for)
        return journal
    if url.startswith("sqlite:///"):
        return sqlite.open_journal(url, synchronous=synchronous, busy_timeout=busy_timeout)
    raise ValueError(f"unsupported journal URL {_hide_password(url)!r}: expected sqlite:///path or postgresql://...")


def migrate(url: str, schema: str = DEFAULT_SCHEMA, *,
            connect_retry_for: float = DEFAULT_CONNECT_RETRY_FOR) -> list[int]:
    """Create or upgrade the journal schema at `url`; returns the versions applied now.

    For PostgreSQL, applies the numbered migrations missing from `schema` (safe to run
    from several processes at once). For SQLite, creates the file's schema if it has
    none (`schema` is ignored); a SQLite journal also does this when opened.

    Raises:
        ValueError: as `open_journal`.
        JournalError: the journal cannot be reached, holds something else, or is newer
            than this actorq.
    """
    if url.startswith(POSTGRES_SCHEMES):
        return _postgres().migrate(url, schema, connect_retry_for=connect_retry_for)  # type: ignore[no-any-return]
    journal = sqlite.open_journal(url)
    try:
        return list(journal.applied_versions)
    finally:
        journal.close()
