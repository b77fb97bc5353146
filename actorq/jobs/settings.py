"""The job runtime's settings: the ``[node]``, ``[dispatcher]`` and ``[workers]`` sections.

Frozen dataclasses with the defaults in one place. `actorq.node.config` reads
``topology.toml`` into them (the field metadata holds the bounds and checks
its errors name: ``min``, ``gt``, ``max``, ``check``); the job runtime
(`actorq.jobs.runtime`) and its roles read them.

Every number is bounded on both sides, at what the code and the OS take (G12):
durations by `actorq.journal.config.MAX_SECONDS` (a day), counts by the
``MAX_*`` constants here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from actorq.jobs.wire import FRAME_OVERHEAD, MAX_CREDITS, MAX_NAME_CHARS, MAX_QUEUES
from actorq.journal.config import MAX_SECONDS
from actorq.transports.constants import DEFAULT_MAX_FRAME_BYTES

__all__ = [
    "DispatcherConfig", "MAX_CONCURRENCY", "MAX_FRAME_BYTES", "MAX_INTENSITY", "MAX_PROCESSES", "MIN_FRAME_BYTES",
    "NodeConfig", "ProducersConfig", "WorkersConfig", "endpoint_problem", "producers_endpoint_problem",
]

MIN_FRAME_BYTES = 2 * FRAME_OVERHEAD  # a frame keeps FRAME_OVERHEAD for itself: 64 KiB are left for arguments
# A job's arguments (up to a frame less FRAME_OVERHEAD) are stored as one value: SQLite refuses a BLOB
# over 10**9 bytes (SQLITE_MAX_LENGTH), PostgreSQL a bytea over 1 GiB.
MAX_FRAME_BYTES = 1_000_000_000
MAX_PROCESSES = 1024  # worker processes of one node: each holds its own interpreter, socket and pipes
MAX_CONCURRENCY = 100_000  # job slots per worker process: sync tasks each take a thread
MAX_INTENSITY = 1_000_000  # restarts a supervisor counts within its period: it remembers each one
MAX_IPC_PATH_BYTES = 107  # sockaddr_un.sun_path holds 108 bytes with the final NUL (libzmq refuses longer)
MAX_PORT = 65_535
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

_TASK_RE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")


def _check_tasks(value: tuple[str, ...]) -> str | None:
    bad = [entry for entry in value if not _TASK_RE.fullmatch(entry)]
    return f"expected entries like 'module' or 'module:attribute', got {bad[0]!r}" if bad else None


def _check_endpoint(value: str) -> str | None:
    return endpoint_problem(value, "the dispatcher's endpoint")


def producers_endpoint_problem(value: str) -> str | None:
    """Why `value` cannot be a node's producer endpoint, or None (see `endpoint_problem`)."""
    return endpoint_problem(value, "the producer endpoint")


def endpoint_problem(value: str, what: str) -> str | None:
    """Why `value` cannot be one of a node's endpoints (`what`), or None ("" is the default: None).

    Accepted: ``ipc:///absolute/path`` (at most `MAX_IPC_PATH_BYTES` bytes; not Linux's
    abstract ``ipc://@name``, which no file mode protects) and ``tcp://127.0.0.1:PORT`` or
    ``tcp://localhost:PORT`` (PORT 1 to 65535). The endpoints have no authentication, so no
    other interface is.
    """
    if not value:
        return None
    expected = f"expected ipc:///absolute/path or tcp://127.0.0.1:PORT (PORT 1 to {MAX_PORT})"
    if value.startswith("ipc://"):
        path = value[len("ipc://"):]
        if not path.startswith("/"):
            return f"{expected}; an ipc:// path is absolute (no abstract @name), got {value!r}"
        if "\0" in path or path.endswith("/"):
            return f"{expected}; an ipc:// path names a file, got {value!r}"
        size = len(path.encode("utf-8", "surrogateescape"))
        if size > MAX_IPC_PATH_BYTES:
            return f"{expected}; an ipc:// path has at most {MAX_IPC_PATH_BYTES} bytes, got one of {size}"
        return None
    if value.startswith("tcp://"):
        host, _, port = value[len("tcp://"):].rpartition(":")
        if host not in LOOPBACK_HOSTS:
            return f"{expected}, got {value!r}: {what} has no authentication, so it listens on 127.0.0.1 only"
        if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= MAX_PORT):
            return f"{expected}, got {value!r}"
        return None
    return f"{expected}, got {value!r}"


def _check_queues(value: tuple[str, ...]) -> str | None:
    expected = (f"expected a non-empty list of at most {MAX_QUEUES} queue names, each 1 to "
                f"{MAX_NAME_CHARS} characters")
    if not value or len(value) > MAX_QUEUES:
        return f"{expected}, got {len(value)} names"
    bad = [q for q in value if not 0 < len(q) <= MAX_NAME_CHARS]
    return f"{expected}, got one of {len(bad[0])} characters" if bad else None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The ``[node]`` section.

    - ``name``: node name; ``""`` (default) means the host name.
    - ``tasks``: task registries imported in every worker, each ``"module"`` or
      ``"module:attribute"``.
    - ``endpoint``: dispatcher endpoint; ``""`` (default) picks an ``ipc://``
      socket in a private 0700 directory.  Otherwise ``ipc://...``,
      ``tcp://127.0.0.1:PORT`` or ``tcp://localhost:PORT``.
    - ``log_level``: ``"debug"``, ``"info"`` (default), ``"warning"`` or ``"error"``.
    - ``leader_ttl``: seconds a node's leadership of once-only duties (rescuing
      expired leases) lasts unless renewed; another node takes over after it (> 0, at
      most a day, default 15).
    """

    name: str = ""
    tasks: tuple[str, ...] = field(default=(), metadata={"check": _check_tasks})
    endpoint: str = field(default="", metadata={"check": _check_endpoint})
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    leader_ttl: float = field(default=15.0, metadata={"gt": 0, "max": MAX_SECONDS})


@dataclass(frozen=True, slots=True)
class ProducersConfig:
    """The ``[producers]`` section: the node's producer endpoint (`actorq.jobs.producers`).

    - ``endpoint``: where the node takes other processes' enqueues. ``""`` (default): an
      ``ipc://`` socket in the node's private 0700 directory, which only the node file names
      (SQLite: ``<journal>.node``, where every `actorq.Client` finds it). Otherwise a fixed
      address to give producers (``Client(url, node_endpoint=...)``, ``actorq enqueue
      --node-endpoint``), on any journal: ``ipc:///absolute/path`` (its directory must exist;
      the socket file is made mode 0600 after bind, so only the node's user can connect) or
      ``tcp://127.0.0.1:PORT`` / ``tcp://localhost:PORT`` (any local user can connect). No
      other interface is accepted: the endpoint has no authentication.
    """

    endpoint: str = field(default="", metadata={"check": producers_endpoint_problem})


DEFAULT_RESULT_TTL = 86_400.0  # seconds a return value is kept, unless [results] ttl or its task says otherwise
MAX_RESULT_TTL = 10 * 365 * 86_400  # ten years: any longer is a mistake, not a retention time


@dataclass(frozen=True, slots=True)
class ResultsConfig:
    """The ``[results]`` section: what becomes of the values tasks return (docs/results.md).

    - ``ttl``: seconds a succeeded job's return value is kept, from its completion
      (0 to ten years; default a day; 0 keeps none). A task may set its own
      (``@registry.task(..., result_ttl=...)``). Expired values are removed by the node's
      upkeep, and read as expired before that.
    """

    ttl: float = field(default=DEFAULT_RESULT_TTL, metadata={"min": 0, "max": MAX_RESULT_TTL})


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    """The ``[dispatcher]`` section.

    - ``poll_interval``: seconds between journal polls for due jobs (> 0, at most a day).
    - ``lease_timeout``: seconds before an unacknowledged job is re-leased (> 0, at most a day).
    - ``max_frame_bytes``: largest accepted message frame in bytes (131072 to 10**9); a job's
      encoded arguments may take up to this less 64 KiB.
    """

    poll_interval: float = field(default=0.2, metadata={"gt": 0, "max": MAX_SECONDS})
    lease_timeout: float = field(default=300.0, metadata={"gt": 0, "max": MAX_SECONDS})
    max_frame_bytes: int = field(default=DEFAULT_MAX_FRAME_BYTES,
                                 metadata={"min": MIN_FRAME_BYTES, "max": MAX_FRAME_BYTES})


@dataclass(frozen=True, slots=True)
class WorkersConfig:
    """The ``[workers]`` section.

    - ``processes``: worker processes to run (1 to `MAX_PROCESSES`, default 2).
    - ``concurrency``: jobs run at once in each process (1 to `MAX_CONCURRENCY`, default 16).
    - ``prefetch``: extra jobs buffered per process (>= 0, default 16). A worker asks for
      ``concurrency + prefetch`` jobs, which must not pass `actorq.jobs.wire.MAX_CREDITS`.
      A journal commit hands out about ``processes * (concurrency + prefetch) / 4`` jobs:
      for jobs of a few milliseconds on PostgreSQL, a larger prefetch drains faster, at the
      cost of jobs leased but not started (docs/architecture.md, "Drain rate on PostgreSQL").
    - ``queues``: queue names to consume (non-empty, default ``["default"]``).
    - ``shutdown_timeout``: seconds to let running jobs finish on stop (>= 0).
    - ``intensity``: worker restarts allowed within ``period`` (0 to `MAX_INTENSITY`, default 10).
    - ``period``: the restart-intensity window in seconds (> 0, default 60).
    - ``heartbeat_interval``: seconds between a worker's heartbeats (> 0, default 1).
    - ``heartbeat_timeout``: a worker silent this long (paused, wedged) loses its
      jobs to other workers (> heartbeat_interval, default 20).
    - ``restart_backoff``: seconds before restarting a crashed worker, doubling for
      each consecutive crash up to 30 s (>= 0; default 0: restart at once).
    - ``cancel_grace``: seconds a cancelled sync task may run on (it sees
      ``current_job().cancelled``) before its worker process is replaced (>= 0, default 10).

    Every duration is at most a day (`actorq.journal.config.MAX_SECONDS`).
    """

    processes: int = field(default=2, metadata={"min": 1, "max": MAX_PROCESSES})
    concurrency: int = field(default=16, metadata={"min": 1, "max": MAX_CONCURRENCY})
    prefetch: int = field(default=16, metadata={"min": 0, "max": MAX_CREDITS})
    queues: tuple[str, ...] = field(default=("default",), metadata={"check": _check_queues})
    shutdown_timeout: float = field(default=30.0, metadata={"min": 0, "max": MAX_SECONDS})
    intensity: int = field(default=10, metadata={"min": 0, "max": MAX_INTENSITY})
    period: float = field(default=60.0, metadata={"gt": 0, "max": MAX_SECONDS})
    heartbeat_interval: float = field(default=1.0, metadata={"gt": 0, "max": MAX_SECONDS})
    heartbeat_timeout: float = field(default=20.0, metadata={"gt": 0, "max": MAX_SECONDS})
    restart_backoff: float = field(default=0.0, metadata={"min": 0, "max": MAX_SECONDS})
    cancel_grace: float = field(default=10.0, metadata={"min": 0, "max": MAX_SECONDS})
