"""What ``actorq status`` learns from a running node: the STATUS reply, built, checked and printed.

A node answers a STATUS request on its control socket (`actorq.node.control`)
from its `Progress` snapshot alone, without a journal read: a node whose
journal writer waits on a lock still answers at once, and says so::

    {"name": "prof", "pid": 4242,
     "activity": "journal_waiting",           what it is doing (one of `ACTIVITIES`)
     "idle": False,                           never True while a journal write is under way
     "jobs": {"succeeded": 4321, "failed": 2, "in_flight": 3, "reclaimed": 0, "stale_acks": 0,
              "per_second": 118.5},           None until the node has counted for a second
     "workers": {"connected": 2, "restarts": 0},
     "journal": {"wait": 3.2,                 seconds the write under way has waited (0: none)
                 "error": None},              why the latest write failed, while it is retried
     "producers": {"requests": 10, "jobs": 1200, "busy": 0,        other processes' enqueues
                   "dropped": {"bad_body": 1}}}                     their bad frames, by reason

Every value is a plain type (int, float, str, bool, None, maps of them) and
every text is cut (`MAX_TEXT` characters, `MAX_REASONS` drop reasons): a few
hundred bytes as a rule, 13 KiB at most.
``actorq status`` checks a reply against this shape (`check_status`) before it
prints a value of it, and keeps only the keys it knows.
"""

from __future__ import annotations

import math
from typing import Any

from actorq.jobs.node_file import NodeNotRunning
from actorq.jobs.runtime import JOURNAL_WAIT_REPORTED, Progress
from actorq.jobs.wire import clean_text
from actorq.node.control import STATUS, query
from actorq.transports.codec import describe

__all__ = ["ACTIVITIES", "ask_status", "build_status", "check_status", "render_status"]

# What the node is doing, first match wins (stable: scripts may compare them).
STOPPING = "stopping"  # it takes no new leases; the jobs in flight finish
JOURNAL_UNAVAILABLE = "journal_unavailable"  # the latest journal write failed; the writer tries again
JOURNAL_WAITING = "journal_waiting"  # a write has waited JOURNAL_WAIT_REPORTED s or more: a lock or the disk
RUNNING = "running"  # jobs in flight
IDLE = "idle"  # every worker's queues were found with no ready job; nothing in flight, no write under way
NO_WORKERS = "no_workers"  # no worker connected: starting, or every one restarting
BUSY = "busy"  # workers connected, and a lease or another journal write under way
ACTIVITIES = (STOPPING, JOURNAL_UNAVAILABLE, JOURNAL_WAITING, RUNNING, IDLE, NO_WORKERS, BUSY)

MAX_TEXT = 500  # the node's name and the journal's error, cut
MAX_REASONS = 32  # drop reasons are short tags from a fixed set (the codec's and the endpoint's)

# Shapes beside plain types (str, int: >= 0, bool).
_NUMBER = "number"  # an int or float, finite and >= 0
_OPTIONAL_NUMBER = "number or None"
_OPTIONAL_TEXT = "text or None"
_COUNTS = "counts"  # at most MAX_REASONS short texts, each with an int >= 0
# The reply's keys and what each holds; a nested dict is a map with at least those keys (others are dropped).
SHAPE: dict[str, Any] = {
    "name": str, "pid": int, "activity": str, "idle": bool,
    "jobs": {"succeeded": int, "failed": int, "in_flight": int, "reclaimed": int, "stale_acks": int,
             "per_second": _OPTIONAL_NUMBER},
    "workers": {"connected": int, "restarts": int},
    "journal": {"wait": _NUMBER, "error": _OPTIONAL_TEXT},
    "producers": {"requests": int, "jobs": int, "busy": int, "dropped": _COUNTS},
}


def activity(progress: Progress, stopping: bool) -> str:
    """What a node with `progress` is doing: the first of `ACTIVITIES` that applies."""
    if stopping:
        return STOPPING
    if progress.journal_error:
        return JOURNAL_UNAVAILABLE
    if progress.journal_wait >= JOURNAL_WAIT_REPORTED:
        return JOURNAL_WAITING
    if progress.in_flight:
        return RUNNING
    if progress.idle and not progress.journal_wait:  # stricter than the progress line: no write at all
        return IDLE
    if not progress.workers:
        return NO_WORKERS
    return BUSY


def build_status(progress: Progress, *, name: str, pid: int, per_second: float | None,
                 stopping: bool) -> dict[str, Any]:
    """The STATUS reply of a node (see the module docstring).

    Args:
        progress: the node's counters now (`Node.progress`).
        name: the node's name.
        pid: the node's process id.
        per_second: attempts ended per second lately, or None if not yet known.
        stopping: whether the node is stopping.
    """
    what = activity(progress, stopping)
    rate = per_second if per_second is not None and math.isfinite(per_second) and per_second >= 0 else None
    dropped = sorted(progress.producer_dropped.items())[:MAX_REASONS]
    return {
        "name": clean_text(name)[:MAX_TEXT],
        "pid": pid,
        "activity": what,
        "idle": what == IDLE,
        "jobs": {"succeeded": progress.succeeded, "failed": progress.failed, "in_flight": progress.in_flight,
                 "reclaimed": progress.reclaimed, "stale_acks": progress.stale_acks, "per_second": rate},
        "workers": {"connected": progress.workers, "restarts": progress.worker_restarts},
        # to the millisecond below, never above: a wait shown as 1.0 s has passed the threshold
        # the activity was judged by (0.9996 rounded would read as waiting, judged as busy)
        "journal": {"wait": math.floor(max(progress.journal_wait, 0.0) * 1000) / 1000,
                    "error": clean_text(progress.journal_error)[:MAX_TEXT] if progress.journal_error else None},
        "producers": {"requests": progress.producer_requests, "jobs": progress.producer_jobs,
                      "busy": progress.producer_busy,
                      "dropped": {clean_text(reason)[:64]: n for reason, n in dropped}},
    }


def _check(value: Any, shape: Any, path: str) -> Any:
    """`value` if it has `shape` (only the keys of a map's shape are kept), else ValueError naming `path`."""
    if isinstance(shape, dict):
        if type(value) is not dict:
            raise ValueError(f"{path}: expected a map, got {describe(value)}")
        missing = [key for key in shape if key not in value]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)}")
        return {key: _check(value[key], sub, f"{path}.{key}") for key, sub in shape.items()}
    if shape == _COUNTS:
        if type(value) is not dict or len(value) > MAX_REASONS or not all(
                type(k) is str and len(k) <= 64 and type(n) is int and n >= 0 for k, n in value.items()):
            raise ValueError(f"{path}: expected at most {MAX_REASONS} counts by reason, got {describe(value)}")
        return dict(value)
    if shape in (_NUMBER, _OPTIONAL_NUMBER):
        if value is None and shape == _OPTIONAL_NUMBER:
            return None
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{path}: expected a finite number >= 0, got {describe(value)}")
        return value
    if shape is int:
        if type(value) is not int or value < 0:
            raise ValueError(f"{path}: expected an integer >= 0, got {describe(value)}")
        return value
    if shape is bool:
        if type(value) is not bool:
            raise ValueError(f"{path}: expected true or false, got {describe(value)}")
        return value
    if value is None and shape == _OPTIONAL_TEXT:
        return None
    if type(value) is not str or len(value) > MAX_TEXT:
        raise ValueError(f"{path}: expected a text of at most {MAX_TEXT} characters, got {describe(value)}")
    return value


def check_status(body: Any) -> dict[str, Any]:
    """Check a STATUS reply's body against `SHAPE`; return it with only the keys it names.

    Raises:
        ValueError: a key is missing, or a value is of the wrong type or out of range;
            the message names the key (``status.jobs.in_flight: ...``).
    """
    status: dict[str, Any] = _check(body, SHAPE, "status")
    if status["activity"] not in ACTIVITIES:
        raise ValueError(f"status.activity: expected one of {', '.join(ACTIVITIES)}, got {describe(status['activity'])}")
    return status


def ask_status(endpoint: str, timeout: float) -> dict[str, Any]:
    """Ask the node at control `endpoint` for its status (blocking); return the checked reply.

    Raises:
        NodeNotRunning: no reply within `timeout` seconds, an ``ERROR`` reply, or a
            malformed one (see `actorq.node.control.query`); the message names `endpoint`.
    """
    reply = query(endpoint, STATUS, None, timeout=timeout)
    try:
        return check_status(reply)
    except ValueError as exc:
        raise NodeNotRunning(f"the node's control endpoint {endpoint} sent a malformed status ({exc})") from None


def render_status(status: dict[str, Any]) -> list[str]:
    """The lines ``actorq status`` prints for a checked STATUS reply.

    The first says who the node is and what it has done; the next say what holds it
    up, if anything. It is never called idle while a journal write is under way.
    """
    jobs, workers, journal, producers = status["jobs"], status["workers"], status["journal"], status["producers"]
    name = " ".join(status["name"].split())
    first = (f"node {name} (pid {status['pid']}): {jobs['succeeded']:,} succeeded, {jobs['failed']:,} failed, "
             f"in flight {jobs['in_flight']:,}, workers {workers['connected']:,}")
    if workers["restarts"]:
        first += f", restarts {workers['restarts']:,}"
    if jobs["per_second"] is not None:
        first += f", {jobs['per_second']:,.0f} jobs/s"
    lines = [first]
    waiting = journal["wait"] >= JOURNAL_WAIT_REPORTED
    if status["activity"] == STOPPING:
        lines.append("  stopping: no new leases; the jobs in flight finish")
    if journal["error"]:
        lines.append(f"  journal unavailable, retrying: {' '.join(journal['error'].split())}")
    if waiting:
        lines.append(f"  journal write waiting {journal['wait']:.1f} s (a lock or the disk): jobs are not idle")
    elif status["activity"] == IDLE and not journal["wait"]:
        lines.append("  idle: no ready job in its workers' queues")
    elif status["activity"] == NO_WORKERS:
        lines.append("  no worker connected (starting, or restarting)")
    if producers["requests"] or producers["busy"] or producers["dropped"]:
        line = f"  producers: {_count(producers['requests'], 'request')} ({_count(producers['jobs'], 'job')})"
        if producers["busy"]:
            line += f", {producers['busy']:,} answered busy"
        if producers["dropped"]:
            reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(producers["dropped"].items()))
            line += f", {_count(sum(producers['dropped'].values()), 'frame')} dropped ({reasons})"
        lines.append(line)
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
