"""What the operator's commands and the dashboard show of a journal, as JSON-able maps.

``actorq queues list`` and ``actorq schedules list`` print these; the dashboard
(`actorq.node.dashboard`) serves the same maps, so both always agree.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

from actorq.jobs.schedule import Schedule, ScheduleInfo
from actorq.journal.protocol import Journal, QueueStats, ScheduleRow

if TYPE_CHECKING:
    from actorq.node.config import Config

logger = logging.getLogger(__name__)

__all__ = ["figures", "queue_entries", "schedule_entries"]


STATS_WINDOW = 60.0  # seconds of the rate and queue wait `queue_entries` shows


def queue_entries(journal: Journal, now: float) -> dict[str, dict[str, Any]]:
    """``{queue: {"paused", "ready", "states": {state: count}, "oldest_ready_age", "last_minute"}}``
    for every queue with jobs, paused, or active in the last minute, sorted by name: four small
    reads (the kept counts, paused queues, oldest ready, the queue slots), never the jobs table.

    ``last_minute`` (`figures`) holds what the queue did over the last minute or so."""
    counts = journal.counts()
    paused = journal.paused_queues()
    oldest = journal.oldest_ready()
    stats = journal.queue_stats(STATS_WINDOW)
    return {name: {"paused": name in paused, "ready": counts.get(name, {}).get("ready", 0),
                   "states": counts.get(name, {}),
                   "oldest_ready_age": round(max(now - oldest[name], 0.0), 3) if name in oldest else None,
                   "last_minute": figures(stats.get(name))}
            for name in sorted(set(counts) | set(paused) | set(stats))}


def figures(stats: QueueStats | None) -> dict[str, Any]:
    """One queue's `QueueStats` as JSON: ``{"seconds", "finished", "failed", "leased",
    "per_second", "wait_mean", "wait_max"}`` (the waits null without leases); all 0 for None."""
    if stats is None:
        return {"seconds": STATS_WINDOW, "finished": 0, "failed": 0, "leased": 0, "per_second": 0.0,
                "wait_mean": None, "wait_max": None}
    mean = stats.wait_mean
    return {"seconds": round(stats.seconds, 3), "finished": stats.finished, "failed": stats.failed,
            "leased": stats.leased, "per_second": round(stats.rate, 3),
            "wait_mean": None if mean is None else round(mean, 3),
            "wait_max": round(stats.wait_max, 3) if stats.leased else None}


def schedule_entries(config: "Config", rows: Sequence[ScheduleRow], now: float) -> list[dict[str, Any]]:
    """The schedules a node of `config` runs: the journal's `rows`, with the file's definitions for
    their names (the file wins at the next start), by name, each with its next fire time."""
    stored: dict[str, ScheduleInfo] = {}
    for row in rows:
        try:
            stored[row.name] = ScheduleInfo.from_row(row)
        except ValueError as exc:
            logger.warning("%s", exc)
    entries = []
    file = {s.name: s for s in config.schedules}
    for name in sorted(set(stored) | set(file)):
        info = stored.get(name)
        schedule: Schedule = file[name] if name in file else info.schedule  # type: ignore[union-attr]
        last = info.last_fired if info is not None else None
        source = "file" if name in file else info.source  # type: ignore[union-attr]
        entries.append({"name": name, "cron": schedule.cron, "timezone": schedule.timezone, "task": schedule.task,
                        "queue": schedule.queue, "catch_up": schedule.catch_up, "source": source,
                        "in_journal": info is not None, "last_fired": last,
                        "next_fire": schedule.next_after(max(now, last or now))})
    return entries
