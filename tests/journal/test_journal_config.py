"""The journal's settings: URLs, schema names, redaction, `JournalConfig` and choosing a backend.

No server is needed: a PostgreSQL URL is only parsed here (psycopg is imported
by `backend` alone, and only checked when it is installed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actorq.journal import SQLiteJournal
from actorq.journal.backends import journal_class, open_journal_config
from actorq.journal.config import (
    DEFAULT_URL, JournalConfig, check_schema, check_url, redact_url,
)


@pytest.mark.parametrize(("url", "shown"), [
    ("mysql://bob:hunter2@db/x", "mysql://bob:***@db/x"),
    ("postgresql://u:p%40ss@h:5432/d?sslmode=require&password=s3cr3t#frag",
     "postgresql://u:***@h:5432/d?sslmode=require&password=***#frag"),
    ("postgresql:///d?password=s3cr3t", "postgresql:///d?password=***"),
    ("postgresql://a:b:c@h1,h2/d", "postgresql://a:***@h1,h2/d"),
    ("postgresql://u@h/d?application_name=x&flag", "postgresql://u@h/d?application_name=x&flag"),
    # nothing to hide: the URL comes back to the character
    ("sqlite:///actorq.db", "sqlite:///actorq.db"),
    ("sqlite:////var/lib/actorq/journal.db", "sqlite:////var/lib/actorq/journal.db"),
    ("sqlite:///", "sqlite:///"),
    ("postgresql://", "postgresql://"),
    ("postgresql://[bad", "postgresql://[bad"),
    ("not a url", "not a url"),
])
def test_redact_url_hides_user_info_and_query_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_check_url_accepts_journal_urls_and_names_the_problem_without_a_password() -> None:
    for url in ("sqlite:///a.db", "sqlite:////abs/a.db", "postgresql://h/d", "postgres://", "postgresql://"):
        assert check_url(url) == url
    with pytest.raises(ValueError) as info:
        check_url("mysql://bob:hunter2@db/x")
    assert str(info.value) == ("unsupported journal URL: expected a URL starting with sqlite:/// or "
                               "postgresql://, got 'mysql://bob:***@db/x'")
    with pytest.raises(ValueError, match="expected a file path after sqlite:///"):
        check_url("sqlite:///")


@pytest.mark.parametrize("bad", ["", "Actorq", "1jobs", "a-b", 'x"; DROP SCHEMA public; --', "a" * 64, "über"])
def test_check_schema_refuses_what_is_not_a_plain_identifier(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid journal schema name: expected a lower-case SQL identifier"):
        check_schema(bad)


def test_check_schema_accepts_identifiers_up_to_63_characters() -> None:
    for good in ("actorq", "_x", "jobs_2", "a" * 63):
        assert check_schema(good) == good


def test_journal_config_resolves_sqlite_paths_against_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = JournalConfig()
    assert config.url == DEFAULT_URL
    assert config.sqlite_path == tmp_path / "actorq.db"
    assert config.resolved_url == f"sqlite:///{tmp_path / 'actorq.db'}"
    absolute = JournalConfig(url="sqlite:////var/lib/j.db")
    assert absolute.sqlite_path == Path("/var/lib/j.db") and absolute.resolved_url == "sqlite:////var/lib/j.db"
    shared = JournalConfig(url="postgresql://bob:hunter2@db/x")
    assert shared.resolved_url == "postgresql://bob:hunter2@db/x"  # unchanged: libpq reads it
    with pytest.raises(ValueError, match="not an SQLite URL") as info:
        _ = shared.sqlite_path
    assert "hunter2" not in str(info.value)


def test_journal_class_names_the_backend_and_what_it_can_do() -> None:
    backend = journal_class(JournalConfig().url)
    assert backend is SQLiteJournal and journal_class("sqlite:///x.db") is SQLiteJournal
    assert (backend.shared, backend.notifies) == (False, False)
    with pytest.raises(ValueError, match="unsupported journal URL"):
        _ = journal_class("mysql://x")
    pytest.importorskip("psycopg")
    from actorq.journal.postgres import PostgresJournal

    shared = journal_class(JournalConfig(url="postgres://db/x").url)
    assert shared is PostgresJournal
    assert (shared.shared, shared.notifies) == (True, True)


def test_open_journal_config_opens_the_configured_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    journal = open_journal_config(JournalConfig(url="sqlite:///rel.db", synchronous="normal",
                                                busy_timeout=2.5, wal_limit_mb=8.0))
    try:
        assert isinstance(journal, SQLiteJournal)
        assert journal.url == "sqlite:///rel.db" and journal.wal_limit_mb == 8.0
        assert (journal.pragma("synchronous"), journal.pragma("busy_timeout")) == (1, 2500)
    finally:
        journal.close()
    assert (tmp_path / "rel.db").exists()
