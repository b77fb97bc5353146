"""The ``actorq`` command line: run, check, enqueue, status, tree, migrate, schedules, queues, jobs, health,
dashboard.

Every subcommand reads the same ``topology.toml``. Errors in it are printed as
``file: key: expected ...`` without a traceback, with exit code 2. So are bad
flags: each number is range-checked where argparse reads it, and the one line
printed names the flag and its range (G12).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections import Counter
from typing import Any, Callable, NoReturn, Sequence

from actorq._version import __version__
from actorq._kernel.loop import new_event_loop
from actorq.errors import JournalError, QueueFull
from actorq.jobs.backpressure import MAX_BLOCK
from actorq.jobs.client import Client
from actorq.jobs.runtime import JOURNAL_WAIT_REPORTED, live_jobs
from actorq.jobs.settings import producers_endpoint_problem
from actorq.jobs.outcome import ON_CONFLICT, TaskPolicy
from actorq.jobs.task import Job, check_name
from actorq.journal import migrate
from actorq.journal.backends import journal_class, open_journal
from actorq.journal._limits import parse_rate
from actorq.journal.protocol import MAX_ATTEMPTS, MAX_CONCURRENCY_LIMIT, MAX_PRIORITY, MAX_UNIQUE_FOR, MIN_PRIORITY, BreakerState, CircuitBreaker, JobState, QueueLimits
from actorq.node import cli_jobs
from actorq.node.cli_flags import (
    err as _err, out as _out,
    FINAL_STATES, MAX_WAIT, duration_text as _duration_text, integer_flag as _integer,
    queue_name_flag as _queue_name, seconds_flag as _seconds,
)
from actorq.node.config import Config, ConfigError, load_config
from actorq.node.constants import EXIT_CONFIG, EXIT_FAILURE, EXIT_FULL, EXIT_JOURNAL, EXIT_OK, EXIT_RETRY
from actorq.node.metrics import parse_bind
from actorq.node.control import TREE, NodeNotRunning, query, read_node_file
from actorq.node.node import Node, NodeFailed, TaskCheckInterrupted, TaskModuleError, import_tasks
from actorq.node.status import ask_status, render_status
from actorq.node.views import STATS_WINDOW, figures, schedule_entries

logger = logging.getLogger("actorq.cli")

MAX_COUNT = 10_000_000  # jobs one `actorq enqueue` adds (built and committed 10,000 at a time)
ENQUEUE_CHUNK = 10_000
MAX_DELAY = 10 * 365 * 86_400.0  # ten years, in seconds
DEFAULT_DASHBOARD_BIND = "127.0.0.1:8642"

EPILOG = """\
examples:
  actorq check   --config topology.toml
  actorq enqueue --config topology.toml quickstart.add 2 3 --count 1000
  actorq run     --config topology.toml
  actorq status  --config topology.toml
  actorq tree    --config topology.toml
  actorq migrate --config topology.toml
  actorq schedules list --config topology.toml
  actorq queues  --config topology.toml list
  actorq queues  --config topology.toml pause emails
  actorq jobs    --config topology.toml list --state dead
  actorq jobs    --config topology.toml show JOB_ID
  actorq jobs    --config topology.toml retry --all-dead
  actorq jobs    --config topology.toml cancel JOB_ID
  actorq jobs    --config topology.toml prune --older-than 7d --state succeeded
  actorq health  --config topology.toml
  actorq dashboard --config topology.toml --bind 127.0.0.1:8642

exit codes: 0 ok, 1 the node failed (health: no node answers), 2 bad config or usage, 3 journal unusable,
4 start-up cut short from outside (the task import check was killed or took too long): try again.
"""


# -- flags: each value checked where argparse reads it; a problem is one line naming the flag --------
class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``actorq enqueue: argument --count: expected ...``,
    and exit code 2 (EXIT_CONFIG)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _key(what: str) -> Callable[[str], str]:
    """An argparse ``type`` for a non-empty key (unique, ordering, concurrency) of at most 255 characters."""
    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"expected a non-empty {what}, got ''")
        try:
            check_name(what, text)
        except ValueError as exc:  # "a unique key may have at most 255 characters, got 300"
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    return parse


_unique_key = _key("unique key")


def _node_endpoint(text: str) -> str:
    problem = producers_endpoint_problem(text) if text else "expected an endpoint, got ''"
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _json(text: str) -> Any:
    """A JSON value; raises ValueError (invalid JSON) or ArgumentTypeError (nested past the parser)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise argparse.ArgumentTypeError(f"JSON nested too deeply ({len(text):,} characters)") from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = _json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, e.g. '{{\"to\": \"a@b.c\"}}': {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _parse_arg(text: str) -> Any:
    """A task argument: a JSON value, or else the text itself."""
    try:
        return _json(text)
    except ValueError:
        return text


# -- run ---------------------------------------------------------------------------------
BREAKERS_EVERY = 5.0  # seconds between two reads of the breakers for the progress line
STATUS_KEY_BREAKERS = 20  # per-key breakers not closed that `actorq status` lists (there can be millions of keys)


class _ProgressPrinter:
    """Prints one line a second while work is done: totals, rate, in flight, and the
    circuit breakers of the node's tasks not closed (read at most every `BREAKERS_EVERY` s)."""

    def __init__(self, node: Node, quiet: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.quiet = quiet
        self.clock = clock
        self.last_done = 0
        self.last_time = time.monotonic()
        self.idle_reported = False
        self.breakers: dict[str, int] = {}  # {"open": n, "half_open": n}, those not zero
        self.key_breakers: dict[str, int] = {}  # the same, of the per-key breakers
        self.key_breakers_shown: dict[str, int] = {}
        self.breakers_shown: dict[str, int] = {}
        self.breakers_read: float | None = None  # clock() of the last read started
        self.reading: asyncio.Task[None] | None = None

    def read_breakers(self) -> "asyncio.Task[None] | None":
        """Start a read of the breakers of the node's tasks if the last one started `BREAKERS_EVERY`
        s ago and is done (a node whose tasks declare none reads nothing); returns it, or None.
        The line never waits for it: a stalled journal leaves the last counts shown."""
        now = self.clock()
        if self.reading is not None and not self.reading.done():
            return None
        if self.breakers_read is not None and now - self.breakers_read < BREAKERS_EVERY:
            return None
        self.breakers_read = now
        self.reading = asyncio.get_running_loop().create_task(self._read_breakers())
        return self.reading

    async def _read_breakers(self) -> None:
        try:
            states = await self.node.breakers()
        except Exception as exc:  # the journal's trouble shows on the line already
            logger.debug("progress: the breakers could not be read: %s", exc)
            return
        counts = Counter(b.state for b in states if b.state != "closed")
        self.breakers = {state: counts[state] for state in ("open", "half_open") if counts[state]}
        try:
            self.key_breakers = await self.node.key_breakers()
        except Exception as exc:
            logger.debug("progress: the key breakers could not be read: %s", exc)

    def tick(self) -> None:
        p = self.node.progress()
        now = time.monotonic()
        done = p.succeeded + p.failed
        rate = (done - self.last_done) / max(now - self.last_time, 1e-9)
        active = not p.idle or done != self.last_done
        changed = (self.breakers != self.breakers_shown  # a breaker opened or closed while idle: said
                   or self.key_breakers != self.key_breakers_shown)
        if not self.quiet and (active or changed or not self.idle_reported):
            _err(
                f"[actorq] {p.succeeded:,} succeeded  {p.failed:,} failed  {rate:,.0f} jobs/s  "
                f"in flight {p.in_flight}  workers {p.workers}  restarts {p.worker_restarts}"
                + (f"  stale acks {p.stale_acks}" if p.stale_acks else "")
                + "".join(f"  breakers {state.replace('_', '-')}: {n}" for state, n in self.breakers.items())
                + "".join(f"  key breakers {state.replace('_', '-')}: {n:,}" for state, n in self.key_breakers.items())
                + (f"  JOURNAL UNAVAILABLE, retrying: {p.journal_error}" if p.journal_error else "")
                + (f"  waiting on the journal for {p.journal_wait:.0f} s (a lock or the disk)"
                   if p.journal_wait >= JOURNAL_WAIT_REPORTED else "")
                + ("" if active else "  (idle: waiting for jobs)")
            )
            self.idle_reported = not active
            self.breakers_shown = self.breakers
            self.key_breakers_shown = self.key_breakers
        self.last_done, self.last_time = done, now


async def _run_node(config: Config, burst: bool, quiet: bool) -> int:
    node = Node(config)
    loop = asyncio.get_running_loop()
    stop_requests = 0
    stopping: list[asyncio.Task[None]] = []  # keeps the stop task referenced until it is done

    def request_stop() -> None:
        nonlocal stop_requests
        stop_requests += 1
        if stop_requests == 1:
            logger.info("stop requested: finishing in-flight jobs (up to %.0f s)", config.workers.shutdown_timeout)
            stopping.append(loop.create_task(node.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    try:
        await node.start()
    except (TaskModuleError, TaskCheckInterrupted):
        raise  # a mistake in the topology (exit 2), or a check cut short (exit 4): as `check` says them
    except NodeFailed as exc:
        _err(f"actorq: {exc}")
        return EXIT_FAILURE
    printer = _ProgressPrinter(node, quiet)

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            printer.read_breakers()
            printer.tick()
            if burst and not node.stopping:
                if not live_jobs(await node.counts()):
                    logger.info("burst mode: no work left; stopping")
                    request_stop()

    reporter = loop.create_task(report())
    try:
        await node.wait()
    except NodeFailed as exc:
        _err(f"actorq: node failed: {exc}")
        return EXIT_FAILURE
    finally:
        reporter.cancel()
        if printer.reading is not None:
            printer.reading.cancel()
        printer.tick()
    return EXIT_OK


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    logging.basicConfig(level=config.node.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(_run_node(config, args.burst, args.quiet))


# -- check, enqueue, status ----------------------------------------------------------------------
def cmd_check(args: argparse.Namespace, config: Config) -> int:
    names = import_tasks(config, args.config)  # as the workers will import them
    _out(f"{args.config}: ok")
    _out(f"  journal   {config.journal.describe()}")
    retention = config.journal.retention
    _out("  retention " + ", ".join(f"{state.value} {_duration_text(retention[state]) if state in retention else 'forever'}"
                                    for state in FINAL_STATES))
    _out(f"  workers   {config.workers.processes} processes x {config.workers.concurrency} slots, "
         f"queues {', '.join(config.workers.queues)}")
    _out(f"  tasks     {len(names) or '(none: every job would be dead)'}")
    for name, policy in sorted(names.items()):
        _out(f"    {name}: {_describe_policy(policy)}")
    now = time.time()
    _out(f"  schedules {len(config.schedules) or '(none)'}")
    for schedule in config.schedules:
        unknown = "" if schedule.task in names else "  (task not registered: its jobs would be dead)"
        _out(f"    {schedule.name}: {schedule.cron!r} {schedule.timezone} -> {schedule.task}, "
             f"next {_local(schedule.next_after(now), schedule.timezone)}{unknown}")
    _out(f"  queues    {len(config.queues) or '(no limits)'}")
    for limits in config.queues:
        _out(f"    {limits.queue}: {', '.join(_queue_rules(limits)) or 'no limits (clears what the journal holds)'}")
    return EXIT_OK


def _breaker_text(breaker: BreakerState) -> str:
    """``closed (2 failures in its window)``, ``open until 12:00:30 UTC``, ``half_open (probing)``."""
    if breaker.state == "open" and breaker.reopens_at is not None:
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(breaker.reopens_at))
        return f"open: its jobs wait, probes from {until}"
    if breaker.state == "half_open":
        return "half_open: probing"
    return f"closed ({breaker.failures} failed attempts in its window)"


def _queue_rules(limits: QueueLimits) -> list[str]:
    """A queue's rules as ``["concurrency 3", "rate 100/m (burst 100)"]``; node_concurrency is
    None in what the journal stores."""
    rules = [f"{key} {getattr(limits, key):,}" for key in ("concurrency", "node_concurrency", "max_depth")
             if getattr(limits, key) is not None]
    if limits.rate is not None:
        rules.append(f"rate {limits.rate} (burst {parse_rate(limits.rate, limits.burst).burst:,})")
    return rules


def _seconds_text(value: float) -> str:
    return f"{value:g} s"


def _describe_policy(policy: TaskPolicy) -> str:
    """One line of what a task declares: its queue, attempts, backoff and limits."""
    retry = policy.retry
    if retry.kind == "fixed":
        wait = f"fixed {_seconds_text(retry.base)}"
    elif retry.kind == "linear":
        wait = f"linear {_seconds_text(retry.base)} per attempt, at most {_seconds_text(retry.cap)}"
    else:
        wait = (f"{retry.kind} from {_seconds_text(retry.base)} x{retry.factor:g}, at most {_seconds_text(retry.cap)}"
                if retry.kind == "exponential" else "the task's function")
    parts = [f"queue {policy.queue}", f"priority {policy.priority}", f"{policy.max_attempts} attempts",
             f"retry {wait}" + (f" ±{retry.jitter:.0%}" if retry.jitter and retry.kind != "function" else ""),
             f"on crash {policy.on_crash}"]
    if policy.timeout is not None:
        parts.append(f"timeout {_seconds_text(policy.timeout)}")
    if policy.unique_for is not None:
        parts.append(f"unique for {_seconds_text(policy.unique_for)}")
    if policy.concurrency_limit is not None or policy.on_conflict is not None:
        parts.append(f"concurrency key limit {policy.concurrency_limit or 1} ({policy.on_conflict or 'block'})")
    if policy.concurrency is not None:
        parts.append(f"concurrency {policy.concurrency:,}")
    if policy.rate is not None:
        parts.append(f"rate {policy.rate} (burst {parse_rate(policy.rate, policy.burst).burst:,})")
    if policy.circuit_breaker is not None:
        parts.append(_declared_breaker("circuit breaker", policy.circuit_breaker))
    if policy.key_rate is not None:
        parts.append(f"key rate {policy.key_rate} (burst {parse_rate(policy.key_rate, policy.key_burst).burst:,}) per key")
    if policy.key_circuit_breaker is not None:
        parts.append(_declared_breaker("key circuit breaker", policy.key_circuit_breaker) + ", per key")
    return ", ".join(parts)


def _declared_breaker(what: str, b: CircuitBreaker) -> str:
    return (f"{what} {b.failures} failures in {b.window:g} s, cool-down {b.cool_down:g} s, "
            f"{b.probes} probe{'s' if b.probes != 1 else ''}")


# -- schedules ------------------------------------------------------------------------------------
SCHEDULE_COLUMNS = ("name", "cron", "timezone", "task", "queue", "catch_up", "source", "last_fired", "next_fire")


def _local(when: float | None, timezone: str) -> str:
    """`when` as an ISO time in `timezone` (seconds), or ``-``."""
    if when is None:
        return "-"
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(when, ZoneInfo(timezone)).isoformat(timespec="seconds")


def _schedule_entries(config: Config, now: float) -> tuple[list[dict[str, Any]], str | None]:
    """The schedules as a node of `config` would run them (`actorq.node.views.schedule_entries`).
    Returns them and, when the journal could not be read, why (then the file's only)."""
    rows: list[Any] = []
    problem = None
    try:
        journal = open_journal(config.journal.resolved_url, schema=config.journal.schema,
                               busy_timeout=config.journal.busy_timeout,
                               connect_retry_for=config.journal.connect_retry_for, create=False)
    except JournalError as exc:
        problem = str(exc)
    else:
        try:
            rows = journal.schedules()
        finally:
            journal.close()
    return schedule_entries(config, rows, now), problem


def cmd_schedules(args: argparse.Namespace, config: Config) -> int:
    entries, problem = _schedule_entries(config, time.time())
    if args.json:
        _out(json.dumps({"schedules": entries, "journal_problem": problem}, sort_keys=True))
        return EXIT_OK
    if problem:
        _out(f"(the journal could not be read: {problem}; showing the file's schedules)")
    rows = [[e["name"], e["cron"], e["timezone"], e["task"], e["queue"] or "(task's)", e["catch_up"],
             e["source"] + ("" if e["in_journal"] else " (at next start)"),
             _local(e["last_fired"], e["timezone"]), _local(e["next_fire"], e["timezone"])] for e in entries]
    if not rows:
        _out("(no schedules)")
        return EXIT_OK
    widths = [max(len(str(c)) for c in column) for column in zip(SCHEDULE_COLUMNS, *rows)]
    for line in [list(SCHEDULE_COLUMNS), *rows]:
        _out("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    return EXIT_OK


def cmd_enqueue(args: argparse.Namespace, config: Config) -> int:
    if args.concurrency_key is None and (args.concurrency_limit is not None or args.on_conflict is not None):
        raise ValueError("--concurrency-limit and --on-conflict need --concurrency-key")
    if args.concurrency_key is not None and args.ordering_key is not None:
        raise ValueError("a job takes one flow key: --ordering-key or --concurrency-key, not both")
    kwargs = args.kwargs if args.kwargs is not None else {}
    task_args = args.args
    declared = import_tasks(config, args.config)  # their declared queue, priority and attempts apply
    with Client.from_config(config.journal, tasks=declared, node_endpoint=args.node_endpoint) as client:
        done = held = discarded = 0
        while done < args.count:
            n = min(ENQUEUE_CHUNK, args.count - done)
            jobs = [Job(args.task, task_args, kwargs, delay=args.delay, max_attempts=args.max_attempts,
                        priority=args.priority, unique_key=args.unique_key, unique_for=args.unique_for,
                        ordering_key=args.ordering_key, concurrency_key=args.concurrency_key,
                        concurrency_limit=args.concurrency_limit, on_conflict=args.on_conflict)
                    for _ in range(n)]
            try:
                ids = client.enqueue_many(jobs, args.queue, block=args.block)
            except QueueFull as exc:  # one line; the batches before it stay committed
                _err(f"actorq enqueue: {exc}; nothing of this batch was added"
                     + (f" ({done:,} jobs enqueued before it)" if done else ""))
                return EXIT_FULL
            discarded += sum(1 for job_id in ids if job_id is None)  # over the concurrency key's limit
            held += sum(1 for job, job_id in zip(jobs, ids) if job_id is not None and job_id != job.id)  # holder
            done += n
        if args.count == 1:
            if discarded:
                _err(f"actorq enqueue: nothing added: concurrency key {args.concurrency_key!r} has its limit "
                     "of admitted jobs (--on-conflict discard)")
                return EXIT_OK
            _out(ids[0])
            if held:
                _err(f"actorq enqueue: nothing added: job {ids[0]} holds its unique key")
        else:
            where = f"queue {args.queue!r}" if args.queue else "its task's queue"
            if held or discarded:
                why = ([f"{held:,} not added: their unique key was held"] if held else []) + (
                    [f"{discarded:,} not added: their concurrency key had its limit of admitted jobs"] if discarded else [])
                _out(f"enqueued {done - held - discarded:,} of {done:,} jobs of {args.task} on {where}; "
                     + "; ".join(why))
            else:
                _out(f"enqueued {done:,} jobs of {args.task} on {where}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    with Client.from_config(config.journal, create=False) as client:  # reading never creates a journal
        counts = client.counts()
        minute = {name: figures(stats) for name, stats in client.queue_stats(STATS_WINDOW).items()}
        paused = client.paused_queues()
        limits = client.queue_limits()
        breakers = client.breakers()
        key_breakers, key_counts = client.key_breakers(STATUS_KEY_BREAKERS)
    node, lines = _node_status(config, args.timeout)
    if args.json:
        stored = {name: {key: value for key, value in (("concurrency", q.concurrency), ("max_depth", q.max_depth),
                                                        ("rate", q.rate), ("burst", q.burst))
                         if value is not None} for name, q in sorted(limits.items())}
        circuits = {b.task: {"state": b.state, "failures": b.failures, "opened_at": b.opened_at,
                             "reopens_at": b.reopens_at} for b in breakers}
        by_key = {"listed": [{"task": b.task, "key": b.key, "state": b.state, "failures": b.failures,
                              "opened_at": b.opened_at, "reopens_at": b.reopens_at} for b in key_breakers],
                  "open": key_counts.get("open", 0), "half_open": key_counts.get("half_open", 0)}
        _out(json.dumps({"queues": counts, "paused": paused, "limits": stored, "breakers": circuits,
                         "key_breakers": by_key, "node": node, "last_minute": minute}, sort_keys=True))
        return EXIT_OK
    states = [str(state) for state in JobState]
    _out(f"journal {config.journal.describe()}")
    _out(f"{'queue':<16}" + "".join(f"{s:>11}" for s in states) + f"{'done/min':>11}{'wait avg':>11}")
    idle = figures(None)
    for queue in sorted(counts):
        done, _failed, wait, _longest = cli_jobs.minute_columns(minute.get(queue, idle))
        _out(f"{queue:<16}" + "".join(f"{counts[queue].get(s, 0):>11,}" for s in states) + f"{done:>11}{wait:>11}")
    if not counts:
        _out("(no jobs)")
    if paused:
        _out(f"paused queues (lease nothing): {', '.join(paused)}")
    for name, q in sorted(limits.items()):
        rules = _queue_rules(q)
        if rules:
            _out(f"queue {name}: {', '.join(rules)} (docs/flow-control.md)")
    for breaker in breakers:
        _out(f"task {breaker.task}: circuit breaker {_breaker_text(breaker)}")
    for breaker in key_breakers:
        _out(f"task {breaker.task} key {breaker.key!r}: circuit breaker {_breaker_text(breaker)}")
    more = sum(key_counts.values()) - len(key_breakers)
    if more > 0:
        _out(f"... and {more:,} more keys' circuit breakers not closed "
             f"({key_counts.get('open', 0):,} open, {key_counts.get('half_open', 0):,} half-open in all)")
    for line in lines:
        _out(line)
    return EXIT_OK


def _node_status(config: Config, timeout: float) -> tuple[dict[str, Any], list[str]]:
    """The node serving the journal, as ``actorq status`` reports it: its ``--json`` entry and its lines.

    No node running, or one that does not answer within `timeout` seconds, is reported, not an error.
    """
    try:
        info = read_node_file(config.node_file)
    except NodeNotRunning as exc:
        if journal_class(config.journal.url).shared:  # other nodes may serve it, from other machines
            where = f"node {config.node.name!r} of this topology running on this machine"
        else:
            where = "node running on this journal"
        return {"running": False, "detail": str(exc)}, [f"no {where}"]
    name = info.get("name") if isinstance(info.get("name"), str) else "?"
    pid, control = info["pid"], info.get("control")
    try:
        if not isinstance(control, str):
            raise NodeNotRunning(f"{config.node_file} names no control endpoint")
        status = ask_status(control, timeout)
    except NodeNotRunning as exc:
        return ({"running": True, "answered": False, "name": name, "pid": pid, "detail": str(exc)},
                [f"node {name} (pid {pid}): {exc}"])
    return {"running": True, "answered": True, **status}, render_status(status)


def cmd_migrate(args: argparse.Namespace, config: Config) -> int:
    journal = config.journal
    applied = migrate(journal.resolved_url, journal.schema, connect_retry_for=journal.connect_retry_for)
    where = journal.describe()
    if applied:
        _out(f"{where}: applied migrations {', '.join(str(v) for v in applied)}")
    else:
        _out(f"{where}: up to date")
    return EXIT_OK


def cmd_tree(args: argparse.Namespace, config: Config) -> int:
    try:
        info = read_node_file(config.node_file)
        control = info.get("control")
        if not isinstance(control, str):
            raise NodeNotRunning(f"{config.node_file} names no control endpoint")
        tree = query(control, TREE, None, timeout=args.timeout)
    except NodeNotRunning as exc:
        _err(f"actorq tree: {exc}")
        return EXIT_FAILURE
    if args.json:
        _out(json.dumps(tree, sort_keys=True))
        return EXIT_OK
    for line in render_tree(tree):
        _out(line)
    return EXIT_OK


def _describe_node(node: dict[str, Any]) -> str:
    parts = [str(node.get("id"))]
    kind = node.get("kind") or node.get("type")
    if node.get("type") == "supervisor":
        parts.append(f"supervisor {node.get('strategy', '')}".rstrip())
    elif kind:
        parts.append(str(kind))
    pid = node.get("pid")
    if isinstance(pid, int):
        parts.append(f"pid {pid}")
    parts.append(str(node.get("state", "?")))
    if node.get("restarts"):
        parts.append(f"restarts {node['restarts']}")
    return "  ".join(parts)


def render_tree(tree: dict[str, Any]) -> list[str]:
    """The lines ``actorq tree`` prints for a tree as `Node.tree` returns it."""
    lines = [_describe_node(tree)]

    def walk(children: list[dict[str, Any]], prefix: str) -> None:
        for i, child in enumerate(children):
            last = i == len(children) - 1
            lines.append(prefix + ("└── " if last else "├── ") + _describe_node(child))
            walk(child.get("children") or [], prefix + ("    " if last else "│   "))

    walk(tree.get("children") or [], "")
    return lines


# -- dashboard ------------------------------------------------------------------------------------
def _bind_flag(text: str) -> str:
    try:
        parse_bind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def cmd_dashboard(args: argparse.Namespace, config: Config) -> int:
    """``actorq dashboard``: serve the web dashboard on the journal, with or without a node running."""
    from actorq.node.dashboard.data import DashboardData, RemoteNode
    from actorq.node.dashboard.server import DashboardServer, DashboardUnavailable
    from actorq.node.dashboard.settings import bind_problem

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bind = args.bind or config.dashboard.bind or DEFAULT_DASHBOARD_BIND
    token = config.dashboard.resolved_token()
    if problem := bind_problem(bind, token):
        _err(f"actorq dashboard: --bind: {problem}")
        return EXIT_CONFIG
    server = DashboardServer(DashboardData(config, RemoteNode(config)), bind, token)
    try:
        server.listen()  # bind now: an address in use is said before anything is served
    except (DashboardUnavailable, OSError) as exc:
        _err(f"actorq dashboard: cannot serve at {bind}: {getattr(exc, 'strerror', None) or exc}")
        return EXIT_CONFIG
    _out(f"actorq dashboard: serving {config.journal.describe()} at {server.url} (Ctrl-C stops)")
    server.serve_forever()
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``actorq`` command."""
    parser = _Parser(
        prog="actorq",
        description="actorq: an actor runtime with OTP-style supervision and a durable job queue.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"actorq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", "-c", required=True, metavar="FILE", help="the topology.toml to use")
        return p

    run = add("run", "Run a node in the foreground: journal writer, dispatcher, scheduler and worker "
              "processes. SIGTERM or Ctrl-C stops taking work, finishes in-flight jobs and exits 0.",
              "actorq run --config topology.toml")
    run.add_argument("--burst", action="store_true", help="exit once no job is ready, leased, scheduled or in retry (like RQ's burst mode)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress lines (logs only)")
    run.set_defaults(handler=cmd_run)

    check = add("check", "Validate the topology file and print what it describes; starts nothing.",
                "actorq check --config topology.toml")
    check.set_defaults(handler=cmd_check)

    enq = add("enqueue", "Add jobs to the journal (committed before the command returns). Arguments are "
              "JSON values; anything that is not valid JSON is taken as a string.",
              "actorq enqueue --config topology.toml quickstart.add 2 3 --count 1000")
    enq.add_argument("task", help="the registered task name")
    enq.add_argument("args", nargs="*", type=_parse_arg, default=[], help="positional arguments (JSON)")
    enq.add_argument("--kwargs", type=_json_object,
                     help='keyword arguments as a JSON object, e.g. \'{"to": "a@b.c"}\'')
    enq.add_argument("--queue", type=_queue_name, default=None,
                     help="queue name (default: the task's declared queue)")
    enq.add_argument("--count", type=_integer(1, MAX_COUNT), default=1,
                     help=f"how many identical jobs to add, 1 to {MAX_COUNT} (default: 1)")
    enq.add_argument("--delay", type=_seconds(0.0, MAX_DELAY, low_allowed=True), default=None,
                     help=f"seconds before the jobs may run, 0 to {MAX_DELAY:.0f} (ten years)")
    enq.add_argument("--priority", type=_integer(MIN_PRIORITY, MAX_PRIORITY), default=None,
                     help=f"lower runs first, {MIN_PRIORITY} to {MAX_PRIORITY} (default: the task's declared priority)")
    enq.add_argument("--max-attempts", type=_integer(1, MAX_ATTEMPTS), default=None,
                     help=f"attempts before a job is dead, 1 to {MAX_ATTEMPTS} "
                          "(default: the task's declared number)")
    enq.add_argument("--unique-key", type=_unique_key, default=None, metavar="KEY",
                     help="add no job while another holds KEY: a live one, or one inside its --unique-for "
                          "period; prints the holder's id instead (1 to 255 characters)")
    enq.add_argument("--unique-for", type=_seconds(0.0, MAX_UNIQUE_FOR, low_allowed=False), default=None,
                     metavar="SECONDS",
                     help=f"the job holds its key for SECONDS from now, finished or not, > 0 and at most "
                          f"{MAX_UNIQUE_FOR} (a year); without --unique-key the key is the task name and "
                          "its arguments (default: the task's declared unique_for)")
    enq.add_argument("--block", type=_seconds(0.0, MAX_BLOCK, low_allowed=True), default=0.0, metavar="SECONDS",
                     help="while the queue is at its max_depth, wait up to SECONDS for room (from 0, the "
                          f"default: refuse at once, to {MAX_BLOCK:.0f}); still full: exit code {EXIT_FULL}")
    enq.add_argument("--ordering-key", type=_key("ordering key"), default=None, metavar="KEY",
                     help="jobs with one ordering key run one at a time, in the order they were added "
                          "(1 to 255 characters; a job takes one key)")
    enq.add_argument("--concurrency-key", type=_key("concurrency key"), default=None, metavar="KEY",
                     help="at most --concurrency-limit jobs with KEY are admitted at once, on every worker and node "
                          "(1 to 255 characters)")
    enq.add_argument("--concurrency-limit", type=_integer(1, MAX_CONCURRENCY_LIMIT), default=None, metavar="N",
                     help=f"the concurrency key's limit, 1 to {MAX_CONCURRENCY_LIMIT} (default: the task's "
                          "declared concurrency_limit, else 1); needs --concurrency-key")
    enq.add_argument("--on-conflict", choices=ON_CONFLICT, default=None,
                     help="when the concurrency key has its limit of admitted jobs: block (the job waits for a "
                          "slot) or discard (nothing is added); default: the task's declared rule, else block")
    enq.add_argument("--node-endpoint", type=_node_endpoint, default=None, metavar="ENDPOINT",
                     help="send the jobs through the node serving this producer endpoint (its [producers] "
                          "endpoint: ipc:///abs/path or tcp://127.0.0.1:PORT), on any journal; default: "
                          "through the node named in <journal>.node on SQLite, else straight into the journal")
    enq.set_defaults(handler=cmd_enqueue)

    status = add("status", "Print job counts per queue and state (the counts the journal keeps as jobs move: "
                 "never a pass over the jobs), with each queue's jobs finished per minute and mean queue wait "
                 "over the last minute; then what the node "
                 "serving it says over its private control socket: jobs succeeded and failed, in flight, "
                 "workers, jobs/s, and a journal write that has waited 1 s or more (a lock or the disk: the "
                 "node is then not idle, whatever the counts). With no node running, the counts and a line "
                 "saying so. Exit 0 whenever the journal could be read, whether or not a node runs or answers "
                 "(`actorq tree` exits 1 for a node that does not answer).",
                 "actorq status --config topology.toml\n"
                 "    ...the counts, then:\n"
                 "    node prof (pid 4242): 4,321 succeeded, 2 failed, in flight 3, workers 2, 118 jobs/s\n"
                 "      journal write waiting 3.2 s (a lock or the disk): jobs are not idle\n"
                 "  actorq status --config topology.toml --json\n"
                 '    {"queues": {"default": {"ready": 3, "succeeded": 4321}}, "paused": ["emails"], '
                 '"node": {"running": true, ...}}')
    status.add_argument("--json", action="store_true",
                        help='print JSON instead of a table: {"queues": {queue: {state: count}}, "paused": '
                             '[paused queue names], "last_minute": {queue: figures, as `queues list --json` '
                             'gives them}, "node": the node\'s status ({"running": false} if none runs)}')
    status.add_argument("--timeout", type=_seconds(0.0, MAX_WAIT, low_allowed=False), default=5.0,
                        help=f"seconds to wait for the node's answer, at most {MAX_WAIT:.0f} (default: 5)")
    status.set_defaults(handler=cmd_status)

    mig = add("migrate", "Create or upgrade the journal's schema (numbered migrations; safe to run from "
              "several hosts at once). A node refuses a schema it does not know.",
              "actorq migrate --config topology.toml")
    mig.set_defaults(handler=cmd_migrate)

    tree = add("tree", "Print the running node's supervision tree: each supervisor with its strategy, each "
               "child with its pid, state and restart count. Asks the node over its private control socket.",
               "actorq tree --config topology.toml")
    tree.add_argument("--json", action="store_true", help="print JSON instead of a tree")
    tree.add_argument("--timeout", type=_seconds(0.0, MAX_WAIT, low_allowed=False), default=5.0,
                      help=f"seconds to wait for the node, at most {MAX_WAIT:.0f} (default: 5)")
    tree.set_defaults(handler=cmd_tree)

    schedules = sub.add_parser("schedules", help="Cron schedules: list them with their last and next fire times.",
                               description="Cron schedules: list them with their last and next fire times.")
    schedules_sub = schedules.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = schedules_sub.add_parser(
        "list", help="List the schedules a node of this topology runs: those stored in the journal (added "
        "by the API or an earlier start), with the file's definitions for their names.",
        description="List the schedules a node of this topology runs: those stored in the journal (added by "
        "the API or an earlier start), with the file's definitions for their names; fire times in each "
        "schedule's timezone.", epilog="example:\n  actorq schedules list --config topology.toml --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    listing.add_argument("--config", "-c", required=True, metavar="FILE", help="the topology.toml to use")
    listing.add_argument("--json", action="store_true",
                         help='print JSON: {"schedules": [{name, cron, ..., last_fired, next_fire (Unix '
                              'seconds)}], "journal_problem": null or why the journal could not be read}')
    listing.set_defaults(handler=cmd_schedules)

    dash = add("dashboard", "Serve the web dashboard (docs/dashboard.md) on the journal, with or without a node "
               "running: the tree of the node serving it (if one runs), queues, jobs, leases, schedules; retry, "
               "cancel, pause and resume. A node serves it itself with [dashboard] bind.",
               "actorq dashboard --config topology.toml --bind 127.0.0.1:8642\n"
               "    actorq dashboard: serving sqlite:///jobs.db (synchronous=full) at http://127.0.0.1:8642/ "
               "(Ctrl-C stops)")
    dash.add_argument("--bind", type=_bind_flag, default=None, metavar="HOST:PORT",
                      help=f"where to serve (default: [dashboard] bind, else {DEFAULT_DASHBOARD_BIND}); beyond "
                           "loopback only with [dashboard] token or token_env set")
    dash.set_defaults(handler=cmd_dashboard)

    cli_jobs.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actorq`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:  # queues and jobs take it before or after their action
        _err(f"actorq {args.command} {args.action}: the following arguments are required: --config/-c "
             f"(see actorq {args.command} {args.action} --help)")
        return EXIT_CONFIG
    try:
        config = load_config(args.config)
        return int(args.handler(args, config))
    except ConfigError as exc:  # the topology file, or a task module it names (TaskModuleError)
        _err(f"actorq: {exc}")
        return EXIT_CONFIG
    except JournalError as exc:
        _err(f"actorq: {exc}")
        return EXIT_JOURNAL
    except TaskCheckInterrupted as exc:  # nothing wrong is known: a script may simply run it again
        _err(f"actorq: {exc}")
        return EXIT_RETRY
    except (TypeError, ValueError) as exc:
        if args.command not in ("enqueue", "queues", "jobs"):
            raise
        _err(f"actorq {args.command}: {exc}")
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
