"""Connecting to PostgreSQL: retries with backoff, one log line per outage, no password anywhere.

::

    connect() ──▶ attempt ──ok──▶ connection (and "reachable again" if an outage was logged)
                    │ refused / reset / server starting (retryable)
                    ▼
                 first failure of an outage: one WARNING with host:port and the cause
                 sleep 0.05 s, 0.1 s, 0.2 s ... (x2 each time, capped, jittered)
                 budget spent, or a permanent cause (bad password, no such database):
                 JournalError naming host:port and the cause

The conninfo (a ``postgresql://`` URL) goes to libpq unchanged, so libpq's
environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, ...),
``PGPASSFILE``/``~/.pgpass`` and service files all apply. Passwords are never
logged: texts are scrubbed of the URL's and ``PGPASSWORD``'s password, and
`redact_url` hides the password of a URL shown to people.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from actorq.errors import JournalError
from actorq.journal.config import redact_url

logger = logging.getLogger("actorq.journal.postgres")

DEFAULT_CONNECT_TIMEOUT = 5  # seconds per attempt, unless the URL or PGCONNECT_TIMEOUT says otherwise
FIRST_BACKOFF = 0.05
# SQLSTATE classes worth retrying: connection exceptions, operator intervention (server
# shutting down or starting up), insufficient resources (too many connections).
_RETRYABLE_CLASSES = ("08", "57", "53")


def _retryable(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    return state is None or state.startswith(_RETRYABLE_CLASSES)


class Connector:
    """Opens connections to the server named by one URL.

    Args:
        url: a ``postgresql://`` or ``postgres://`` URL (libpq conninfo).
        retry_for: seconds to keep retrying a failed connect before giving up (0: one attempt).
        max_backoff: the longest sleep between attempts.
        purpose: what the connection is for, in log lines (``journal``, ``listener``).
        extra: more connection parameters for psycopg (they override the URL's, except
            ``application_name``: the URL's or ``PGAPPNAME`` wins).
    """

    def __init__(self, url: str, *, retry_for: float, max_backoff: float, purpose: str, **extra: Any) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise JournalError(f"invalid PostgreSQL URL {redact_url(url)}: {exc}") from None
        self._url = url
        self._extra = dict(extra)
        if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
            self._extra["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        if "application_name" not in params and "PGAPPNAME" not in os.environ:
            self._extra.setdefault("application_name", f"actorq {purpose}")
        else:  # the URL's or the environment's name wins
            self._extra.pop("application_name", None)
        self._secrets = [s for s in (params.get("password"), os.environ.get("PGPASSWORD")) if s]
        host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost"
        port = params.get("port") or os.environ.get("PGPORT") or "5432"
        self.where = f"{host}:{port}"
        self.retry_for = retry_for
        self.max_backoff = max_backoff
        self.purpose = purpose
        self.outage = False  # a failure was logged and no connect has succeeded since

    def scrub(self, text: str) -> str:
        """Return `text` without any password this connector knows of."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _cause(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return self.scrub(text)

    def connect(self, *, retry_for: float | None = None) -> psycopg.Connection[Any]:
        """Open an autocommit connection, retrying retryable failures for up to `retry_for` s.

        Raises:
            JournalError: no connection within the budget, or a permanent failure
                (authentication, unknown database); names host:port and the cause.
        """
        budget = self.retry_for if retry_for is None else retry_for
        deadline = time.monotonic() + budget
        delay = FIRST_BACKOFF
        while True:
            try:
                conn = psycopg.connect(self._url, autocommit=True, **self._extra)
            except psycopg.Error as exc:
                cause = self._cause(exc)
                if not self.outage:
                    self.outage = True
                    logger.warning("PostgreSQL %s at %s is unreachable: %s%s", self.purpose, self.where, cause,
                                   f"; retrying with backoff for up to {budget:g} s" if budget > 0 else "")
                pause = delay * (0.5 + random.random())  # jitter: many nodes do not retry in step
                if not _retryable(exc) or time.monotonic() + pause > deadline:
                    raise JournalError(
                        f"cannot connect to PostgreSQL at {self.where} ({self.purpose}): {cause}") from None
                time.sleep(pause)
                delay = min(delay * 2, self.max_backoff)
                continue
            if self.outage:
                self.outage = False
                logger.warning("PostgreSQL %s at %s is reachable again", self.purpose, self.where)
            return conn
