"""What the operator's commands and the dashboard show of a journal, as JSON-able maps.

``actorq queues list`` and ``actorq schedules list`` print these; the dashboard
(`actorq.node.dashboard`) serves the same maps, so both always agree.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

from actorq.jobs.schedule import Schedule, ScheduleInfo
from actorq.journal.protocol import Journal, ScheduleRow

if TYPE_CHECKING:
    from actorq.node.config import Config

logger = logging.getLogger(__name__)

__all__ = ["queue_entries", "schedule_entries"]


def queue_entries(journal: Journal, now: float) -> dict[str, dict[str, Any]]:
    """``{queue: {"paused", "ready", "states": {state: count}, "oldest_ready_age"}}`` for every queue
    with jobs or paused, sorted by name: three small reads (counts, paused queues, oldest ready)."""
    counts = journal.counts()
    paused = journal.paused_queues()
    oldest = journal.oldest_ready()
    return {name: {"paused": name in paused, "ready": counts.get(name, {}).get("ready", 0),
                   "states": counts.get(name, {}),
                   "oldest_ready_age": round(max(now - oldest[name], 0.0), 3) if name in oldest else None}
            for name in sorted(set(counts) | set(paused))}


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
