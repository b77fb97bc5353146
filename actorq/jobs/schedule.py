"""Cron schedules: what a schedule is, and which of its fire times are due.

A `Schedule` names a cron expression read in a timezone, and the job it makes
at each fire time. Everything here is pure: time comes in as an argument (a
Unix time from the scheduler's injected wall clock), so the firing rules are
tested without waiting for a deadline.

Which times fire (`due_times`): the journal keeps, per schedule, the latest fire
time already handled (``last_fired``; before the first, the time it was added).
The times due are croniter's fire times after it, up to now::

    last_fired            now
        │   t1    t2    t3 │  t4
    ────┼───┼─────┼─────┼──┼──┼──▶    due: t1 t2 t3; a time is *missed* when it is
                                       found more than `LATE_GRACE` seconds late

    catch_up = "none"  fire those not missed (t3 if found in time), skip the rest
    catch_up = "last"  fire the latest (t3) once, skip the older     (the default)
    catch_up = "all"   fire each, the latest `MAX_CATCH_UP` of them, skip the older

Skipped times are handled too: ``last_fired`` moves to t3 whatever was fired.
A wall clock that jumps back finds nothing after ``last_fired`` until it has
caught up again, so nothing fires twice (F2).

Timezones (F4): times are croniter's, read in the schedule's IANA zone. A time
that a spring-forward change skips (``30 2 * * *`` in Europe/Berlin on the last
Sunday of March) fires at the first minute after the gap (03:00 local); a time
that the autumn change repeats (02:30 on the last Sunday of October) fires
twice, once per occurrence (they are an hour apart in real time). A day missing
from a month (``0 0 31 * *``) has no fire time that month.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, NamedTuple, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgpack

from actorq.ids import new_id
from actorq.jobs.outcome import DEFAULT_PRIORITY, DEFAULT_QUEUE
from actorq.jobs.task import DEFAULT_MAX_PAYLOAD, Declared, check_name, encode_payload
from actorq.journal.protocol import DEFAULT_MAX_ATTEMPTS, LATEST_RUN_AT, NewJob, ScheduleRow

__all__ = ["CATCH_UP_POLICIES", "check_cron", "check_schedule_name", "LATE_GRACE", "MAX_CATCH_UP", "MAX_SCHEDULE_NAME", "Schedule", "ScheduleInfo",
           "due_times", "unique_key"]

CATCH_UP_POLICIES = ("none", "last", "all")
DEFAULT_CATCH_UP = "last"
MAX_CATCH_UP = 100  # fire times one `all` schedule fires at once after downtime; older ones are skipped
LATE_GRACE = 60.0  # seconds late a fire time may be found and still count as on time (`none` fires it)
# A schedule's unique key is "cron:<name>:<fire time>": it must fit the 255 characters of a job's key.
MAX_SCHEDULE_NAME = 200
_KEY_PREFIX = "cron:"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule: at each fire time of `cron` in `timezone`, one job of `task`.

    Args:
        name: unique among the journal's schedules; at most `MAX_SCHEDULE_NAME` characters.
        cron: a cron expression croniter reads (five fields; a sixth gives seconds).
        task: the registered task name of its jobs.
        args, kwargs: the jobs' arguments (msgpack-encodable, as a `Job`'s).
        queue: the jobs' queue; None: the task's declared queue.
        timezone: the IANA zone the expression is read in (default ``"UTC"``).
        catch_up: what fires of the times missed while no scheduler ran: ``"none"``,
            ``"last"`` (default) or ``"all"`` (see the module docstring).

    Raises:
        ValueError: naming the schedule: a name, task or queue that is empty, too long or
            not UTF-8; an expression croniter refuses; an unknown timezone or catch-up policy.
        TypeError: arguments msgpack cannot encode (naming the argument).
    """

    name: str
    cron: str
    task: str
    args: tuple[Any, ...] = field(default=(), hash=False)  # may hold lists and dicts: not hashed
    kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    queue: str | None = None
    timezone: str = "UTC"
    catch_up: str = DEFAULT_CATCH_UP

    def __post_init__(self) -> None:
        check_schedule_name(self.name)
        where = f"schedule {self.name!r}"
        try:
            check_name("task name", self.task)
            if self.queue is not None:
                check_name("queue name", self.queue)
            check_cron(self.cron)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        zone(self.timezone, where)
        if self.catch_up not in CATCH_UP_POLICIES:
            raise ValueError(f"{where}: catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, "
                             f"got {self.catch_up!r}")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        try:
            encode_payload(self.args, self.kwargs)
        except TypeError as exc:
            raise TypeError(f"{where}: {exc}") from None

    @property
    def payload(self) -> bytes:
        """msgpack ``[args, kwargs]``, as each of its jobs carries them."""
        return encode_payload(self.args, self.kwargs)

    def check_payload(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        """Refuse arguments larger than a job's may be.

        Raises:
            ValueError: the encoded arguments take more than `max_payload` bytes.
        """
        size = len(self.payload)
        if size > max_payload:
            raise ValueError(f"schedule {self.name!r}: its arguments take {size:,} bytes encoded; the limit is "
                             f"{max_payload:,} (dispatcher.max_frame_bytes less 64 KiB)")

    def next_after(self, when: float) -> float:
        """The first fire time after `when` (Unix seconds)."""
        return next_after(self.cron, zone(self.timezone), when)

    def to_row(self, source: str, added_at: float) -> ScheduleRow:
        """The row the journal stores for it (see `Journal.put_schedules`)."""
        return ScheduleRow(self.name, self.cron, self.task, self.payload, self.queue, self.timezone,
                           self.catch_up, source, added_at, None)


    @classmethod
    def from_row(cls, row: ScheduleRow) -> "Schedule":
        """The schedule a journal row defines.

        Raises:
            ValueError: the row does not define a valid schedule.
        """
        try:
            args, kwargs = msgpack.unpackb(row.payload, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ValueError(f"schedule {row.name!r}: its stored arguments cannot be read: {exc}") from None
        return cls(row.name, row.cron, row.task, tuple(args), kwargs, row.queue, row.timezone, row.catch_up)


class ScheduleInfo(NamedTuple):
    """A stored schedule as `Schedules.list` shows it.

    Attributes:
        schedule: its definition.
        source: ``"file"`` (a node's topology.toml) or ``"api"``.
        last_fired: Unix time of the latest fire time handled, or None.
        next_fire: Unix time of its next fire time after `last_fired` (or after it was added).
    """

    schedule: Schedule
    source: str
    last_fired: float | None
    next_fire: float

    @classmethod
    def from_row(cls, row: ScheduleRow) -> "ScheduleInfo":
        """The view of one journal row.

        Raises:
            ValueError: the row does not define a valid schedule.
        """
        schedule = Schedule.from_row(row)
        start = row.last_fired if row.last_fired is not None else row.added_at
        return cls(schedule, row.source, row.last_fired, schedule.next_after(start))


def check_schedule_name(name: object) -> None:
    """Refuse a schedule name that is not a non-empty UTF-8 string of at most `MAX_SCHEDULE_NAME` characters.

    Raises:
        ValueError: what is wrong (never echoing a long name).
    """
    check_name("schedule name", name)
    assert isinstance(name, str)
    if len(name) > MAX_SCHEDULE_NAME:
        raise ValueError(f"a schedule name may have at most {MAX_SCHEDULE_NAME} characters, got {len(name):,}")


def croniter(cron: str, start: datetime | None = None) -> Any:
    """croniter's iterator over `cron` from `start` (now if None). croniter is imported on
    first use: with dateutil it adds 2 MB to a process, which a node without schedules
    and a worker never need."""
    from croniter import croniter as iterator

    return iterator(cron) if start is None else iterator(cron, start)


def check_cron(cron: object) -> None:
    """Refuse an expression croniter cannot read.

    Raises:
        ValueError: naming the expression and croniter's reason.
    """
    if not isinstance(cron, str) or not cron.strip() or len(cron) > 1000:
        raise ValueError(f"cron must be a cron expression such as '*/5 * * * *', got {type(cron).__name__}"
                         + (f" of {len(cron):,} characters" if isinstance(cron, str) else ""))
    try:
        croniter(cron)
    except (ValueError, KeyError, TypeError) as exc:  # croniter's errors are ValueErrors; be safe
        reason = str(exc).replace(f"[{cron}] ", "")
        raise ValueError(f"cron {cron!r} is not a valid cron expression ({reason}); expected five fields: "
                         "minute hour day-of-month month day-of-week") from None


def zone(name: str, where: str = "") -> ZoneInfo:
    """The IANA zone `name`.

    Raises:
        ValueError: no such zone (the message names it and `where`).
    """
    try:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ValueError
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}unknown timezone {name!r} (expected an IANA name such as 'UTC' or "
                         "'Europe/Berlin')") from None


def next_after(cron: str, tz: ZoneInfo, when: float) -> float:
    """The first fire time of `cron` in `tz` strictly after `when` (Unix seconds)."""
    return float(croniter(cron, datetime.fromtimestamp(when, tz)).get_next(float))


def due_times(row: ScheduleRow, now: float) -> tuple[list[float], float | None]:
    """Which fire times of `row` fire now, and how far ``last_fired`` moves.

    Args:
        row: the schedule as the journal holds it (its ``last_fired``, or ``added_at``).
        now: the wall clock's Unix time.

    Returns:
        ``(fire, handled)``: the times to fire, oldest first, and the latest time due
        (fired or skipped), or None when nothing is due (``last_fired`` stays).
    """
    start = row.last_fired if row.last_fired is not None else row.added_at
    if not now > start:  # the clock is behind what already fired (it jumped back): nothing is due
        return [], None
    tz = zone(row.timezone)
    # The latest time due, found backwards from now: a long downtime costs no walk over every minute.
    latest = croniter(row.cron, datetime.fromtimestamp(now, tz)).get_prev(float)
    after = next_after(row.cron, tz, latest)
    if after <= now:  # croniter's get_prev excludes `now` itself when it is a fire time
        latest = after
    if not latest > start:
        return [], None
    if row.catch_up == "last":
        return [latest], latest
    if row.catch_up == "none":
        return ([latest] if now - latest <= LATE_GRACE else []), latest
    times = [latest]
    back = croniter(row.cron, datetime.fromtimestamp(latest, tz))
    while len(times) < MAX_CATCH_UP:
        earlier = back.get_prev(float)
        if not earlier > start:
            break
        times.append(earlier)
    times.reverse()
    return times, latest


def unique_key(name: str, fire_at: float) -> str:
    """The unique key of the job that fire time `fire_at` of schedule `name` makes."""
    return f"{_KEY_PREFIX}{name}:{fire_at:.0f}" if float(fire_at).is_integer() else f"{_KEY_PREFIX}{name}:{fire_at!r}"


def jobs_for(row: ScheduleRow, times: Sequence[float], declared: Callable[[str], Declared | None]) -> list[NewJob]:
    """One job per fire time of `row`, with the task's declared queue, priority and attempts."""
    policy = declared(row.task)
    queue = row.queue or (policy.queue if policy is not None else DEFAULT_QUEUE)
    priority = policy.priority if policy is not None else DEFAULT_PRIORITY
    attempts = policy.max_attempts if policy is not None else DEFAULT_MAX_ATTEMPTS
    return [NewJob(new_id(), queue, row.task, row.payload, priority, None, attempts, unique_key(row.name, t))
            for t in times if math.isfinite(t) and t <= LATEST_RUN_AT]
