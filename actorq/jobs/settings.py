"""The job runtime's settings: the ``[node]``, ``[dispatcher]`` and ``[workers]`` sections.

Frozen dataclasses with the defaults in one place. `actorq.node.config` reads
``topology.toml`` into them (the field metadata holds the bounds and checks
its errors name: ``min``, ``gt``, ``check``); the job runtime
(`actorq.jobs.runtime`) and its roles read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from actorq.transports.constants import DEFAULT_MAX_FRAME_BYTES

__all__ = ["DispatcherConfig", "NodeConfig", "WorkersConfig"]

_TASK_RE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")


def _check_tasks(value: tuple[str, ...]) -> str | None:
    bad = [entry for entry in value if not _TASK_RE.fullmatch(entry)]
    return f"expected entries like 'module' or 'module:attribute', got {bad[0]!r}" if bad else None


def _check_endpoint(value: str) -> str | None:
    if value and not value.startswith(("ipc://", "tcp://127.0.0.1:", "tcp://localhost:")):
        return ("expected an ipc:// endpoint or a loopback tcp:// endpoint; "
                "other interfaces are not supported yet")
    return None


def _check_queues(value: tuple[str, ...]) -> str | None:
    ok = value and all(value)
    return None if ok else f"expected a non-empty list of non-empty strings, got {list(value)!r}"


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
      expired leases) lasts unless renewed; another node takes over after it (> 0, default 15).
    """

    name: str = ""
    tasks: tuple[str, ...] = field(default=(), metadata={"check": _check_tasks})
    endpoint: str = field(default="", metadata={"check": _check_endpoint})
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    leader_ttl: float = field(default=15.0, metadata={"gt": 0})


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    """The ``[dispatcher]`` section.

    - ``poll_interval``: seconds between journal polls for due jobs (> 0).
    - ``lease_timeout``: seconds before an unacknowledged job is re-leased (> 0).
    - ``max_frame_bytes``: largest accepted message frame in bytes (>= 131072); a job's
      encoded arguments may take up to this less 64 KiB.
    """

    poll_interval: float = field(default=0.2, metadata={"gt": 0})
    lease_timeout: float = field(default=300.0, metadata={"gt": 0})
    max_frame_bytes: int = field(default=DEFAULT_MAX_FRAME_BYTES, metadata={"min": 131_072})


@dataclass(frozen=True, slots=True)
class WorkersConfig:
    """The ``[workers]`` section.

    - ``processes``: worker processes to run (>= 1, default 2).
    - ``concurrency``: jobs run at once in each process (>= 1, default 16).
    - ``prefetch``: extra jobs buffered per process (>= 0, default 16).
    - ``queues``: queue names to consume (non-empty, default ``["default"]``).
    - ``shutdown_timeout``: seconds to let running jobs finish on stop (>= 0).
    - ``intensity``: worker restarts allowed within ``period`` (>= 0, default 10).
    - ``period``: the restart-intensity window in seconds (> 0, default 60).
    - ``heartbeat_interval``: seconds between a worker's heartbeats (> 0, default 1).
    - ``heartbeat_timeout``: a worker silent this long (paused, wedged) loses its
      jobs to other workers (> heartbeat_interval, default 20).
    - ``restart_backoff``: seconds before restarting a crashed worker, doubling for
      each consecutive crash up to 30 s (>= 0; default 0: restart at once).
    """

    processes: int = field(default=2, metadata={"min": 1})
    concurrency: int = field(default=16, metadata={"min": 1})
    prefetch: int = field(default=16, metadata={"min": 0})
    queues: tuple[str, ...] = field(default=("default",), metadata={"check": _check_queues})
    shutdown_timeout: float = field(default=30.0, metadata={"min": 0})
    intensity: int = field(default=10, metadata={"min": 0})
    period: float = field(default=60.0, metadata={"gt": 0})
    heartbeat_interval: float = field(default=1.0, metadata={"gt": 0})
    heartbeat_timeout: float = field(default=20.0, metadata={"gt": 0})
    restart_backoff: float = field(default=0.0, metadata={"min": 0})
