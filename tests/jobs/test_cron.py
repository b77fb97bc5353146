"""Cron schedules: which fire times fire, with an injected wall clock (F2, F4), and once only.

The firing rules (`due_times`) are checked as pure functions; `Cron` is then
driven through a real journal writer on a real journal (SQLite, and PostgreSQL
where two schedulers race), moving the injected clock and awaiting `tick()`:
no test waits for a deadline. Each fired job is found in the journal by its
unique key ``cron:<name>:<fire time>``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

import msgpack
import pytest
from croniter import croniter

from actorq.errors import JournalError
from actorq.jobs import journal_writer as jw
from actorq.jobs.cron import Cron, Schedules, sync_file_schedules
from actorq.jobs.outcome import TaskPolicy
from actorq.jobs.schedule import LATE_GRACE, MAX_CATCH_UP, Schedule, ScheduleInfo, due_times, unique_key
from actorq.journal import SQLiteJournal, open_journal
from actorq.journal.protocol import Journal, ScheduleRow

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def at(*fields: int, tz: ZoneInfo | timezone = UTC, fold: int = 0) -> float:
    return datetime(*fields, tzinfo=tz, fold=fold).timestamp()


def row(cron: str = "0 * * * *", *, catch_up: str = "last", added_at: float = 0.0, last_fired: float | None = None,
        tz: str = "UTC", name: str = "s") -> ScheduleRow:
    return Schedule(name, cron, "tests.noop", catch_up=catch_up, timezone=tz).to_row("api", added_at)._replace(
        last_fired=last_fired)


# -- the rules, as pure functions -------------------------------------------------------------------


def test_nothing_is_due_before_the_first_fire_time_after_the_schedule_was_added() -> None:
    added = at(2026, 1, 1, 10, 0, 30)
    assert due_times(row(added_at=added), added + 10) == ([], None)
    assert due_times(row(added_at=added), at(2026, 1, 1, 11, 0)) == ([at(2026, 1, 1, 11, 0)], at(2026, 1, 1, 11, 0))


def test_catch_up_last_fires_the_latest_missed_time_once_and_skips_the_rest() -> None:
    fired = at(2026, 1, 1, 10)
    now = at(2026, 1, 1, 15, 20)  # down from 10:00 to 15:20: 11:00 ... 15:00 missed
    assert due_times(row(last_fired=fired), now) == ([at(2026, 1, 1, 15)], at(2026, 1, 1, 15))


def test_catch_up_none_skips_missed_times_and_fires_only_on_time() -> None:
    fired = at(2026, 1, 1, 10)
    late = at(2026, 1, 1, 15) + LATE_GRACE + 1
    assert due_times(row(catch_up="none", last_fired=fired), late) == ([], at(2026, 1, 1, 15))  # skipped, moved
    on_time = at(2026, 1, 1, 15) + 0.5
    assert due_times(row(catch_up="none", last_fired=fired), on_time) == ([at(2026, 1, 1, 15)], at(2026, 1, 1, 15))


def test_catch_up_all_fires_every_missed_time_up_to_the_bound() -> None:
    fired = at(2026, 1, 1, 10)
    times, handled = due_times(row(catch_up="all", last_fired=fired), at(2026, 1, 1, 13, 5))
    assert times == [at(2026, 1, 1, 11), at(2026, 1, 1, 12), at(2026, 1, 1, 13)] and handled == times[-1]
    # A week down with an hourly schedule: the latest MAX_CATCH_UP times, oldest first; the rest skipped.
    times, handled = due_times(row(catch_up="all", last_fired=fired), at(2026, 1, 8, 10, 30))
    assert len(times) == MAX_CATCH_UP and times == sorted(times) and handled == at(2026, 1, 8, 10)
    assert times[0] == at(2026, 1, 8, 10) - (MAX_CATCH_UP - 1) * 3600


def test_a_fire_time_exactly_now_is_due() -> None:
    assert due_times(row(last_fired=at(2026, 1, 1, 10)), at(2026, 1, 1, 11)) == ([at(2026, 1, 1, 11)],
                                                                                 at(2026, 1, 1, 11))


def test_f2_a_clock_behind_last_fired_finds_nothing_due() -> None:
    fired = at(2026, 1, 1, 11)
    assert due_times(row(last_fired=fired), fired - 3600) == ([], None)
    assert due_times(row(last_fired=fired), fired) == ([], None)
    assert due_times(row(catch_up="all", last_fired=fired), fired + 3599) == ([], None)


def test_f4_month_end_fires_only_in_months_with_a_31st_once_each() -> None:
    # `0 0 31 * *` in Europe/Berlin through 2026, the clock stepped 6 hours at a time
    schedule = row("0 0 31 * *", tz="Europe/Berlin", added_at=at(2026, 1, 1, tz=BERLIN))
    fired: list[float] = []
    now = schedule.added_at
    while now < at(2027, 1, 1, tz=BERLIN):
        now += 6 * 3600
        times, handled = due_times(schedule, now)
        fired += times
        if handled is not None:
            schedule = schedule._replace(last_fired=handled)
    months = [datetime.fromtimestamp(t, BERLIN) for t in fired]
    assert [(m.month, m.day, m.hour) for m in months] == [(m, 31, 0) for m in (1, 3, 5, 7, 8, 10, 12)]


# -- the schedule's own checks ------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"cron": "61 * * * *"}, "schedule 's': cron '61 \\* \\* \\* \\*' is not a valid cron expression"),
    ({"cron": ""}, "schedule 's': cron must be a cron expression"),
    ({"timezone": "Mars/Olympus"}, "schedule 's': unknown timezone 'Mars/Olympus'"),
    ({"timezone": "../../etc/passwd"}, "unknown timezone"),
    ({"catch_up": "sometimes"}, "catch_up must be one of none, last, all"),
    ({"name": "n" * 201}, "at most 200 characters, got 201"),
    ({"name": ""}, "non-empty"),
    ({"task": "t" * 256}, "schedule 's': a task name may have at most 255"),
    ({"queue": ""}, "schedule 's': a queue name must be a non-empty string"),
])
def test_a_bad_schedule_is_refused_naming_it(kwargs: dict[str, str], message: str) -> None:
    fields = {"name": "s", "cron": "* * * * *", "task": "tests.noop"} | kwargs
    with pytest.raises(ValueError, match=message):
        Schedule(**fields)  # type: ignore[arg-type]


def test_arguments_are_checked_like_a_jobs() -> None:
    with pytest.raises(TypeError, match="schedule 's': job argument 0 \\(object\\)"):
        Schedule("s", "* * * * *", "t", args=(object(),))
    big = Schedule("s", "* * * * *", "t", args=("x" * 2000,))
    big.check_payload(4000)
    with pytest.raises(ValueError, match="schedule 's': its arguments take 2,00[0-9] bytes encoded; the limit is 100"):
        big.check_payload(100)


def test_a_row_round_trips_to_the_schedule_it_defines() -> None:
    schedule = Schedule("s", "*/5 * * * *", "t", args=(1, "a"), kwargs={"k": [1, 2]}, queue="q",
                        timezone="Europe/Berlin", catch_up="all")
    stored = schedule.to_row("api", at(2026, 1, 1))
    assert msgpack.unpackb(stored.payload) == [[1, "a"], {"k": [1, 2]}]
    info = ScheduleInfo.from_row(stored)
    assert info.schedule == schedule and info.source == "api" and info.last_fired is None
    assert info.next_fire == at(2026, 1, 1, 0, 5)


# -- Cron through a real writer and journal, the clock injected ---------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'journal.db'}"


async def _writer(url: str, schema: str = "actorq") -> jw.JournalWriter:
    writer = jw.JournalWriter(lambda: open_journal(url, schema=schema) if not url.startswith("sqlite")
                              else SQLiteJournal(url[len("sqlite:///"):], synchronous="normal"),
                              asyncio.get_running_loop())
    await writer.start()
    return writer


def _cron(writer: jw.JournalWriter, clock: Clock, woken: list[set[str] | None] | None = None,
          policies: dict[str, TaskPolicy] | None = None) -> Cron:
    return Cron(writer, asyncio.get_running_loop(), declared=(policies or {}).get,
                wake=(woken if woken is not None else []).append, clock=clock)


def _fired(journal: Journal, name: str = "s") -> list[float]:
    """The fire times of the jobs schedule `name` made, read back from their unique keys."""
    prefix = f"cron:{name}:"
    return sorted(float(key[len(prefix):]) for key in _keys(journal) if key.startswith(prefix))


def _jobs(journal: Journal) -> list[tuple[str, str]]:
    if isinstance(journal, SQLiteJournal):
        return journal._conn.execute("SELECT id, state FROM actorq_jobs ORDER BY id").fetchall()
    return journal._execute(f'SELECT id, state FROM "{journal.schema}".actorq_jobs ORDER BY id', {}).fetchall()


def _keys(journal: Journal) -> list[str]:
    if isinstance(journal, SQLiteJournal):
        rows = journal._conn.execute("SELECT unique_key FROM actorq_jobs").fetchall()
    else:
        rows = journal._execute(f'SELECT unique_key FROM "{journal.schema}".actorq_jobs', {}).fetchall()
    return [key for (key,) in rows if key is not None]


async def _add(writer: jw.JournalWriter, clock: Callable[[], float], *schedules: Schedule) -> None:
    api = Schedules(lambda: writer, clock=clock)
    for schedule in schedules:
        await api.add(schedule)


async def test_a_due_schedule_fires_one_job_with_the_tasks_declared_policy(sqlite_url: str) -> None:
    writer = await _writer(sqlite_url)
    try:
        clock = Clock(at(2026, 1, 1, 9, 59, 30))
        await _add(writer, clock, Schedule("s", "0 * * * *", "tests.noop", args=(7,), kwargs={"k": "v"}))
        woken: list[set[str] | None] = []
        cron = _cron(writer, clock, woken, {"tests.noop": TaskPolicy(queue="reports", priority=3, max_attempts=2)})
        assert await cron.tick() == 0  # 10:00 is not there yet
        clock.now = at(2026, 1, 1, 10, 0, 0, 400_000)
        assert await cron.tick() == 1
        assert await cron.tick() == 0  # the same clock again: nothing more
        assert woken == [{"reports"}]
        journal = writer.journal
        assert journal is not None
        assert _fired(journal) == [at(2026, 1, 1, 10)]
        (job_id, state), = _jobs(journal)
        info = journal.get(job_id)
        assert info is not None and (info.queue, info.task, info.max_attempts, state) == ("reports", "tests.noop", 2,
                                                                                          "ready")
        assert journal.schedules()[0].last_fired == at(2026, 1, 1, 10)
        listed = await Schedules(lambda: writer).list()
        assert [(i.schedule.name, i.last_fired, i.next_fire) for i in listed] == [
            ("s", at(2026, 1, 1, 10), at(2026, 1, 1, 11))]
    finally:
        await writer.stop()


async def test_a_follower_fires_nothing(sqlite_url: str) -> None:
    writer = await _writer(sqlite_url)
    try:
        clock = Clock(at(2026, 1, 1, 9, 59))
        await _add(writer, clock, Schedule("s", "* * * * *", "tests.noop"))
        cron = Cron(writer, asyncio.get_running_loop(), declared={}.get, wake=lambda _: None,
                    is_leader=lambda: False, clock=clock)
        clock.now += 3600
        assert await cron.tick() == 0
        assert writer.journal is not None and _jobs(writer.journal) == []
    finally:
        await writer.stop()


async def test_f2_the_wall_clock_jumping_back_an_hour_fires_nothing_twice(sqlite_url: str) -> None:
    writer = await _writer(sqlite_url)
    try:
        start = at(2026, 1, 1, 12, 0, 0)
        clock = Clock(start - 1)
        await _add(writer, clock, Schedule("s", "*/5 * * * *", "tests.noop", catch_up="all"))
        cron = _cron(writer, clock)
        for minute in range(31):  # 12:00 ... 12:30, a tick a minute
            clock.now = start + minute * 60 + 0.5
            await cron.tick()
        clock.now -= 3600  # the clock jumps back an hour (11:30), then runs on
        for minute in range(75):  # 11:30 ... 12:44
            await cron.tick()
            clock.now += 60
        assert writer.journal is not None
        expected = [start + n * 300 for n in range(9)]  # 12:00 ... 12:40, once each
        assert _fired(writer.journal) == expected
        assert len(_jobs(writer.journal)) == len(expected)
    finally:
        await writer.stop()


@pytest.mark.parametrize("start, end", [
    ((2026, 3, 28, 12), (2026, 3, 30, 12)),   # spring forward: 02:00 -> 03:00 on March 29
    ((2026, 10, 24, 12), (2026, 10, 26, 12)),  # fall back: 03:00 -> 02:00 on October 25
], ids=["spring-forward", "fall-back"])
async def test_f4_dst_changes_in_berlin_fire_as_croniter_says_once_each(
        sqlite_url: str, start: tuple[int, ...], end: tuple[int, ...]) -> None:
    begin, finish = at(*start, tz=BERLIN), at(*end, tz=BERLIN)
    expected = []
    it = croniter("30 2 * * *", datetime.fromtimestamp(begin, BERLIN))
    while (t := it.get_next(float)) <= finish:
        expected.append(t)
    writer = await _writer(sqlite_url)
    try:
        clock = Clock(begin)
        await _add(writer, clock, Schedule("s", "30 2 * * *", "tests.noop", timezone="Europe/Berlin",
                                           catch_up="all"))
        cron = _cron(writer, clock)
        while clock.now <= finish:  # a tick every 10 minutes of real (UTC) time
            clock.now += 600
            await cron.tick()
        assert writer.journal is not None
        assert _fired(writer.journal) == expected
        local = [datetime.fromtimestamp(t, BERLIN).strftime("%m-%d %H:%M %Z") for t in expected]
        if start[1] == 3:
            assert local == ["03-29 03:00 CEST", "03-30 02:30 CEST"]  # the skipped 02:30 fires at 03:00
        else:
            assert local == ["10-25 02:30 CEST", "10-25 02:30 CET", "10-26 02:30 CET"]  # the repeated hour: twice
    finally:
        await writer.stop()


async def test_c5_two_schedulers_on_one_journal_fire_each_time_once(sqlite_url: str) -> None:
    # Two schedulers (a leader that lost its claim mid-tick and the new one; or a restart)
    # on one journal, each with its own connection, at the same clock.
    first, second = await _writer(sqlite_url), await _writer(sqlite_url)
    try:
        clock = Clock(at(2026, 1, 1, 9, 59))
        await _add(first, clock, Schedule("s", "* * * * *", "tests.noop", catch_up="all"))
        a, b = _cron(first, clock), _cron(second, clock)
        for _ in range(20):
            clock.now += 37
            counts = await asyncio.gather(a.tick(), b.tick())
            assert sum(counts) <= 1 or clock.now - at(2026, 1, 1, 9, 59) > 60
        assert first.journal is not None
        fired = _fired(first.journal)
        assert len(fired) == len(set(fired)) == len(_jobs(first.journal))
        assert fired == [at(2026, 1, 1, 10, m) for m in range(len(fired))]
        assert a.fired + b.fired == len(fired)
        print("firings lost to the other scheduler:", a.lost + b.lost)
    finally:
        await first.stop()
        await second.stop()


async def test_c5_two_schedulers_on_postgresql_fire_each_time_once(pg_schema: str) -> None:
    from journal_support import PG_URL

    first, second = await _writer(PG_URL, pg_schema), await _writer(PG_URL, pg_schema)
    try:
        clock = Clock(at(2026, 1, 1, 9, 59))
        await _add(first, clock, Schedule("s", "* * * * *", "tests.noop", catch_up="all"))
        a, b = _cron(first, clock), _cron(second, clock)
        for _ in range(12):
            clock.now += 29
            await asyncio.gather(a.tick(), b.tick())
        assert first.journal is not None
        fired = _fired(first.journal)
        assert len(fired) == len(set(fired)) == len(_jobs(first.journal)) == a.fired + b.fired
        assert fired == [at(2026, 1, 1, 10, m) for m in range(len(fired))] and len(fired) == 5
    finally:
        await first.stop()
        await second.stop()


async def test_a_finished_job_of_a_fire_time_does_not_fire_it_again_after_a_restart(sqlite_url: str) -> None:
    clock = Clock(at(2026, 1, 1, 9, 59))
    writer = await _writer(sqlite_url)
    try:
        await _add(writer, clock, Schedule("s", "0 * * * *", "tests.noop"))
        clock.now = at(2026, 1, 1, 10, 0, 5)
        assert await _cron(writer, clock).tick() == 1
        journal = writer.journal
        assert journal is not None
        for leased in journal.lease(["default"], "w", 10, 30.0):
            journal.complete([(leased.id, leased.lease_id)])
    finally:
        await writer.stop()
    writer = await _writer(sqlite_url)  # the node restarted; same clock
    try:
        assert await _cron(writer, clock).tick() == 0
        clock.now = at(2026, 1, 1, 11, 0, 5)
        assert await _cron(writer, clock).tick() == 1
        assert writer.journal is not None and _fired(writer.journal) == [at(2026, 1, 1, 10), at(2026, 1, 1, 11)]
    finally:
        await writer.stop()


async def test_schedules_api_adds_replaces_and_removes(sqlite_url: str) -> None:
    writer = await _writer(sqlite_url)
    try:
        clock = Clock(at(2026, 1, 1))
        api = Schedules(lambda: writer, clock=clock, max_payload=1000)
        await api.add(Schedule("a", "0 * * * *", "t"))
        await api.add(Schedule("a", "30 * * * *", "t", catch_up="none"))  # replaced
        await api.add(Schedule("b", "0 0 * * *", "t"))
        with pytest.raises(ValueError, match="schedule 'big': its arguments take"):
            await api.add(Schedule("big", "0 0 * * *", "t", args=("x" * 2000,)))
        listed = await api.list()
        assert [(i.schedule.name, i.schedule.cron, i.schedule.catch_up, i.source) for i in listed] == [
            ("a", "30 * * * *", "none", "api"), ("b", "0 0 * * *", "last", "api")]
        assert await api.remove("a") is True and await api.remove("a") is False
        assert [i.schedule.name for i in await api.list()] == ["b"]
        # a node's file: its names win, and file schedules an earlier file had are removed
        assert writer.journal is not None
        sync_file_schedules(writer.journal, [Schedule("b", "15 * * * *", "t"), Schedule("f", "0 1 * * *", "t")],
                            clock())
        assert [(i.schedule.name, i.schedule.cron, i.source) for i in await api.list()] == [
            ("b", "15 * * * *", "file"), ("f", "0 1 * * *", "file")]
        assert sync_file_schedules(writer.journal, [Schedule("f", "0 1 * * *", "t")], clock()) == ["b"]
        await api.add(Schedule("c", "0 0 * * *", "t"))
        assert sync_file_schedules(writer.journal, [], clock()) == ["f"]
        assert [i.schedule.name for i in await api.list()] == ["c"]  # API schedules stay
    finally:
        await writer.stop()
    with pytest.raises(JournalError, match="not running"):
        await Schedules(lambda: None).list()
