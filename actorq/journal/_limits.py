"""Queue limits shared by both journals: the cached stored limits and the room arithmetic.

Queues without limits take none of these paths: a journal looks its batch's queues up in
a dict it refreshes every `QUEUE_LIMITS_TTL` seconds, and only a listed queue pays the
counting statements (docs/flow-control.md).
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any, Callable, Collection, Iterable, Mapping, NamedTuple, Sequence

from actorq.errors import QueueFull
from actorq.journal.protocol import (
    MAX_QUEUE_LIMIT, QUEUE_LIMITS_TTL, RATE_UNITS, BreakerState, CircuitBreaker, NewJob, QueueLimits, TaskDefaults,
)

_RATE = re.compile(r"([0-9]{1,10})/([smh])")
TOKEN_EPSILON = 1e-9  # a refill of 0.9999999999 tokens (float steps of elapsed * rate) counts as 1


class Rate(NamedTuple):
    """A parsed rate: `count` tokens every `per` seconds, at most `burst` held."""

    count: int
    per: float
    burst: int

    @property
    def per_second(self) -> float:
        """Tokens added per second."""
        return self.count / self.per


def parse_rate(text: object, burst: object = None) -> Rate:
    """``"100/m"`` (and an optional burst) as a `Rate`; the burst defaults to the count.

    Raises:
        ValueError: not ``COUNT/UNIT`` with a count from 1 to `MAX_QUEUE_LIMIT` and a unit
            ``s``, ``m`` or ``h``; or a burst that is not an integer in that range.
    """
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None or not 1 <= int(match[1]) <= MAX_QUEUE_LIMIT:
        shown = repr(text) if not isinstance(text, str) or len(text) <= 40 else repr(text[:40] + "...")
        raise ValueError(f"expected a rate 'COUNT/UNIT' (COUNT from 1 to {MAX_QUEUE_LIMIT}, UNIT s, m or h, "
                         f"e.g. '100/m'), got {shown}")
    count = int(match[1])
    if burst is None:
        burst = count
    elif not (isinstance(burst, int) and not isinstance(burst, bool) and 1 <= burst <= MAX_QUEUE_LIMIT):
        raise ValueError(f"expected a burst: an integer from 1 to {MAX_QUEUE_LIMIT}, got {burst!r}")
    return Rate(count, RATE_UNITS[match[2]], burst)


def refill(tokens: float, since: float, now: float, rate: float, burst: int) -> float:
    """The tokens a bucket holds at `now`: `tokens` at `since`, plus `rate` a second, at most `burst`.

    A clock that went back (another node's transaction began earlier) adds nothing.
    """
    return min(float(burst), tokens + max(0.0, now - since) * rate)


def whole(tokens: float) -> int:
    """The jobs `tokens` let a lease take."""
    return max(0, math.floor(tokens + TOKEN_EPSILON))


def sooner(current: float | None, wait: float | None) -> float | None:
    """The earlier of two waits in seconds (None: none): a journal's `rate_wait` after one more."""
    if wait is None:
        return current
    return wait if current is None else min(current, wait)


def bucket_wait(left: float, rate: float) -> float | None:
    """Seconds until a bucket left with `left` tokens holds a whole one (None: it holds one)."""
    return next_token(left, rate) if whole(left) == 0 else None


def next_token(tokens: float, rate: float) -> float:
    """Seconds until a bucket holding `tokens` (fewer than the next whole one) holds one more."""
    return max(0.0, (whole(tokens) + 1 - tokens) / rate)


def check_limits(limits: Sequence[QueueLimits]) -> None:
    """Raise ValueError for a limit that is not an integer from 1 to `MAX_QUEUE_LIMIT` (or None),
    a rate that `parse_rate` refuses, or a burst without a rate."""
    for item in limits:
        _check_rules(f"queue {item.queue!r}", {name: getattr(item, name) for name in
                                              ("concurrency", "node_concurrency", "max_depth")},
                     item.rate, item.burst)


def _check_rules(owner: str, limits: Mapping[str, object], rate: str | None, burst: int | None) -> None:
    """Raise ValueError naming `owner` for a limit not an integer from 1 to `MAX_QUEUE_LIMIT`
    (or None), a rate `parse_rate` refuses, or a burst without a rate."""
    for name, value in limits.items():
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and 1 <= value <= MAX_QUEUE_LIMIT):
            raise ValueError(f"{owner}: {name} must be an integer from 1 to {MAX_QUEUE_LIMIT:,} or None, "
                             f"got {value!r}")
    if rate is not None:
        try:
            parse_rate(rate, burst)
        except ValueError as exc:
            raise ValueError(f"{owner}: {exc}") from None
    elif burst is not None:
        raise ValueError(f"{owner}: a burst needs a rate")


class LimitsCache:
    """The stored queue limits, read again once `ttl` seconds old; plus this node's own
    ``node_concurrency`` values (never stored)."""

    def __init__(self, ttl: float = QUEUE_LIMITS_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._stored: dict[str, QueueLimits] = {}
        self._read_at: float | None = None
        self.node: dict[str, int] = {}
        self.node_prefix = ""

    def get(self, read: Callable[[], dict[str, QueueLimits]]) -> dict[str, QueueLimits]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self.ttl:
            self._stored = read()
            self._read_at = now
        return self._stored

    def forget(self) -> None:
        """Read the stored limits again on next use (after `declare_queues`)."""
        self._read_at = None

    def lease_limited(self, stored: Mapping[str, QueueLimits], queues: Sequence[str]) -> list[str]:
        """Those of `queues` with a stored concurrency or rate, or this node's node_concurrency, in one order."""
        node = self.node
        return sorted(q for q in queues if (q in stored and (stored[q].concurrency is not None
                                                              or stored[q].rate is not None)) or q in node)


def check_task_rules(tasks: Sequence[TaskDefaults]) -> None:
    """Raise ValueError for a task whose concurrency is not an integer from 1 to
    `MAX_QUEUE_LIMIT` (or None), whose rate `parse_rate` refuses, or with a burst and no rate."""
    for task in tasks:
        _check_rules(f"task {task.name!r}", {"concurrency": task.concurrency}, task.rate, task.burst)
        if task.circuit_breaker is not None and not isinstance(task.circuit_breaker, CircuitBreaker):
            raise ValueError(f"task {task.name!r}: circuit_breaker must be a CircuitBreaker or None, "
                             f"got {type(task.circuit_breaker).__name__}")
        check_key_rules(task)


def task_bucket(task: TaskDefaults) -> tuple[str | None, float | None, int | None]:
    """The stored rate columns of `task`: (rate, tokens per second, burst), or Nones."""
    if task.rate is None:
        return None, None, None
    rate = parse_rate(task.rate, task.burst)
    return task.rate, rate.per_second, rate.burst


def lease_ruled(rules: Mapping[str, TaskDefaults], queues: Sequence[str]) -> list[str]:
    """The tasks with rules whose declared queue is one of `queues`, sorted (the lock order).

    A journal without task rules returns at once: its leases stay one statement.
    """
    if not rules:
        return []
    wanted = set(queues)
    return sorted(name for name, task in rules.items() if task.queue in wanted)


# -- circuit breakers: the state machine, the same on both journals ------------------------------
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def breaker_of(failures: int | None, window: float | None, cool_down: float | None,
               probes: int | None) -> CircuitBreaker | None:
    """The stored breaker columns of a task as a `CircuitBreaker` (None: none declared)."""
    if failures is None:
        return None
    assert window is not None and cool_down is not None and probes is not None
    return CircuitBreaker(failures, window, cool_down, probes)


def rules_of(row: Sequence[Any]) -> TaskDefaults:
    """A task's rules as the journals' ``read`` of them returns them: name, queue, priority,
    max_attempts, unique_for, concurrency, rate, burst, then the breaker's four columns."""
    return TaskDefaults(row[0], row[1], row[2], row[3], row[4], concurrency=row[5], rate=row[6], burst=row[7],
                        circuit_breaker=breaker_of(*row[8:12]))


def breaker_columns(task: TaskDefaults) -> tuple[int | None, float | None, float | None, int | None]:
    """A task's breaker as its stored columns (failures, window, cool_down, probes), or Nones."""
    breaker = task.circuit_breaker
    if breaker is None:
        return None, None, None, None
    return breaker.failures, breaker.window, breaker.cool_down, breaker.probes


def breaker_failed(breaker: CircuitBreaker, state: str, failed_at: str, opened_at: float | None,
                   now: float) -> tuple[str, str, float | None]:
    """A failed attempt of the task: its breaker's next (state, failed_at, opened_at).

    Closed: the failure joins those within the window; the `failures`-th opens it. Half-open:
    a probe failed, open again. Open: a job leased before it opened failed; it stays open.
    """
    if state == HALF_OPEN:
        return OPEN, "[]", now
    if state == OPEN:
        return state, failed_at, opened_at
    recent = [at for at in _times(failed_at) if at > now - breaker.window] + [now]
    if len(recent) >= breaker.failures:
        return OPEN, "[]", now
    return CLOSED, json.dumps(recent), opened_at


def _times(text: str) -> list[float]:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [float(at) for at in value if isinstance(at, (int, float))] if isinstance(value, list) else []


def breaker_room(breaker: CircuitBreaker, state: str, opened_at: float | None, now: float,
                 leased: int) -> tuple[int | None, str, float | None]:
    """How many of the task's jobs a lease may take by its breaker: (room, state, wait).

    room None: no bound (closed). An open breaker past its cool-down turns half-open (the
    caller writes the new state). wait: seconds until an open breaker lets probes through.
    """
    if state == OPEN:
        reopens = (opened_at or now) + breaker.cool_down
        if now < reopens:
            return 0, OPEN, reopens - now
        state = HALF_OPEN
    if state == HALF_OPEN:
        return max(0, breaker.probes - leased), HALF_OPEN, None
    return None, CLOSED, None


def breaker_state(task: str, state: str, failed_at: str, opened_at: float | None,
                  cool_down: float | None) -> BreakerState:
    """A stored breaker row as a `BreakerState`."""
    reopens = opened_at + cool_down if state == OPEN and opened_at is not None and cool_down is not None else None
    return BreakerState(task, state, len(_times(failed_at)), opened_at, reopens)


def depth_limited(stored: Mapping[str, QueueLimits], jobs: Sequence[NewJob]) -> list[str]:
    """The queues of `jobs` with a stored max_depth, sorted (the lock order)."""
    if not stored:
        return []
    return sorted({j.queue for j in jobs if j.queue in stored and stored[j.queue].max_depth is not None})


def admit(jobs: Sequence[NewJob], rooms: Mapping[str, tuple[int, int]],
          refused: list[tuple[NewJob, QueueFull]] | None, present: Collection[str] = ()) -> list[NewJob]:
    """The jobs that fit, in batch order; `rooms` is ``{queue: (depth, max_depth)}``.

    The jobs past a queue's room are appended to `refused` with their error; without
    `refused`, the first one raises `QueueFull` (nothing of the batch is inserted). A job
    whose id is `present` (a re-send: the insert skips it) takes no room, so a producer
    may send a partly refused batch again whole.
    """
    taken = {queue: 0 for queue in rooms}
    kept: list[NewJob] = []
    for job in jobs:
        if job.queue in rooms and job.id not in present:
            depth, most = rooms[job.queue]
            if depth + taken[job.queue] >= most:
                error = QueueFull(job.queue, depth + taken[job.queue], most)
                if refused is None:
                    raise error
                refused.append((job, error))
                continue
            taken[job.queue] += 1
        kept.append(job)
    return kept


def room(limit: int, concurrency: int | None, node_limit: int | None, leased: int, node_leased: int) -> int:
    """How many a lease may take of one queue: `limit`, at most what each bound leaves."""
    if concurrency is not None:
        limit = min(limit, concurrency - leased)
    if node_limit is not None:
        limit = min(limit, node_limit - node_leased)
    return max(0, limit)


def enqueue_firing(enqueue: Callable[..., int], schedule: str, jobs: Sequence[NewJob], log: Any) -> None:
    """Enqueue the jobs of a schedule's firing with the journal's `enqueue`, inside its
    transaction: a queue at its ``max_depth`` skips its jobs at this firing, said on `log` (the
    journal's logger), never raised, so the firing itself is still recorded."""
    if not jobs:
        return
    refused: list[tuple[NewJob, QueueFull]] = []
    enqueue(jobs, refused=refused)
    if refused:
        log.warning("schedule %r: %d of its jobs not added at this firing: %s", schedule, len(refused),
                    refused[-1][1])


def key_ordinals(jobs: Sequence[NewJob]) -> tuple[list[int], list[str]]:
    """For each of `jobs` (a batch in id order), how many jobs of its flow key come before it
    in the batch (0 without a key); then the keys with more than one job in the batch, sorted.

    The enqueue statement admits a keyed job itself when no job of its key waits blocked and
    the key's admitted jobs before the statement plus its ordinal are under the limit: its
    subqueries see the table as it was before the statement, so the batch's first jobs fill
    the free slots, in id order, and the rest wait. When the statement skipped a row (a
    re-sent id, a held unique key), an ordinal may count a job that was not added: the journal
    then admits the keys with more than one job again, after the insert.
    """
    seen: dict[str, int] = {}
    ordinals = []
    for job in jobs:
        key = job.flow_key
        if key is None:
            ordinals.append(0)
        else:
            ordinals.append(seen.get(key, 0))
            seen[key] = ordinals[-1] + 1
    return ordinals, sorted(key for key, count in seen.items() if count > 1)


# -- rules per flow key (key_rate, key_circuit_breaker): checked where a key's jobs are admitted --
class KeyRow(NamedTuple):
    """A (task, flow key)'s stored rule state: its bucket and its breaker."""

    tokens: float | None
    tokens_at: float | None
    state: str
    failed_at: str
    opened_at: float | None


NEW_KEY = KeyRow(None, None, CLOSED, "[]", None)  # a key with no row: a full bucket, a closed breaker


def has_key_rules(task: TaskDefaults) -> bool:
    """Whether `task` declares a rule per flow key (a key rate or a key breaker)."""
    return task.key_rate is not None or task.key_circuit_breaker is not None


def check_key_rules(task: TaskDefaults) -> None:
    """Raise ValueError naming `task` for a key rate `parse_rate` refuses, a key burst without a
    key rate, or a key breaker that is not a `CircuitBreaker`."""
    if task.key_rate is not None:
        try:
            parse_rate(task.key_rate, task.key_burst)
        except ValueError as exc:
            raise ValueError(f"task {task.name!r}: key_rate: {exc}") from None
    elif task.key_burst is not None:
        raise ValueError(f"task {task.name!r}: a key_burst needs a key_rate")
    if task.key_circuit_breaker is not None and not isinstance(task.key_circuit_breaker, CircuitBreaker):
        raise ValueError(f"task {task.name!r}: key_circuit_breaker must be a CircuitBreaker or None, "
                         f"got {type(task.key_circuit_breaker).__name__}")


def key_room(task: TaskDefaults, row: KeyRow | None, now: float, slots: int,
             admitted: int) -> tuple[int, KeyRow, float | None]:
    """How many of a key's blocked jobs its rules let in now, at most its free `slots`:
    (room, its row moved to `now`, wait).

    The row's bucket is refilled to `now` and an open breaker past its cool-down turns
    half-open (at most `probes` admitted at once: `admitted` are the key's jobs admitted now).
    wait: seconds until an open breaker lets probes through (None: not open).
    """
    row = row or NEW_KEY
    room = max(0, slots)
    wait = None
    state = row.state
    breaker = task.key_circuit_breaker
    if breaker is not None:
        bound, state, wait = breaker_room(breaker, row.state, row.opened_at, now, admitted)
        if bound is not None:
            room = min(room, bound)
    tokens, tokens_at = row.tokens, row.tokens_at
    if task.key_rate is not None:
        rate = parse_rate(task.key_rate, task.key_burst)
        tokens = refill(float(rate.burst) if tokens is None else tokens, now if tokens_at is None else tokens_at,
                        now, rate.per_second, rate.burst)
        tokens_at = now
        room = min(room, whole(tokens))
    return room, row._replace(tokens=tokens, tokens_at=tokens_at, state=state), wait


def key_spent(task: TaskDefaults, row: KeyRow, taken: int, now: float,
              wait: float | None) -> tuple[KeyRow, float | None, float | None]:
    """The key's row after `taken` of its jobs were admitted: (row, due_at, idle_at).

    due_at: when its rules let more of its jobs in (the next token of a bucket left empty, the
    end of a breaker's cool-down); None: only a job of the key finishing does. idle_at: see `key_idle_at`.
    """
    if task.key_rate is not None and row.tokens is not None:
        rate = parse_rate(task.key_rate, task.key_burst)
        row = row._replace(tokens=row.tokens - taken)
        wait = sooner(wait, bucket_wait(row.tokens, rate.per_second))  # type: ignore[arg-type]
    return row, None if wait is None else now + wait, key_idle_at(task, row, now)


def key_failed(task: TaskDefaults, row: KeyRow | None, now: float) -> tuple[KeyRow, float | None, float | None]:
    """A failed attempt of a job of the key, counted in its breaker: (row, due_at, idle_at);
    due_at is the end of the cool-down when the breaker opens (its jobs wait blocked till then)."""
    row = row or NEW_KEY
    breaker = task.key_circuit_breaker
    if breaker is None:
        return row, None, key_idle_at(task, row, now)
    state, failed_at, opened_at = breaker_failed(breaker, row.state, row.failed_at, row.opened_at, now)
    row = row._replace(state=state, failed_at=failed_at, opened_at=opened_at)
    due = opened_at + breaker.cool_down if state == OPEN and opened_at is not None else None
    return row, due, key_idle_at(task, row, now)


def key_idle_at(task: TaskDefaults, row: KeyRow, now: float) -> float | None:
    """When the key's row holds nothing a new row would not (its bucket full again, its
    breaker closed with no failure left in its window), if nothing touches it before. A
    journal deletes such rows a batch at a time (`promote`), so the keys of a task are not
    kept forever. A breaker that is not closed is forgotten too, a cool-down and a window
    after it opened (open) or let its probes in (half-open, `now`), if nothing touched it
    since: a key whose jobs stopped coming does not stay open (and listed) for ever."""
    breaker = task.key_circuit_breaker
    if row.state != CLOSED:
        if breaker is None:
            return None
        since = (row.opened_at if row.opened_at is not None else now) if row.state == OPEN else now
        return since + breaker.cool_down + breaker.window
    at = now
    if task.key_rate is not None and row.tokens is not None and row.tokens_at is not None:
        rate = parse_rate(task.key_rate, task.key_burst)
        at = max(at, row.tokens_at + max(0.0, rate.burst - row.tokens) / rate.per_second)
    times = _times(row.failed_at)
    if breaker is not None and times:
        at = max(at, max(times) + breaker.window)
    return at


def key_breaker_state(task: str, key: str, row: KeyRow, cool_down: float | None) -> BreakerState:
    """A stored key row's breaker as a `BreakerState` (its key as the jobs carry it)."""
    shown = breaker_state(task, row.state, row.failed_at, row.opened_at, cool_down)
    return shown._replace(key=shown_key(key))


def key_breaker_listing(rows: Iterable[Sequence[Any]], counts: Mapping[str, int],
                        ruled: Mapping[str, TaskDefaults]) -> tuple[list[BreakerState], dict[str, int]]:
    """`Journal.key_breakers` from the stored rows the SQL journals read (task, key, then a
    `KeyRow`'s columns) and their counts by state."""
    shown = []
    for task, key, *row in rows:
        breaker = ruled[task].key_circuit_breaker if task in ruled else None
        shown.append(key_breaker_state(task, key, KeyRow(*row), None if breaker is None else breaker.cool_down))
    return shown, {state: int(counts[state]) for state in (OPEN, HALF_OPEN) if counts.get(state)}


def log_key_opened(log: Any, task: str, key: str, before: KeyRow | None, after: KeyRow) -> None:
    """Say on `log` (the journal's logger) that a failure opened the key's breaker, if it did."""
    if after.state == OPEN and (before is None or before.state != OPEN):
        log.warning("task %s key %s: circuit breaker open (%s)", task, shown_key(key),
                    "a probe failed" if before is not None and before.state == HALF_OPEN
                    else "too many failed attempts")


def shown_key(flow_key: str) -> str:
    """A stored flow key (``o:`` or ``c:`` and the key) as the jobs carry it."""
    return flow_key[2:] if flow_key[:2] in ("o:", "c:") else flow_key


def key_rules_of(row: Sequence[Any]) -> TaskDefaults:
    """A task's per-key rules as the journals read them: name, queue, priority, max_attempts,
    key_rate, key_burst, then the key breaker's four columns."""
    return TaskDefaults(row[0], row[1], row[2], row[3], key_rate=row[4], key_burst=row[5],
                        key_circuit_breaker=breaker_of(*row[6:10]))


def key_columns(task: TaskDefaults) -> tuple[object, ...]:
    """A task's per-key rules as their stored columns: key_rate, key_burst (the default filled
    in), the key breaker's failures, window, cool_down, probes (Nones where not declared)."""
    burst = parse_rate(task.key_rate, task.key_burst).burst if task.key_rate is not None else None
    breaker = task.key_circuit_breaker
    if breaker is None:
        return task.key_rate, burst, None, None, None, None
    return task.key_rate, burst, breaker.failures, breaker.window, breaker.cool_down, breaker.probes


def key_breaker_counts(states: Sequence[str]) -> dict[str, int]:
    """``{"open": n, "half_open": m}`` of `states`, the states with none left out."""
    counts = {OPEN: 0, HALF_OPEN: 0}
    for state in states:
        if state in counts:
            counts[state] += 1
    return {state: n for state, n in counts.items() if n}


def lease_waits(rows: Iterable[Sequence[Any]], now: float) -> dict[str, tuple[int, float, float]]:
    """``{queue: (leases, waits summed, longest wait)}`` of leased rows, each ``(id, queue, ...,
    run_at)`` (run_at last): a job's wait is `now` less its run_at, never below 0."""
    found: dict[str, tuple[int, float, float]] = {}
    for row in rows:
        wait = max(0.0, now - float(row[-1]))
        taken, total, longest = found.get(row[1], (0, 0.0, 0.0))
        found[row[1]] = (taken + 1, total + wait, max(longest, wait))
    return found
