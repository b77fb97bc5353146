"""Cron: fires the journal's schedules, on the leading node only.

Every `tick` seconds, while this node leads the once-only duties (`is_leader`),
it reads the schedules (a read: no write lock) and, for each one with a fire
time due by the injected wall clock (`actorq.jobs.schedule.due_times`), asks
the writer to fire it::

    read schedules ──▶ due_times(row, now) ──▶ CALL fire_schedule(name, row.last_fired, handled, jobs)
                                                    │ one transaction:
                                                    │   last_fired: row.last_fired ──▶ handled  (compare-and-set)
                                                    │   enqueue one job per fired time
                                                    ▼
                                               False: another scheduler moved it first; nothing written

So a fire time fires once whatever happens around it: a second scheduler (two
nodes, or a leader that lost its claim mid-tick) finds ``last_fired`` moved
and writes nothing; a node killed before its commit fires the time again after
its restart (nothing of the first try was kept), and one killed after it finds
``last_fired`` past the time. Each job also carries the unique key
``cron:<name>:<fire time>`` (`schedule.unique_key`), so while it is live no
other job of that fire time can be added by any path.

The wall clock is injected (`clock`), and `tick` can be awaited directly: tests
move the clock and tick, never sleep for a deadline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Callable, Collection

from actorq.jobs import journal_writer as jw
from actorq.errors import JournalError
from actorq.jobs.schedule import LATE_GRACE, Schedule, ScheduleInfo, due_times, jobs_for
from actorq.jobs.task import DEFAULT_MAX_PAYLOAD, Declared
from actorq.journal.protocol import Journal, NewJob, ScheduleRow

logger = logging.getLogger(__name__)

__all__ = ["Cron", "DEFAULT_TICK", "Schedules"]

DEFAULT_TICK = 1.0  # seconds between reads of the schedules: cron's finest unit is a second


class Cron:
    """Fires due schedules through a journal writer (see the module docstring).

    Args:
        writer: the journal writer (the duty writer on a shared journal).
        loop: the node's loop.
        declared: a task's declared policy by name (queue, priority, attempts of its jobs), or None.
        wake: called with the queues that got jobs (the dispatcher's `wake`).
        is_leader: whether this node leads the once-only duties now.
        tick: seconds between ticks.
        clock: the wall clock, Unix seconds (injectable for tests).
    """

    def __init__(self, writer: jw.JournalWriter, loop: asyncio.AbstractEventLoop, *,
                 declared: Callable[[str], Declared | None], wake: Callable[[set[str] | None], None],
                 is_leader: Callable[[], bool] = lambda: True, tick: float = DEFAULT_TICK,
                 clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.loop = loop
        self.declared = declared
        self.wake = wake
        self.is_leader = is_leader
        self.tick_interval = tick
        self.clock = clock
        self.ticks = 0
        self.fired = 0  # jobs enqueued by this scheduler's firings
        self.lost = 0  # firings another scheduler made first (the compare-and-set found last_fired moved)
        self._handle: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[Any] | None = None

    def start(self) -> None:
        """Start ticking. Idempotent."""
        if self._handle is None:
            self._handle = self.loop.call_soon(self._on_timer)

    def stop(self) -> None:
        """Stop ticking. Idempotent; a firing already handed to the writer still commits or not, whole."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._running is not None:
            self._running.cancel()
            self._running = None

    def _on_timer(self) -> None:
        self._handle = self.loop.call_later(self.tick_interval, self._on_timer)
        if self._running is not None and not self._running.done():  # the last tick has not ended: skip
            return
        self._running = self.loop.create_task(self._tick_logged())

    async def _tick_logged(self) -> None:
        try:
            await self.tick()
        except Exception as exc:  # the next tick tries again
            logger.warning("cron tick failed: %s", exc)

    async def tick(self) -> int:
        """Fire every schedule due now by `clock`, if this node leads; returns the jobs enqueued.

        Raises:
            JournalError: the schedules could not be read.
        """
        self.ticks += 1
        if not self.is_leader():
            return 0
        now = self.clock()
        rows: list[ScheduleRow] = await self.writer.call(jw.OUTSIDE, _read_schedules)
        firings = []
        for row in rows:
            try:
                times, handled = due_times(row, now)
            except Exception as exc:  # a row another actorq wrote that this one cannot read
                logger.error("schedule %r cannot be computed: %s", row.name, exc)
                continue
            if handled is None:
                continue
            jobs = jobs_for(row, times, self.declared)
            firings.append((row, times, jobs, self.writer.call(
                jw.CALL, functools.partial(_fire, row.name, row.last_fired, handled, jobs))))
        enqueued = 0
        queues: set[str] = set()
        for row, times, jobs, pending in firings:
            try:
                done = await pending
            except Exception as exc:  # this schedule only; the next tick tries it again
                logger.error("schedule %r: firing failed: %s", row.name, exc)
                continue
            if not done:
                self.lost += 1
                logger.info("schedule %r: another scheduler fired it first", row.name)
                continue
            enqueued += len(jobs)
            queues.update(job.queue for job in jobs)
            if len(jobs) == 1 and now - times[0] <= LATE_GRACE:
                # routine: one time, on time (an every-second schedule would fill an info log)
                logger.debug("schedule %r fired for %s", row.name, _times(times))
            elif jobs:
                logger.info("schedule %r caught up: %d job(s) for %s", row.name, len(jobs), _times(times))
            else:
                logger.info("schedule %r: missed fire times skipped (catch_up = %r)", row.name, row.catch_up)
        self.fired += enqueued
        if queues:
            self.wake(queues)
        return enqueued


class Schedules:
    """The journal's schedules, read and changed through a running node (``node.schedules``).

    Schedules added here are kept in the journal until removed; a node's
    ``[[schedules]]`` are written at each start and replace a schedule of the same
    name (the file wins for its names). Every node on the journal sees a change at
    the leader's next tick.

    Args:
        writer: the current journal writer (None while the node is not running).
        clock: the wall clock, Unix seconds: a new schedule's first fire time is after it.
        max_payload: the largest encoded arguments a job may carry.
    """

    def __init__(self, writer: Callable[[], jw.JournalWriter | None], *, clock: Callable[[], float] = time.time,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._writer = writer
        self._clock = clock
        self._max_payload = max_payload

    def _current(self) -> jw.JournalWriter:
        writer = self._writer()
        if writer is None:
            raise JournalError("the node is not running")
        return writer

    async def add(self, schedule: Schedule) -> None:
        """Store `schedule`, replacing one of the same name (whose fire times already handled stay handled).

        Raises:
            ValueError: its arguments are larger than a job's may be.
            JournalError: the journal could not store it, or the node is not running.
        """
        schedule.check_payload(self._max_payload)
        row = schedule.to_row("api", self._clock())
        await self._current().call(jw.CALL, functools.partial(_put, [row]))

    async def remove(self, name: str) -> bool:
        """Delete schedule `name`; returns whether there was one. Jobs it already made are kept.

        Raises:
            JournalError: the journal could not delete it, or the node is not running.
        """
        return bool(await self._current().call(jw.CALL, functools.partial(_remove, [name])))

    async def list(self) -> list[ScheduleInfo]:
        """Every stored schedule, by name, with its last and next fire times.

        Raises:
            JournalError: the journal could not be read, or the node is not running.
        """
        rows: list[ScheduleRow] = await self._current().call(jw.OUTSIDE, _read_schedules)
        return [ScheduleInfo.from_row(row) for row in rows]


def _put(rows: list[ScheduleRow], journal: Journal) -> None:
    journal.put_schedules(rows)


def _remove(names: list[str], journal: Journal) -> int:
    return journal.remove_schedules(names)


def sync_file_schedules(journal: Journal, schedules: Collection[Schedule], now: float) -> list[str]:
    """Write a node's ``[[schedules]]``: they replace stored schedules of their names, and
    schedules an earlier file defined that this one no longer has are removed.

    Returns:
        The names removed.
    """
    names = {s.name for s in schedules}
    gone = [row.name for row in journal.schedules() if row.source == "file" and row.name not in names]
    journal.remove_schedules(gone)
    journal.put_schedules([s.to_row("file", now) for s in schedules])
    return gone


def _read_schedules(journal: Journal) -> list[ScheduleRow]:
    return journal.schedules()


def _fire(name: str, previous: float | None, handled: float, jobs: list[NewJob], journal: Journal) -> bool:
    return journal.fire_schedule(name, previous, handled, jobs)


def _times(times: Collection[float]) -> str:
    stamps = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in times]
    return ", ".join(stamps) if len(stamps) <= 3 else f"{stamps[0]} ... {stamps[-1]}"
