"""Node events: what a node's jobs and workers did, handed to hooks off the node's loop.

::

    journal writer thread ─┐  enqueued, succeeded, retried, failed, dead (after the commit)
    dispatcher (loop) ─────┤  started (a job sent to a worker)
    job runtime (loop) ────┤  cancelled, worker_started, worker_exited, restart
                           ▼
                   EventHub: a bounded buffer ──▶ its own thread ──▶ each hook, in order

`EventHub.emit` only appends to a buffer under a lock: it never runs a hook, so
a slow hook never delays a commit, an ack or the node's loop. Past
``[hooks] buffer`` events waiting, new ones are dropped and counted
(`EventHub.dropped`); a hook that raises is logged (at most once a second) and
counted (`EventHub.hook_errors`), and the next event goes on. With no hook and
no metrics, nothing is emitted at all (the emitting code tests `EventHub.active`).

Events report what this node did, after the journal stored it. They are
notifications, not a ledger: a node killed with events in its buffer loses
them, and the journal stays the truth (``actorq status``, `Node.counts`).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from actorq.transports.drops import DropCounter

logger = logging.getLogger(__name__)

__all__ = ["EVENTS", "EventHub", "HooksConfig", "NodeEvent", "load_hook"]

EVENTS = ("enqueued", "started", "succeeded", "retried", "failed", "dead", "cancelled",
          "worker_started", "worker_exited", "restart")
"""The node events, in the order a job meets them (then the worker processes')."""

JOB_ENDS = frozenset({"succeeded", "retried", "failed", "dead", "cancelled"})
MAX_BUFFER = 1_000_000
MAX_TIMED = 100_000  # started jobs whose end is awaited for the run-time histogram, at most


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One thing a node did.

    Attributes:
        kind: one of `EVENTS`.
        job_id: the job's id ("" for worker events).
        task: the task name when the node knows it without a read ("" otherwise: a
            ``succeeded`` event of a job that did not start on this node).
        queue: the queue, likewise.
        attempt: the attempt's number (0 when not known).
        error: the error text of ``retried``, ``failed`` and ``dead``; the exit reason of
            ``worker_exited``.
        pid: the worker process of ``worker_*`` and ``restart`` events.
        at: Unix time the node noted it.
        run_time: for job ends, seconds from ``started`` on this node to the event (None if
            it did not start here, e.g. a cancel of a ready job).
        ready_at: for ``enqueued`` and ``retried``, the Unix time the job is due (None: at once).
        queue_wait: for ``started``, seconds from when the job was due (its ``enqueued`` or
            ``retried`` event on this node, or its due time if later) to its start; None when
            this node did not see it become due (another producer's job, a crash's reclaim).
    """

    kind: str
    job_id: str = ""
    task: str = ""
    queue: str = ""
    attempt: int = 0
    error: str | None = None
    pid: int = 0
    at: float = field(default_factory=time.time)
    run_time: float | None = None
    ready_at: float | None = None
    queue_wait: float | None = None


Hook = Callable[[NodeEvent], object]


@dataclass(frozen=True, slots=True)
class HooksConfig:
    """The ``[hooks]`` section (docs/hooks.md).

    - ``node``: ``"module:function"`` entries; each function gets every `NodeEvent`
      (on the node's hook thread, in order). Imported when the node starts.
    - ``buffer``: events that may wait for the hooks (1 to 1000000; default 10000);
      past it, new events are dropped and counted.
    """

    node: tuple[str, ...] = ()
    buffer: int = field(default=10_000, metadata={"min": 1, "max": MAX_BUFFER})


def load_hook(entry: str) -> Hook:
    """Import ``module:function`` and return the function.

    Raises:
        ImportError: the module cannot be imported, or has no such callable.
    """
    module_name, sep, attr = entry.partition(":")
    if not sep or not module_name or not attr:
        raise ImportError(f"hook {entry!r}: expected 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ImportError(f"hook {entry!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ImportError(f"hook {entry!r}: {module_name}.{attr} is not a function")
    return fn  # type: ignore[no-any-return]


class RunTimes:
    """A histogram of seconds (job run times, queue waits); `counts` per bucket, made cumulative at scrape."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BUCKETS) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one run of `seconds`."""
        for i, bound in enumerate(self.BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += seconds


class EventHub:
    """Hands node events to hooks on a thread of its own (see the module docstring).

    Args:
        buffer: the most events waiting; more are dropped and counted.
        clock: the monotonic clock run times are measured with.
    """

    def __init__(self, buffer: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.buffer = buffer
        self.clock = clock
        self.hooks: dict[str, list[Hook]] = {}
        self.any_hooks: list[Hook] = []
        self.timing = False
        """Measure run times (the metrics endpoint turns it on)."""
        self.dropped = 0
        """Events dropped because `buffer` were waiting."""
        self.hook_errors: Counter[str] = Counter()
        """Hook calls that raised, by event kind."""
        self.emitted: Counter[str] = Counter()
        """Events handed to the hooks, by kind."""
        self.run_times: dict[str, RunTimes] = {}
        """By queue: the run times of the jobs that started on this node (`timing`)."""
        self.queue_waits: dict[str, RunTimes] = {}
        """By queue: the queue waits of the jobs this node saw become due, then started (`timing`)."""
        self._started: dict[str, tuple[float, str, str]] = {}  # job id -> (clock, task, queue)
        self._due: dict[str, float] = {}  # job id -> Unix time it became due (enqueued or retried here)
        self._pending: deque[tuple[float, NodeEvent]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closing = False
        self._errors = DropCounter("node hooks", logger, event="a hook raised").drop

    # -- registering ---------------------------------------------------------------------
    def on(self, kind: str, fn: Hook) -> None:
        """Call `fn(event)` for every event of `kind` (one of `EVENTS`, or ``"*"`` for all).

        Raises:
            ValueError: `kind` is not an event.
            TypeError: `fn` is not callable.
        """
        if kind != "*" and kind not in EVENTS:
            raise ValueError(f"unknown node event {kind!r}; expected one of {', '.join(EVENTS)} or '*'")
        if not callable(fn):
            raise TypeError(f"a node hook must be callable, got {type(fn).__name__}")
        with self._lock:
            if kind == "*":
                self.any_hooks.append(fn)
            else:
                self.hooks.setdefault(kind, []).append(fn)
        self.start()

    @property
    def active(self) -> bool:
        """Whether events are wanted: a hook is registered, or run times are measured."""
        return self.timing or bool(self.hooks) or bool(self.any_hooks)

    # -- emitting (any thread) --------------------------------------------------------------
    def emit(self, events: Iterable[NodeEvent]) -> None:
        """Queue `events` for the hooks; past the buffer's bound, drop and count them. Never blocks long."""
        if not self.active:
            return
        now = self.clock()
        with self._lock:
            pending = self._pending
            for event in events:
                if len(pending) >= self.buffer:
                    self.dropped += 1
                    continue
                pending.append((now, event))
            self._wake.notify()

    def emit_one(self, kind: str, **fields: object) -> None:
        """`emit` one event of `kind` (a no-op unless `active`)."""
        if self.active:
            self.emit((NodeEvent(kind, **fields),))  # type: ignore[arg-type]

    # -- the hook thread ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the hook thread (idempotent; `on` starts it)."""
        with self._lock:
            if self._thread is not None or self._closing:
                return
            self._thread = threading.Thread(target=self._run, name="actorq-node-hooks", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Run the hooks of the events already queued (for up to `timeout` s), then stop the thread."""
        with self._lock:
            self._closing = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._wake.wait()
                if not self._pending:
                    return
                batch = list(self._pending)
                self._pending.clear()
            for noted, event in batch:
                self._handle(noted, event)

    def _handle(self, noted: float, event: NodeEvent) -> None:
        kind = event.kind
        if kind == "started":
            if len(self._started) >= MAX_TIMED:
                self._started.pop(next(iter(self._started)))
            self._started[event.job_id] = (noted, event.task, event.queue)
            due = self._due.pop(event.job_id, None)
            if due is not None:
                event = dataclasses.replace(event, queue_wait=max(0.0, event.at - due))
                if self.timing:
                    self.queue_waits.setdefault(event.queue, RunTimes()).observe(event.queue_wait or 0.0)
        if kind in ("enqueued", "retried"):
            if len(self._due) >= MAX_TIMED:
                self._due.pop(next(iter(self._due)))
            self._due[event.job_id] = max(event.at, event.ready_at or 0.0)
        if kind in JOB_ENDS:
            began = self._started.pop(event.job_id, None)
            if began is not None:
                event = dataclasses.replace(event, run_time=max(0.0, noted - began[0]),
                                            task=event.task or began[1], queue=event.queue or began[2])
                if self.timing:
                    self.run_times.setdefault(event.queue, RunTimes()).observe(event.run_time or 0.0)
        self.emitted[kind] += 1
        for fn in (*self.hooks.get(kind, ()), *self.any_hooks):
            try:
                fn(event)
            except Exception as exc:
                self.hook_errors[kind] += 1
                self._errors(kind, f"{getattr(fn, '__qualname__', fn)!s}: {type(exc).__name__}: {exc}")
