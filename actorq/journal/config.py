"""Journal settings: the defaults, journal URLs, schema names, and the ``[journal]`` section.

One home for each: a default is a named constant here, a URL or schema name is
checked here, and `redact_url` is the one function that hides a password
before a URL reaches a message or a log line. Nothing here imports psycopg.

::

    topology.toml [journal] ──▶ JournalConfig ──.resolved_url, .sqlite_path (SQLite: against the CWD)
                                     │
                                     └── backends.journal_class(url) ──▶ SQLiteJournal | PostgresJournal
                                         (what each can do is on the class: shared, notifies)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Mapping, get_args
from urllib.parse import unquote_plus

from actorq.journal.protocol import MAX_RETAIN, JobState

__all__ = [
    "DEFAULT_BATCH_MAX", "DEFAULT_BUSY_TIMEOUT", "DEFAULT_CONNECT_RETRY_FOR", "DEFAULT_SCHEMA",
    "DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT", "DEFAULT_LOCK_TIMEOUT", "DEFAULT_SYNCHRONOUS", "DEFAULT_URL", "DEFAULT_WAL_LIMIT_MB", "JournalConfig", "MAX_BATCH", "MAX_SECONDS",
    "MAX_WAL_LIMIT_MB", "POSTGRES_SCHEMES", "SCHEMA_PATTERN", "SQLITE_PREFIX", "SYNCHRONOUS_LEVELS",
    "Synchronous", "check_schema", "check_url", "redact_url",
    "DEFAULT_RETAIN", "FOREVER", "parse_duration",
]

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

DEFAULT_URL = "sqlite:///actorq.db"
DEFAULT_SCHEMA = "actorq"
Synchronous = Literal["full", "normal", "extra"]  # SQLite's PRAGMA synchronous levels actorq allows
SYNCHRONOUS_LEVELS: tuple[str, ...] = get_args(Synchronous)
DEFAULT_SYNCHRONOUS: Synchronous = "full"
DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a SQLite write waits for another process's lock
DEFAULT_CONNECT_RETRY_FOR = 30.0  # seconds an unreachable PostgreSQL is retried before JournalError
DEFAULT_BATCH_MAX = 4096  # journal writes committed in one transaction at most
DEFAULT_WAL_LIMIT_MB = 64.0  # SQLite: past this WAL size, a TRUNCATE checkpoint
# PostgreSQL: the longest a statement waits for a row lock, and the longest a session may sit
# inside a transaction without a statement, unless a smaller share of the lease timeout applies
DEFAULT_LOCK_TIMEOUT = 0.5
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT = 2.0

# The largest values the settings take (G12). A duration in the topology reaches SQLite as an int
# of milliseconds (busy_timeout: under 2**31 ms, about 24 days), PostgreSQL as an interval and the
# event loop as a timer: a day is far inside all of them, and far past any sensible setting.
MAX_SECONDS = 86_400.0
MAX_BATCH = 1_000_000  # journal writes in one transaction: the writer holds them all in memory
MAX_WAL_LIMIT_MB = 1_048_576.0  # 1 TiB: past it, the WAL is a disk problem, not a setting

SCHEMA_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Retention of finished jobs, by state (docs/retention.md): River's defaults, with dead jobs kept
# longest. Jobs that succeeded or were cancelled are history after a day; failed (gave up) and dead
# (attempts used up) jobs wait for a person to look at them, or retry them: a week, and a month.
FOREVER = "forever"
DEFAULT_RETAIN: Mapping[JobState, float] = MappingProxyType({
    JobState.SUCCEEDED: 86_400.0, JobState.CANCELLED: 86_400.0,
    JobState.FAILED: 7 * 86_400.0, JobState.DEAD: 30 * 86_400.0,
})
_UNITS = {"s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")


def parse_duration(value: object, *, forever: bool = True) -> float | None:
    """A duration as the topology and the command line write it, in seconds.

    ``"30s"``, ``"10m"``, ``"12h"``, ``"7d"`` (a whole or decimal number and one unit), or a
    number of seconds (``90``, ``"90"``, ``1.5``); ``"forever"`` (when `forever` allows it) is None.

    Args:
        value: the raw value (a TOML string or number, or a flag's text).
        forever: whether ``"forever"`` is accepted.

    Returns:
        Seconds from 0 to `MAX_RETAIN` (ten years), or None for ``"forever"``.

    Raises:
        ValueError: anything else; the message says what was expected and what was got.
    """
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) if not isinstance(value, int) or abs(value) < 2**63 else math.inf
    elif isinstance(value, str):
        if forever and value.strip() == FOREVER:
            return None
        match = _DURATION.fullmatch(value)
        if match:
            seconds = float(match[1]) * _UNITS[match[2]]
        else:
            try:
                seconds = float(value)
            except ValueError:
                seconds = None
    if seconds is not None and math.isfinite(seconds) and 0 <= seconds <= MAX_RETAIN:
        return seconds
    also = ', or "forever"' if forever else ""
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."  # never echo a page
    raise ValueError(f'expected a duration such as "30s", "10m", "12h", "7d" or seconds (a number){also}, '
                     f"from 0 to 3650d (ten years); got {shown} ({type(value).__name__})")


def _retain(state: JobState) -> object:
    return field(default=DEFAULT_RETAIN[state], metadata={"parse": parse_duration})


def redact_url(url: str) -> str:
    """Return `url` with any password (user info or ``password=`` parameter) replaced by ``***``.

    Everything else is kept to the character, so a URL without a password comes
    back unchanged.

    Args:
        url: any URL, valid or not.

    Returns:
        The URL fit for a message or a log line.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, hash_, fragment = rest.partition("#")
    head, qmark, query = rest.partition("?")
    netloc, slash, path = head.partition("/")
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    if query:
        pairs = [pair.partition("=") for pair in query.split("&")]
        query = "&".join(f"{key}={'***' if unquote_plus(key) == 'password' else value}" if eq else key
                         for key, eq, value in pairs)
    return f"{scheme}{sep}{netloc}{slash}{path}{qmark}{query}{hash_}{fragment}"


def _schema_problem(name: str) -> str | None:
    if isinstance(name, str) and SCHEMA_PATTERN.fullmatch(name):
        return None
    return f"expected a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 characters), got {name!r}"


def check_schema(name: str) -> str:
    """Return `name` if it is a valid journal schema name (PostgreSQL).

    Args:
        name: the schema name.

    Returns:
        `name`, unchanged.

    Raises:
        ValueError: it does not match ``^[a-z_][a-z0-9_]{0,62}$``.
    """
    problem = _schema_problem(name)
    if problem:
        raise ValueError(f"invalid journal schema name: {problem}")
    return name


def _url_problem(url: str) -> str | None:
    if url.startswith(POSTGRES_SCHEMES):
        return None
    if not url.startswith(SQLITE_PREFIX):
        return f"expected a URL starting with {SQLITE_PREFIX} or postgresql://, got {redact_url(url)!r}"
    if not url[len(SQLITE_PREFIX):]:
        return f"expected a file path after {SQLITE_PREFIX}, got {url!r}"
    return None


def check_url(url: str) -> str:
    """Return `url` if it names a journal: ``sqlite:///PATH``, ``postgresql://`` or ``postgres://``.

    Args:
        url: the journal URL.

    Returns:
        `url`, unchanged.

    Raises:
        ValueError: another scheme, or an SQLite URL without a path (the message
            shows the URL without its password).
    """
    problem = _url_problem(url)
    if problem:
        raise ValueError(f"unsupported journal URL: {problem}")
    return url


@dataclass(frozen=True, slots=True)
class JournalConfig:
    """The ``[journal]`` section.

    - ``url``: ``sqlite:///PATH`` (default ``sqlite:///actorq.db``); a relative
      PATH resolves against the current directory, ``sqlite:////abs`` is absolute.
      Or ``postgresql://user@host:port/dbname`` (libpq's environment variables and
      ``.pgpass`` apply; several nodes may share it).
    - ``schema``: PostgreSQL only: the schema holding the journal (default ``actorq``).
    - ``connect_retry_for``: PostgreSQL only: seconds an unreachable server is retried,
      with backoff, before the node (or a command) gives up (> 0, default 30).
    - ``synchronous``: SQLite ``PRAGMA synchronous``: ``"full"`` (default),
      ``"normal"`` or ``"extra"``.
    - ``busy_timeout``: seconds to wait on a locked database (> 0, default 5).
    - ``batch_max``: most journal writes committed in one transaction (>= 1, default 4096).
    - ``wal_limit_mb``: SQLite only: past this WAL size (MB) the node runs a TRUNCATE
      checkpoint, which waits up to ``busy_timeout`` for readers (> 0, default 64).
    - ``lock_timeout``: PostgreSQL only: the longest a journal statement waits for a row
      lock another session holds; past it the statement fails and its batch is retried
      (> 0 and below ``dispatcher.lease_timeout``; default the smaller of 0.5 s and a
      quarter of the lease timeout).
    - ``idle_in_transaction_timeout``: PostgreSQL only: the server ends a journal session
      that sits this long inside a transaction without a statement (a paused or cut-off
      node), releasing its locks (> 0 and below ``dispatcher.lease_timeout``; default the
      smaller of 2 s and half the lease timeout).

    - ``retain_succeeded``, ``retain_cancelled``, ``retain_failed``, ``retain_dead``: how
      long a finished job is kept, by its final state, before the node's upkeep prunes it
      with its errors and result: a duration (``"30s"``, ``"10m"``, ``"12h"``, ``"7d"``, or
      seconds as a number) from 0 to ten years, or ``"forever"`` (None here). Defaults: 1d,
      1d, 7d, 30d (see docs/retention.md).

    Every number is bounded above too: durations by `MAX_SECONDS` (a day), ``batch_max``
    by `MAX_BATCH`, ``wal_limit_mb`` by `MAX_WAL_LIMIT_MB`.

    Field metadata is read by the node's TOML reader: ``check`` returns a problem
    text or None, ``gt``, ``min`` and ``max`` are numeric bounds.
    """

    url: str = field(default=DEFAULT_URL, metadata={"check": _url_problem})
    schema: str = field(default=DEFAULT_SCHEMA, metadata={"check": _schema_problem})
    connect_retry_for: float = field(default=DEFAULT_CONNECT_RETRY_FOR, metadata={"gt": 0, "max": MAX_SECONDS})
    synchronous: Synchronous = DEFAULT_SYNCHRONOUS
    busy_timeout: float = field(default=DEFAULT_BUSY_TIMEOUT, metadata={"gt": 0, "max": MAX_SECONDS})
    batch_max: int = field(default=DEFAULT_BATCH_MAX, metadata={"min": 1, "max": MAX_BATCH})
    wal_limit_mb: float = field(default=DEFAULT_WAL_LIMIT_MB, metadata={"gt": 0, "max": MAX_WAL_LIMIT_MB})
    lock_timeout: float | None = field(default=None, metadata={"gt": 0, "max": MAX_SECONDS})
    idle_in_transaction_timeout: float | None = field(default=None, metadata={"gt": 0, "max": MAX_SECONDS})
    retain_succeeded: float | None = _retain(JobState.SUCCEEDED)  # type: ignore[assignment]
    retain_cancelled: float | None = _retain(JobState.CANCELLED)  # type: ignore[assignment]
    retain_failed: float | None = _retain(JobState.FAILED)  # type: ignore[assignment]
    retain_dead: float | None = _retain(JobState.DEAD)  # type: ignore[assignment]

    @property
    def retention(self) -> dict[JobState, float]:
        """``{final state: seconds a finished job is kept}``; states kept forever are left out."""
        kept = {JobState.SUCCEEDED: self.retain_succeeded, JobState.CANCELLED: self.retain_cancelled,
                JobState.FAILED: self.retain_failed, JobState.DEAD: self.retain_dead}
        return {state: seconds for state, seconds in kept.items() if seconds is not None}

    def session_limits(self, lease_timeout: float) -> tuple[float, float]:
        """``(lock_timeout, idle_in_transaction_timeout)`` in seconds for a node whose leases
        last `lease_timeout`: the values set, or the defaults scaled down to the lease."""
        lock = self.lock_timeout or min(DEFAULT_LOCK_TIMEOUT, lease_timeout / 4)
        idle = self.idle_in_transaction_timeout or min(DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT, lease_timeout / 2)
        return lock, idle

    @property
    def sqlite_path(self) -> Path:
        """The database file named by an SQLite `url`, a relative path resolved against the CWD.

        Raises:
            ValueError: the journal is not SQLite.
        """
        if not self.url.startswith(SQLITE_PREFIX):
            raise ValueError(f"journal.url is not an SQLite URL: {redact_url(self.url)}")
        path = Path(self.url[len(SQLITE_PREFIX):])
        return path if path.is_absolute() else Path.cwd() / path

    @property
    def resolved_url(self) -> str:
        """The URL with a relative SQLite path made absolute (against the CWD); others unchanged."""
        return f"{SQLITE_PREFIX}{self.sqlite_path}" if self.url.startswith(SQLITE_PREFIX) else self.url

    def describe(self) -> str:
        """One line for people: the URL (password hidden) and the options its backend reads."""
        if self.url.startswith(SQLITE_PREFIX):
            return f"{self.url} (synchronous={self.synchronous})"
        return f"{redact_url(self.url)} (schema {self.schema})"
