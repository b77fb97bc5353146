"""Node configuration: reading and validating ``topology.toml``.

The file is read once with :mod:`tomllib` into frozen dataclasses.  Every key
is optional (defaults live in the dataclasses).  Unknown sections and keys are
rejected with a "did you mean" hint; every problem is a :class:`ConfigError`
naming the file, the key path and what was expected, e.g.
``topology.toml: workers.processes: expected an integer from 1 to 1024, got 'two' (str)``.
Every number has a range (field metadata ``min`` or ``gt``, and ``max``): zero,
negative, huge, ``inf`` and ``nan`` values are refused here, never passed on.

A complete ``topology.toml``; every value shown is the default except ``tasks``::

    [node]
    name = ""                      # "" -> the host name
    tasks = ["myapp.tasks", "otherapp.jobs:registry"]
    endpoint = ""                  # "" -> automatic ipc:// socket in a private 0700 dir
    log_level = "info"             # debug | info | warning | error

    [journal]
    url = "sqlite:///actorq.db"    # relative paths resolve against the CWD
    synchronous = "full"           # full | normal | extra
    busy_timeout = 5.0             # seconds
    batch_max = 4096
    wal_limit_mb = 64.0            # SQLite: checkpoint (TRUNCATE) past this WAL size
    retain_succeeded = "1d"        # finished jobs kept, by state, then pruned: "30s", "10m",
    retain_cancelled = "1d"        # "12h", "7d", seconds, or "forever" (docs/retention.md)
    retain_failed = "7d"
    retain_dead = "30d"
    # url = "postgresql://app@db:5432/jobs"; schema = "actorq"; connect_retry_for = 30.0
    # lock_timeout = 0.5; idle_in_transaction_timeout = 2.0   (PostgreSQL; below lease_timeout)

    [dispatcher]
    poll_interval = 0.2            # seconds
    lease_timeout = 300.0          # seconds
    max_frame_bytes = 16777216

    [workers]
    processes = 2
    concurrency = 16
    prefetch = 16
    queues = ["default"]
    shutdown_timeout = 30.0        # seconds
    intensity = 10                 # restarts allowed within `period`
    period = 60.0                  # seconds
    heartbeat_interval = 1.0       # seconds
    heartbeat_timeout = 20.0       # a silent worker loses its jobs
    restart_backoff = 0.0          # seconds; 0: restart a crashed worker at once
    cancel_grace = 10.0            # seconds a cancelled sync task may run on

    [producers]
    endpoint = ""                  # "" -> ipc:// socket in the private 0700 dir; or a fixed
                                   # ipc:///abs/path (made 0600) or tcp://127.0.0.1:PORT

    [results]
    ttl = 86400.0                  # seconds a task's return value is kept (0: none)

    [metrics]                      # docs/metrics.md
    bind = ""                      # "127.0.0.1:9108" serves /metrics (needs actorq[metrics])
    allow_remote = false           # a bind beyond loopback is refused without it
    counts_every = 5.0             # seconds between reads of the journal's counts

    [dashboard]                    # docs/dashboard.md
    bind = ""                      # "127.0.0.1:8642" serves the web dashboard (needs actorq[dashboard])
    token = ""                     # a bind beyond loopback is refused without a token (16+ characters)
    token_env = ""                 # or the name of an environment variable holding it

    [hooks]                        # docs/hooks.md
    node = []                      # "module:function" called with each node event
    buffer = 10000                 # events waiting for the hooks; more are dropped and counted

    [supervision]
    strategy = "one_for_one"       # root: core and the worker pool
    intensity = 2
    period = 60.0
    core_strategy = "rest_for_one" # journal writer, dispatcher, scheduler
    core_intensity = 5
    core_period = 60.0

    [queues.reports]               # none by default; one table per limited queue (docs/flow-control.md)
    concurrency = 3                # jobs of the queue leased at once, every node together
    node_concurrency = 2           # jobs of it leased at once by this node's workers
    max_depth = 10000              # waiting jobs (ready, scheduled, retry); past it enqueue raises QueueFull
    rate = "100/m"                 # jobs leased per s, m or h, every node together (docs/rate-limits-and-breakers.md)
    burst = 100                    # tokens the rate's bucket holds at most; default: the rate's count

    [[schedules]]                  # none by default; one table per schedule (docs/schedules.md)
    name = "nightly-report"        # unique; at most 200 characters
    cron = "30 2 * * *"            # croniter: minute hour day-of-month month day-of-week
    task = "reports.build"
    args = []                      # the job's arguments
    kwargs = {}
    queue = ""                     # "" -> the task's declared queue
    timezone = "UTC"               # an IANA name, e.g. "Europe/Berlin"
    catch_up = "last"              # none | last | all: what fires of times missed while down
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import operator
import os
import socket
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from actorq.errors import ActorQError
from actorq.jobs.events import HooksConfig
from actorq.jobs.node_file import node_file_beside
from actorq.jobs.schedule import CATCH_UP_POLICIES, Schedule, check_cron, check_schedule_name, zone
from actorq.jobs.task import check_name
from actorq.jobs.settings import (
    MAX_INTENSITY, DispatcherConfig, NodeConfig, ProducersConfig, ResultsConfig, WorkersConfig,
)
from actorq.jobs.wire import MAX_CREDITS, payload_budget
from actorq.journal.backends import journal_class
from actorq.journal.config import MAX_SECONDS, JournalConfig
from actorq.journal._limits import parse_rate
from actorq.journal.protocol import MAX_QUEUE_LIMIT, QueueLimits
from actorq.journal.config import redact_url as redact_url  # for the CLI and benches
from actorq.node.dashboard.settings import DashboardConfig, bind_problem as dashboard_bind_problem, token_problem
from actorq.node.metrics import MetricsConfig, bind_problem

__all__ = ["Config", "ConfigError", "DispatcherConfig", "JournalConfig", "NodeConfig", "ProducersConfig",
           "SupervisionConfig", "WorkersConfig", "default_config", "load_config", "parse_config", "parse_queues"]

_T = TypeVar("_T")
# Numeric bounds from field metadata: (metadata key, comparison, symbol in messages).
_BOUNDS = (("min", operator.ge, ">="), ("gt", operator.gt, ">"), ("max", operator.le, "<="))
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class ConfigError(ActorQError):
    """A configuration problem, ``"<file>: <key.path>: <what was expected>"``; ``key``
    (the dotted key path) is ``None`` for file-level problems such as unreadable files."""

    def __init__(self, file: str, key: str | None, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


def _got(value: object) -> str:
    return f"got {value!r} ({type(value).__name__})"


def _number(value: float) -> str:
    """A bound as people write it: ``86400``, not ``86400.0``."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _range(meta: Mapping[str, Any]) -> str:
    """The numeric bounds in `meta` as text: ``from 1 to 100000``, ``> 0 and <= 86400``, ``>= 0``."""
    if "min" in meta and "max" in meta:
        return f" from {_number(meta['min'])} to {_number(meta['max'])}"
    return " and".join(f" {sym} {_number(meta[name])}" for name, _, sym in _BOUNDS if name in meta)


@dataclass(frozen=True, slots=True)
class SupervisionConfig:
    """The ``[supervision]`` section: the node's own supervisors (see docs/architecture.md).

    - ``strategy``: the root's strategy over ``core`` and the worker pool
      (default ``"one_for_one"``).
    - ``intensity`` / ``period``: more than ``intensity`` restarts of those within
      ``period`` seconds stops the node (defaults 2 and 60).
    - ``core_strategy``: over the journal writer, dispatcher and scheduler, in that
      order (default ``"rest_for_one"``: a role is restarted with the ones it uses).
    - ``core_intensity`` / ``core_period``: defaults 5 and 60.

    Intensities go up to `actorq.jobs.settings.MAX_INTENSITY`, periods up to a day.

    The worker pool's own intensity is ``workers.intensity`` / ``workers.period``.
    """

    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one"
    intensity: int = field(default=2, metadata={"min": 0, "max": MAX_INTENSITY})
    period: float = field(default=60.0, metadata={"gt": 0, "max": MAX_SECONDS})
    core_strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "rest_for_one"
    core_intensity: int = field(default=5, metadata={"min": 0, "max": MAX_INTENSITY})
    core_period: float = field(default=60.0, metadata={"gt": 0, "max": MAX_SECONDS})


@dataclass(frozen=True, slots=True)
class Config:
    """A whole ``topology.toml``: one attribute per section, plus ``path``,
    the file it was loaded from (``None`` when built in code)."""

    node: NodeConfig = field(default_factory=NodeConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    producers: ProducersConfig = field(default_factory=ProducersConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """``[metrics]``: the Prometheus endpoint (docs/metrics.md)."""
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    """``[dashboard]``: the web dashboard (docs/dashboard.md)."""
    hooks: HooksConfig = field(default_factory=HooksConfig)
    """``[hooks]``: node event hooks (docs/hooks.md)."""
    schedules: tuple[Schedule, ...] = field(default=(), metadata={"toml": False})
    """The ``[[schedules]]`` tables (read by `parse_schedules`)."""
    queues: tuple[QueueLimits, ...] = field(default=(), metadata={"toml": False})
    """The ``[queues.NAME]`` tables (read by `parse_queues`), sorted by name."""
    path: Path | None = field(default=None, metadata={"toml": False})

    @property
    def base_dir(self) -> Path:
        """The directory containing :attr:`path`, or the CWD when there is none."""
        return Path.cwd() if self.path is None else self.path.absolute().parent

    @property
    def node_file(self) -> Path:
        """Where a running node writes its pid and control endpoint: beside a journal that
        admits one node (an SQLite file, by its real path, as its node lock), else
        ``.actorq-<node name>.node`` beside the topology file."""
        if not journal_class(self.journal.url).shared:
            return node_file_beside(self.journal.sqlite_path)
        return self.base_dir / f".actorq-{self.node.name}.node"

    @property
    def task_search_path(self) -> list[str]:
        """Where task modules are imported from (worker ``sys.path`` entries): the
        topology file's directory, then the working directory."""
        return [str(self.base_dir), os.getcwd()]


def _describe(tp: Any, meta: Mapping[str, Any]) -> str:
    """The expectation text for a (non-table) field type, including numeric bounds."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    else:
        text = "a list of strings" if origin is tuple else _TYPE_NAMES[tp]
    return text + _range(meta)


def _convert(tp: Any, raw: object, key: str, meta: Mapping[str, Any], source: str) -> Any:
    """Validate ``raw`` against ``tp`` and the field metadata; return it converted."""
    if "parse" in meta:  # a value with its own syntax (a duration): the parser says what it expected
        try:
            return meta["parse"](raw)
        except ValueError as exc:
            raise ConfigError(source, key, str(exc)) from None
    if typing.get_origin(tp) in (types.UnionType, typing.Union):  # ``X | None``: TOML has no null
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(raw, Mapping):
            raise ConfigError(source, key, f"expected a table, {_got(raw)}")
        return _build(typing.cast(type, tp), raw, key, source)
    value: Any = raw
    if origin is Literal:
        ok = isinstance(raw, str) and raw in typing.get_args(tp)
    elif origin is tuple:
        ok = isinstance(raw, (list, tuple)) and all(isinstance(v, str) for v in raw)
        value = tuple(raw) if ok else raw  # type: ignore[arg-type]
    elif tp in (int, float):  # bool is an int subclass but never a number here
        ok = isinstance(raw, (int, tp)) and not isinstance(raw, bool)
        if ok and tp is float:
            try:
                value = float(raw)
            except OverflowError:  # an integer past any float
                ok = False
            else:
                ok = math.isfinite(value)  # inf and nan are no setting, whatever the bounds
    else:
        ok = isinstance(raw, tp)
    if not ok or not all(op(value, meta[name]) for name, op, _ in _BOUNDS if name in meta):
        raise ConfigError(source, key, f"expected {_describe(tp, meta)}, {_got(raw)}")
    check: Callable[[Any], str | None] = meta.get("check", lambda _: None)
    if problem := check(value):
        raise ConfigError(source, key, problem)
    return value


def _build(cls: type[_T], data: Mapping[str, Any], prefix: str, source: str) -> _T:
    """Build dataclass ``cls`` from table ``data``; ``prefix`` is its key path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)  # type: ignore[arg-type]
              if f.metadata.get("toml", True)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in fields:
            kind = "unknown key" if prefix else "unknown section"
            close = difflib.get_close_matches(name, list(fields), n=1)
            valid = ", ".join(map(repr, fields))
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {valid}"
            raise ConfigError(source, key, f"{kind}; {hint}")
        kwargs[name] = _convert(hints[name], value, key, fields[name].metadata, source)
    return cls(**kwargs)


def parse_config(data: Mapping[str, Any], *, source: str = "<config>",
                 path: Path | None = None) -> Config:
    """Validate an already-parsed TOML document into a :class:`Config`.

    ``source`` names the origin in messages; ``path`` is stored on the result; an
    empty ``node.name`` becomes the host name.  Raises :class:`ConfigError`.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(source, None, f"expected a table, {_got(data)}")
    raw_schedules = data.get("schedules", [])
    raw_queues = data.get("queues", {})
    config = _build(Config, {k: v for k, v in data.items() if k not in ("schedules", "queues")}, "", source)
    workers = config.workers
    if workers.concurrency + workers.prefetch > MAX_CREDITS:  # a worker asks for this many jobs at once
        raise ConfigError(source, "workers.prefetch",
                          f"expected an integer from 0 to {MAX_CREDITS - workers.concurrency} "
                          f"(workers.concurrency + workers.prefetch may be at most {MAX_CREDITS}), "
                          f"{_got(workers.prefetch)}")
    if workers.heartbeat_timeout <= workers.heartbeat_interval:
        raise ConfigError(source, "workers.heartbeat_timeout",
                          f"expected a number > workers.heartbeat_interval ({workers.heartbeat_interval:g}), "
                          f"got {workers.heartbeat_timeout!r}")
    lease_timeout = config.dispatcher.lease_timeout
    for key in ("lock_timeout", "idle_in_transaction_timeout"):
        value = getattr(config.journal, key)
        if value is not None and value >= lease_timeout:  # a stalled session must let go before leases lapse
            raise ConfigError(source, f"journal.{key}",
                              f"expected a number > 0 and < dispatcher.lease_timeout ({lease_timeout:g}), "
                              f"got {value!r}")
    if problem := bind_problem(config.metrics):
        raise ConfigError(source, "metrics.bind", problem)
    if found := token_problem(config.dashboard):
        raise ConfigError(source, *found)
    if problem := dashboard_bind_problem(config.dashboard.bind, config.dashboard.resolved_token()):
        raise ConfigError(source, "dashboard.bind", problem)
    node = dataclasses.replace(config.node, name=config.node.name or socket.gethostname())
    schedules = parse_schedules(raw_schedules, source, payload_budget(config.dispatcher.max_frame_bytes))
    queues = parse_queues(raw_queues, source)
    return dataclasses.replace(config, node=node, schedules=schedules, queues=queues, path=path)


_QUEUE_KEYS = ("concurrency", "node_concurrency", "max_depth", "rate", "burst")


def parse_queues(raw: object, source: str) -> tuple[QueueLimits, ...]:
    """Validate the ``[queues.NAME]`` tables: each count an integer from 1 to `MAX_QUEUE_LIMIT`,
    ``rate`` a string ``COUNT/UNIT`` (`parse_rate`), ``burst`` only beside a rate.

    Every problem is a `ConfigError` naming the key (``queues.reports.concurrency``).
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "queues", f"expected a table of queue tables ([queues.NAME]), {_got(raw)}")
    found: list[QueueLimits] = []
    for name, table in raw.items():
        where = f"queues.{name}"
        try:
            check_name("queue name", name)
        except ValueError as exc:  # never echo a long name
            raise ConfigError(source, where if len(name) <= 60 else "queues", str(exc)) from None
        if not isinstance(table, Mapping):
            raise ConfigError(source, where, f"expected a table, {_got(table)}")
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in _QUEUE_KEYS:
                close = difflib.get_close_matches(key, _QUEUE_KEYS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(map(repr, _QUEUE_KEYS))}"
                raise ConfigError(source, f"{where}.{key}", f"unknown key; {hint}")
            if key == "rate":
                try:
                    parse_rate(value)
                except ValueError as exc:
                    raise ConfigError(source, f"{where}.rate", str(exc)) from None
            elif not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_QUEUE_LIMIT):
                raise ConfigError(source, f"{where}.{key}", f"expected an integer from 1 to {MAX_QUEUE_LIMIT}, {_got(value)}")
            values[key] = value
        if "burst" in values and "rate" not in values:
            raise ConfigError(source, f"{where}.burst", "a burst needs a rate in the same table")
        found.append(QueueLimits(name, **values))
    return tuple(sorted(found, key=lambda q: q.queue))


_SCHEDULE_KEYS = ("name", "cron", "task", "args", "kwargs", "queue", "timezone", "catch_up")


def parse_schedules(raw: object, source: str, max_payload: int) -> tuple[Schedule, ...]:
    """Validate the ``[[schedules]]`` array of tables.

    Every problem is a `ConfigError` naming the key (``schedules[2].cron``, or
    ``schedules.nightly.cron`` once the name is known) and what was expected.
    """
    if not isinstance(raw, list):
        raise ConfigError(source, "schedules", f"expected an array of tables ([[schedules]]), {_got(raw)}")
    schedules: list[Schedule] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(raw):
        where = f"schedules[{index}]"
        if not isinstance(table, Mapping):
            raise ConfigError(source, where, f"expected a table, {_got(table)}")
        for key in table:
            if key not in _SCHEDULE_KEYS:
                close = difflib.get_close_matches(key, _SCHEDULE_KEYS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(map(repr, _SCHEDULE_KEYS))}"
                raise ConfigError(source, f"{where}.{key}", f"unknown key; {hint}")
        for key in ("name", "cron", "task"):
            if key not in table:
                raise ConfigError(source, f"{where}.{key}", "missing; every schedule needs name, cron and task")
        for key in ("name", "cron", "task", "queue", "timezone", "catch_up"):
            if key in table and not isinstance(table[key], str):
                raise ConfigError(source, f"{where}.{key}", f"expected a string, {_got(table[key])}")
        name = table["name"]
        if name in seen:
            raise ConfigError(source, f"{where}.name",
                              f"duplicate schedule name {name!r} (also schedules[{seen[name]}])")
        seen[name] = index
        args, kwargs = table.get("args", []), table.get("kwargs", {})
        if not isinstance(args, list):
            raise ConfigError(source, f"{where}.args", f"expected an array, {_got(args)}")
        if not isinstance(kwargs, Mapping):
            raise ConfigError(source, f"{where}.kwargs", f"expected a table, {_got(kwargs)}")
        catch_up = table.get("catch_up", "last")
        if catch_up not in CATCH_UP_POLICIES:
            raise ConfigError(source, f"{where}.catch_up",
                              f"expected one of {', '.join(map(repr, CATCH_UP_POLICIES))}, got {catch_up!r}")
        # each field checked alone first, so the message names its key
        for key, check in (("name", check_schedule_name), ("cron", check_cron), ("timezone", zone),
                           ("task", functools.partial(check_name, "task name")),
                           ("queue", functools.partial(check_name, "queue name"))):
            if table.get(key):
                try:
                    check(table[key])
                except ValueError as exc:
                    raise ConfigError(source, f"{where}.{key}", _without_name(str(exc), name)) from None
        try:
            schedule = Schedule(name, table["cron"], table["task"], tuple(args), dict(kwargs),
                                table.get("queue") or None, table.get("timezone", "UTC"), catch_up)
            schedule.check_payload(max_payload)
        except (ValueError, TypeError) as exc:
            raise ConfigError(source, where, _without_name(str(exc), name)) from None
        schedules.append(schedule)
    return tuple(schedules)


def _without_name(message: str, name: object) -> str:
    """`message` as it follows ``schedules[i]:``: the schedule's name once, at its start."""
    if not isinstance(name, str) or not name or len(name) > 60:  # never echo a long name
        return message
    prefix = f"schedule {name!r}: "
    return message if message.startswith(prefix) else f"{prefix}{message}"


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the TOML file at ``path``; raise :class:`ConfigError`."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as fp:
            data = tomllib.load(fp)
    except OSError as exc:
        raise ConfigError(source, None, f"cannot read the file: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(source, None, f"invalid TOML: {exc}") from exc
    return parse_config(data, source=source, path=Path(source).absolute())


def default_config() -> Config:
    """The configuration an empty ``topology.toml`` yields (all defaults)."""
    return parse_config({})
