"""The operator's commands of ``actorq`` (their parsers and handlers): ``jobs list|show|retry|cancel|prune``, ``queues
list|pause|resume|clear`` and ``health``.

Each reads or changes the journal named by the topology file, with or without a node
running (cancel goes through the node when one serves the journal, so a running attempt
is stopped where it runs). Every listing is a range of an index (see
`actorq.journal.protocol.Journal.list_jobs`): a page costs the same at ten jobs or ten
million. Text that came from a job (its arguments, errors, tracebacks, names) is printed
with control characters escaped, so a hostile job cannot drive the operator's terminal.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import msgpack

from actorq.errors import JournalError
from actorq.jobs.client import Client
from actorq.journal.backends import open_journal
from actorq.journal.protocol import (
    LIVE_STATES, MAX_LIST_LIMIT, TERMINAL_STATES, WAITING_STATES, JobDetail, JobState, JobSummary, Journal,
)
from actorq.node.cli_flags import (
    err as _err, out as _out,
    FINAL_STATES, MAX_PRUNE_BATCH, MAX_WAIT, PRUNE_BATCH, age_flag, duration_text, final_state_flag, integer_flag,
    job_id_flag, queue_name_flag, seconds_flag,
)
from actorq.node.config import Config
from actorq.node.constants import EXIT_CONFIG, EXIT_FAILURE, EXIT_JOURNAL, EXIT_OK
from actorq.node.control import NodeNotRunning, read_node_file
from actorq.node.status import ask_status
from actorq.node.views import queue_entries

__all__ = ["add_parsers", "cmd_health", "cmd_jobs_cancel", "cmd_jobs_list", "cmd_jobs_prune", "cmd_jobs_retry",
           "cmd_jobs_show", "cmd_queues_clear", "cmd_queues_list", "cmd_queues_pause", "detail_json", "safe_text",
           "summary_json"]

DEFAULT_LIMIT = 50  # jobs per page of `actorq jobs list`
BATCH = 1_000  # jobs per transaction of `retry --all-dead` and `queues clear`
MAX_BATCH = 100_000
MAX_SHOWN = 2_000  # characters of a job's decoded arguments or result that `jobs show` prints
MAX_PAYLOAD = 16 * 1024 * 1024  # bytes of msgpack `jobs show` decodes at most (a journal row is never larger)
ERROR_COLUMN = 60  # characters of the last error in a listing's row
CURSOR_CHARS = 255  # a cursor is a job id


def safe_text(text: str, *, keep_lines: bool = False) -> str:
    """`text` fit for a terminal: control characters (ANSI escapes, carriage returns, NUL...) as
    ``\\xNN`` / ``\\uNNNN`` escapes; newlines and tabs kept only if `keep_lines`."""
    out = []
    for ch in text:
        code = ord(ch)
        if keep_lines and ch in "\n\t":
            out.append(ch)
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or ch in "\u2028\u2029" or 0xD800 <= code < 0xE000:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(seconds: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC (seconds), or None."""
    if seconds is None:
        return None
    if not math.isfinite(seconds):
        return "never" if seconds > 0 else "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _ago(seconds: float | None, now: float) -> str:
    """How long ago (or ahead) `seconds` is, short: ``42s``, ``5m``, ``3h``, ``2d``; ``in 5m``."""
    if seconds is None:
        return "-"
    delta = now - seconds
    ahead, delta = delta < 0, abs(delta)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if delta >= size:
            text = f"{delta // size:.0f}{unit}"
            break
    else:
        text = f"{delta:.0f}s"
    return f"in {text}" if ahead else text


@contextmanager
def _journal(config: Config) -> Iterator[Journal]:
    cfg = config.journal
    journal = open_journal(cfg.resolved_url, schema=cfg.schema, busy_timeout=cfg.busy_timeout,
                           connect_retry_for=cfg.connect_retry_for, create=False)  # reading never creates one
    try:
        yield journal
    finally:
        journal.close()


def _table(header: list[str], rows: list[list[str]], right: frozenset[int] | set[int] = frozenset()) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    for line in [header, *rows]:
        _out("  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                       for i, (c, w) in enumerate(zip(line, widths))).rstrip())


# -- flags ------------------------------------------------------------------------------------------
def state_flag(text: str) -> JobState:
    """An argparse ``type``: a job state by name."""
    try:
        return JobState(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a state, one of {', '.join(s.value for s in JobState)}; "
                                         f"got {text[:60]!r}") from None


def waiting_state_flag(text: str) -> JobState:
    """An argparse ``type``: a waiting state (what `queues clear` deletes)."""
    if text not in {s.value for s in WAITING_STATES}:
        raise argparse.ArgumentTypeError(f"expected a waiting state, one of {', '.join(s.value for s in WAITING_STATES)}"
                                         f" (a leased job is its worker's: cancel it); got {text[:60]!r}")
    return JobState(text)


def name_flag(what: str) -> Callable[[str], str]:
    """An argparse ``type``: a non-empty name of at most 255 characters (a queue, a task, a cursor)."""
    def parse(text: str) -> str:
        if not text or len(text) > CURSOR_CHARS:
            raise argparse.ArgumentTypeError(f"expected {what} of 1 to {CURSOR_CHARS} characters, got {len(text)}")
        return text
    return parse


# -- jobs list ---------------------------------------------------------------------------------------
def summary_json(job: JobSummary) -> dict[str, Any]:
    """One listed job as ``jobs list --json`` prints it (and the dashboard serves it)."""
    return {"id": job.id, "queue": job.queue, "task": job.task, "state": job.state.value,
            "priority": job.priority, "attempts": job.attempts, "max_attempts": job.max_attempts,
            "run_at": job.run_at, "created_at": job.created_at, "finished_at": job.finished_at,
            "lease_owner": job.lease_owner, "last_error": job.last_error}


def cmd_jobs_list(args: argparse.Namespace, config: Config) -> int:
    """``actorq jobs list``: one keyset page of jobs in id order, and the cursor of the next."""
    with _journal(config) as journal:
        jobs = journal.list_jobs(state=args.state, queue=args.queue, task=args.task, after=args.after,
                                 limit=args.limit)
    cursor = jobs[-1].id if len(jobs) == args.limit else None
    if args.json:
        _out(json.dumps({"jobs": [summary_json(j) for j in jobs], "next": cursor}, sort_keys=True))
        return EXIT_OK
    if not jobs:
        _out("(no jobs)" if args.after is None else "(no more jobs)")
        return EXIT_OK
    now = time.time()
    rows = [[safe_text(j.id), j.state.value, safe_text(_cut(j.queue, 24)), safe_text(_cut(j.task, 32)),
             f"{j.attempts}/{j.max_attempts}", _ago(j.created_at, now),
             _ago(j.finished_at, now) if j.finished_at is not None else _ago(j.run_at, now),
             safe_text(_cut(j.last_error or "", ERROR_COLUMN))] for j in jobs]
    _table(["id", "state", "queue", "task", "tries", "created", "run/done", "last error"], rows, right={4})
    if cursor is not None:
        _out(f"next page: --after {cursor}")
    return EXIT_OK


# -- jobs show ---------------------------------------------------------------------------------------
def _decode(data: bytes | None) -> tuple[Any, str | None]:
    """msgpack `data` decoded with bounds, and None; or (None, why it could not be)."""
    if data is None:
        return None, None
    if len(data) > MAX_PAYLOAD:
        return None, f"{len(data):,} bytes: not decoded"
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False), None
    except Exception as exc:  # any malformed bytes: say so, never a traceback
        return None, f"not msgpack ({type(exc).__name__}), {len(data):,} bytes: {data[:32].hex()}"


def _jsonable(value: Any) -> Any:
    """`value` as JSON can carry it: bytes as ``{"bytes": hex}``, a float that is not finite and
    other unknown types by repr. Raises RecursionError for a value nested past Python's limit."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _plain(value: Any, problem: str | None) -> tuple[Any, str | None]:
    """`value` made JSON-able (`_jsonable`), or None and why not."""
    if problem is not None:
        return None, problem
    try:
        return _jsonable(value), None
    except RecursionError:
        return None, "nested too deeply to show"


def detail_json(job: JobDetail) -> dict[str, Any]:
    """One job as ``jobs show --json`` prints it (and the dashboard serves it): arguments and result
    decoded with bounds, every attempt's error, the lease."""
    payload, payload_problem = _plain(*_decode(job.payload))
    args, kwargs = (payload if isinstance(payload, list) and len(payload) == 2 else (payload, None))
    result, result_problem = _plain(*_decode(job.result))
    return {"id": job.id, "queue": job.queue, "task": job.task, "state": job.state.value,
            "args": args, "kwargs": kwargs, "payload_problem": payload_problem,
            "result": result, "result_kept": job.result is not None, "result_problem": result_problem,
            "result_expires": job.result_expires, "priority": job.priority, "attempts": job.attempts,
            "max_attempts": job.max_attempts, "run_at": job.run_at, "created_at": job.created_at,
            "finished_at": job.finished_at, "timeout": job.timeout, "unique_key": job.unique_key,
            "unique_until": job.unique_until,
            "lease": None if job.lease_owner is None else {
                "owner": job.lease_owner, "id": job.lease_id,
                "expires": job.lease_expires if job.lease_expires is None or math.isfinite(job.lease_expires)
                else None},
            "last_error": job.last_error, "last_traceback": job.last_traceback,
            "errors": [{"attempt": e.attempt, "at": e.at, "error": e.error} for e in job.errors]}


def cmd_jobs_show(args: argparse.Namespace, config: Config) -> int:
    """``actorq jobs show ID``: everything the journal keeps of one job."""
    with _journal(config) as journal:
        job = journal.inspect(args.job_id)
    if job is None:
        _err(f"actorq jobs show: no job {safe_text(args.job_id)!r} in journal {config.journal.describe()}")
        return EXIT_CONFIG
    info = detail_json(job)
    if args.json:
        _out(json.dumps(info, sort_keys=True))
        return EXIT_OK
    now = time.time()

    def shown(value: Any) -> str:  # a JSON-able value (`_plain`): its repr cannot recurse past the limit
        return safe_text(_cut(repr(value), MAX_SHOWN))

    _out(f"job {safe_text(job.id)}")
    _out(f"  state     {job.state.value}")
    _out(f"  task      {safe_text(job.task)}   queue {safe_text(job.queue)}   priority {job.priority}")
    if info["payload_problem"]:
        _out(f"  payload   {info['payload_problem']}")
    else:
        _out(f"  args      {shown(info['args'])}")
        _out(f"  kwargs    {shown(info['kwargs'])}")
    _out(f"  attempts  {job.attempts} of {job.max_attempts}"
         + (f"   timeout {job.timeout:g} s" if job.timeout is not None else ""))
    _out(f"  created   {_when(job.created_at)} ({_ago(job.created_at, now)} ago)")
    if job.finished_at is not None:
        _out(f"  finished  {_when(job.finished_at)} ({_ago(job.finished_at, now)} ago)")
    else:
        _out(f"  run at    {_when(job.run_at)}")
    if job.lease_owner is not None:
        expires = "never" if job.lease_expires is None or not math.isfinite(job.lease_expires) \
            else f"{_when(job.lease_expires)} ({_ago(job.lease_expires, now)})"
        _out(f"  lease     {safe_text(job.lease_owner)} (lease {job.lease_id}), expires {expires}")
    if job.unique_key is not None:
        _out(f"  unique    {safe_text(job.unique_key)}"
             + (f" until {_when(job.unique_until)}" if job.unique_until is not None else ""))
    if job.state is JobState.SUCCEEDED:
        if job.result is None:
            _out("  result    (none kept)")
        elif info["result_problem"]:
            _out(f"  result    {info['result_problem']}")
        else:
            _out(f"  result    {shown(info['result'])}  (kept until {_when(job.result_expires)})")
    _out(f"  errors    {len(job.errors) or 'none'}")
    for error in job.errors:
        _out(f"    attempt {error.attempt} at {_when(error.at)}: {safe_text(error.error)}")
    if job.last_traceback:
        _out("  last traceback:")
        for line in safe_text(job.last_traceback, keep_lines=True).splitlines():
            _out(f"    {line}")
    return EXIT_OK


# -- jobs retry / cancel -------------------------------------------------------------------------------
class _Progress:
    """One line on stderr at the first full batch, then at most once a second."""

    def __init__(self, prog: str, verb: str) -> None:
        self.prog, self.verb = prog, verb
        self.last: float | None = None

    def tick(self, done: int) -> None:
        now = time.monotonic()
        if self.last is None or now - self.last >= 1.0:
            _err(f"{self.prog}: {done:,} {self.verb} so far")
            self.last = now


def cmd_jobs_retry(args: argparse.Namespace, config: Config) -> int:
    """``actorq jobs retry ID...`` or ``--all-dead``: give dead or failed jobs fresh attempts."""
    prog = "actorq jobs retry"
    if bool(args.job_ids) == bool(args.all_dead):
        _err(f"{prog}: expected job ids or --all-dead, not {'both' if args.job_ids else 'neither'} "
             "(see actorq jobs retry --help)")
        return EXIT_CONFIG
    if args.batch is not None and not args.all_dead:
        _err(f"{prog}: --batch is for --all-dead (see actorq jobs retry --help)")
        return EXIT_CONFIG
    with _journal(config) as journal:
        if args.all_dead:
            batch, retried, cursor = args.batch or BATCH, 0, None
            progress = _Progress(prog, "retried")
            while True:
                page = journal.list_jobs(state=JobState.DEAD, queue=args.queue, after=cursor, limit=batch)
                if not page:
                    break
                with journal.transaction():
                    retried += sum(journal.retry_dead(job.id) for job in page)
                cursor = page[-1].id
                if len(page) < batch:
                    break
                progress.tick(retried)
            where = f" of queue {safe_text(args.queue)!r}" if args.queue else ""
            _out(f"retried {retried:,} dead job{'' if retried == 1 else 's'}{where}: ready again, with fresh attempts")
            return EXIT_OK
        if args.queue is not None:
            _err(f"{prog}: --queue is for --all-dead (see actorq jobs retry --help)")
            return EXIT_CONFIG
        return _each_job(prog, config, args.job_ids, journal.retry_dead, journal.get,
                         "retried: ready, with fresh attempts",
                         lambda info: f"is {info.state.value}, not dead or failed: left as it is")


def cmd_jobs_cancel(args: argparse.Namespace, config: Config) -> int:
    """``actorq jobs cancel ID...``: cancel jobs that have not finished (a running one is stopped)."""
    with Client.from_config(config.journal, create=False) as client:
        return _each_job("actorq jobs cancel", config, args.job_ids, client.cancel, client.get, "cancelled",
                         lambda info: f"had already finished ({info.state}): nothing to cancel")


def _each_job(prog: str, config: Config, job_ids: list[str], act: Callable[[str], bool],
              get: Callable[[str], Any], done: str, left: Callable[[Any], str]) -> int:
    """Apply `act` to each job id and say per job what came of it: `done`, or (act refused)
    `left` of the job as `get` reads it, or that no such job exists (exit 2 at the end)."""
    unknown = 0
    for job_id in job_ids:
        if act(job_id):
            _out(f"job {safe_text(job_id)} {done}")
            continue
        info = get(job_id)
        if info is None:
            _err(f"{prog}: no job {safe_text(job_id)!r} in journal {config.journal.describe()}")
            unknown += 1
        else:
            _out(f"job {safe_text(job_id)} {left(info)}")
    return EXIT_CONFIG if unknown else EXIT_OK


# -- queues ----------------------------------------------------------------------------------------
QUEUE_STATES = [*LIVE_STATES, *(s for s in JobState if s in TERMINAL_STATES)]


def cmd_queues_list(args: argparse.Namespace, config: Config) -> int:
    """``actorq queues list``: each queue's jobs per state, its oldest ready job's age, paused or not."""
    now = time.time()
    with _journal(config) as journal:
        entries = queue_entries(journal, now)
    names = list(entries)
    if args.json:
        _out(json.dumps({"queues": entries}, sort_keys=True))
        return EXIT_OK
    if not names:
        _out("(no queues)")
        return EXIT_OK
    rows = [[safe_text(name), "paused" if e["paused"] else "running",
             *(f"{e['states'].get(s.value, 0):,}" for s in QUEUE_STATES),
             _ago(None if e["oldest_ready_age"] is None else now - e["oldest_ready_age"], now),
             *minute_columns(e["last_minute"])]
            for name, e in entries.items()]
    _table(["queue", "state", *(s.value for s in QUEUE_STATES), "oldest ready", "done/min", "failed/min",
            "wait avg", "wait max"], rows, right=set(range(2, 7 + len(QUEUE_STATES))))
    return EXIT_OK


def minute_columns(figures: dict[str, object]) -> list[str]:
    """A queue's last minute as table cells: finished and failed per minute, mean and longest wait."""
    seconds = float(figures["seconds"])  # type: ignore[arg-type]
    per_minute = [60 * float(figures[k]) / seconds if seconds > 0 else 0.0  # type: ignore[arg-type]
                  for k in ("finished", "failed")]
    waits = [_seconds(figures[k]) for k in ("wait_mean", "wait_max")]  # type: ignore[arg-type]
    return [f"{n:,.0f}" if n >= 10 or n == 0 else f"{n:.1f}" for n in per_minute] + waits


def _seconds(value: float | None) -> str:
    """A duration, short: ``-`` (none), ``12ms``, ``3.4s``, ``5m``, ``2h``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    return f"{value / 60:.0f}m" if value < 3600 else f"{value / 3600:.0f}h"


def cmd_queues_clear(args: argparse.Namespace, config: Config) -> int:
    """``actorq queues clear NAME --yes``: delete a queue's waiting jobs in batches."""
    prog = "actorq queues clear"
    states = [s for s in WAITING_STATES if s in (args.states or WAITING_STATES)]
    names = ", ".join(s.value for s in states)
    if not args.yes:
        _err(f"{prog}: this deletes every {names} job of queue {safe_text(args.name)!r} for good; "
             "add --yes to do it")
        return EXIT_CONFIG
    batch, removed = args.batch or BATCH, 0
    progress = _Progress(prog, "deleted")
    with _journal(config) as journal:
        while True:
            count = journal.clear_queue(args.name, states, batch)
            removed += count
            if count < batch:
                break
            progress.tick(removed)
    _out(f"cleared queue {safe_text(args.name)!r}: deleted {removed:,} job{'' if removed == 1 else 's'} ({names})")
    return EXIT_OK


# -- health ----------------------------------------------------------------------------------------
def cmd_health(args: argparse.Namespace, config: Config) -> int:
    """``actorq health``: exit 0 when the node answers on its control socket and the journal
    answers a trivial query; else one line why, exit 1 (the node) or 3 (the journal)."""
    try:
        info = read_node_file(config.node_file)
        control = info.get("control")
        if not isinstance(control, str):
            raise NodeNotRunning(f"{config.node_file} names no control endpoint")
        status = ask_status(control, args.timeout)
    except NodeNotRunning as exc:
        _err(f"unhealthy: node: {exc}")
        return EXIT_FAILURE
    if status["journal"]["error"]:
        _err(f"unhealthy: journal: the node's journal writes fail: {safe_text(status['journal']['error'])}")
        return EXIT_JOURNAL
    try:
        with _journal(config) as journal:
            journal.paused_queues()  # a one-row-at-most read: the journal answers
    except JournalError as exc:
        _err(f"unhealthy: journal: {safe_text(str(exc))}")
        return EXIT_JOURNAL
    _out(f"ok: node {safe_text(status['name'])} (pid {status['pid']}) {status['activity']}; "
         f"journal {config.journal.describe()} answers")
    return EXIT_OK


def cmd_jobs_prune(args: argparse.Namespace, config: Config) -> int:
    """``actorq jobs prune --older-than AGE``: delete the finished jobs of `args.states` (all final states by default) that finished more
    than `args.older_than` seconds ago, in transactions of `args.batch` jobs, straight in the journal
    (a node may run beside it: it waits for one batch at most)."""
    states = [s for s in FINAL_STATES if s in (args.states or FINAL_STATES)]
    ages = {state: args.older_than for state in states}
    batch = args.batch or PRUNE_BATCH
    removed, reported = 0, None
    with _journal(config) as journal:
        while True:
            count = journal.prune(ages, batch)
            removed += count
            if count < batch:
                break
            now = time.monotonic()
            if reported is None or now - reported >= 1.0:  # the first full batch, then once a second
                _err(f"actorq jobs prune: {removed:,} removed so far")
                reported = now
    names = ", ".join(s.value for s in states)
    _out(f"pruned {removed:,} job{'' if removed == 1 else 's'} ({names}) that finished more than "
         f"{duration_text(args.older_than)} ago")
    return EXIT_OK


def cmd_queues_pause(args: argparse.Namespace, config: Config) -> int:
    """``actorq queues pause NAME`` / ``resume NAME``: the journal's paused queues."""
    with Client.from_config(config.journal) as client:
        if args.action == "pause":
            changed = client.pause_queue(args.name)
            _out(f"queue {args.name!r} {'paused' if changed else 'was already paused'}: no node leases its jobs; "
                 "running jobs finish")
        else:
            changed = client.resume_queue(args.name)
            _out(f"queue {args.name!r} {'resumed' if changed else 'was not paused'}")
    return EXIT_OK


def limit_flag(text: str) -> int:
    """An argparse ``type``: a page size, 1 to `MAX_LIST_LIMIT`."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIST_LIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {MAX_LIST_LIMIT}, got {text!r}")
    return value


def add_parsers(sub: Any) -> None:
    """Add the ``queues``, ``jobs`` and ``health`` commands to `sub`, the ``actorq`` parser's subparsers."""
    def group(name: str, help_text: str, examples: str) -> Any:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"examples:\n{examples}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        # --config before the action (as the other commands take it) or after it
        p.add_argument("--config", "-c", metavar="FILE", default=None, help="the topology.toml to use")
        return p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(actions: Any, name: str, help_text: str, example: str, handler: Callable[..., int]) -> Any:
        p = actions.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="the topology.toml to use")
        p.set_defaults(handler=handler)
        return p

    def json_flag(p: Any, shape: str) -> None:
        p.add_argument("--json", action="store_true", help=f"print JSON instead of a table: {shape}")

    batch_help = f"jobs per transaction, 1 to {MAX_BATCH:,} (default {BATCH:,})"

    queues = group("queues", "The queues: list them with their jobs per state, pause or resume one on every node "
                   "serving the journal, or clear one's waiting jobs.",
                   "  actorq queues --config topology.toml list\n"
                   "  actorq queues --config topology.toml pause emails\n"
                   "  actorq queues --config topology.toml clear emails --yes")
    listing = action(queues, "list", "List each queue: running or paused, its jobs per state, how long its "
                     "oldest ready job has waited, and over the last minute its jobs finished and failed per "
                     "minute and the mean and longest queue wait of its leases (from due to leased). Reads the "
                     "counts and per-queue figures the journal keeps as jobs move, and of the jobs only the "
                     "leased ones (at most those in flight) and each queue's oldest ready one: never a pass "
                     "over the jobs table, however many it holds.",
                     "actorq queues list --config topology.toml\n"
                     "    queue    state    scheduled  ready  leased ... succeeded ...  oldest ready  done/min"
                     "  failed/min  wait avg  wait max\n"
                     "    emails   running          0     12       3 ...     4,321 ...  3s                 840"
                     "           2     1.2s      3.4s",
                     cmd_queues_list)
    json_flag(listing, '{"queues": {name: {"paused": bool, "ready": count, "states": {state: count}, '
                       '"oldest_ready_age": seconds or null, "last_minute": {"seconds": covered, '
                       '"finished": count, "failed": count, "leased": count, "per_second": finished per second, '
                       '"wait_mean": seconds or null, "wait_max": seconds or null}}}}')
    for verb, text in (("pause", "Pause a queue on every node serving the journal: it leases nothing (the pause "
                                 "is kept in the journal, so restarts keep it); running jobs finish, and jobs can "
                                 "still be enqueued into it."),
                       ("resume", "Let a paused queue lease again.")):
        p = action(queues, verb, text, f"actorq queues {verb} emails --config topology.toml\n"
                   + ("    queue 'emails' paused: no node leases its jobs; running jobs finish" if verb == "pause"
                      else "    queue 'emails' resumed"), cmd_queues_pause)
        p.add_argument("name", type=queue_name_flag, metavar="NAME", help="the queue")
    clear = action(queues, "clear", "Delete a queue's waiting jobs (scheduled, ready and retry; leased jobs are "
                   "their workers': cancel them) with their errors, in transactions of --batch jobs, with or "
                   "without a node running. Asks for --yes.",
                   "actorq queues clear emails --state ready --yes --config topology.toml\n"
                   "    cleared queue 'emails': deleted 12,000 jobs (ready)", cmd_queues_clear)
    clear.add_argument("name", type=queue_name_flag, metavar="NAME", help="the queue")
    clear.add_argument("--state", dest="states", type=waiting_state_flag, action="extend", nargs="+",
                       default=None, metavar="S", help="only jobs in these states (scheduled, ready, retry; "
                                                       "default: all three)")
    clear.add_argument("--yes", action="store_true", help="yes, delete them for good")
    clear.add_argument("--batch", type=integer_flag(1, MAX_BATCH), default=None, metavar="N", help=batch_help)

    jobs = group("jobs", "The jobs: list them a page at a time, show one with its attempts and errors, retry "
                 "dead ones, cancel unfinished ones, prune finished ones.",
                 "  actorq jobs --config topology.toml list --state dead\n"
                 "  actorq jobs --config topology.toml show 01a233a1f9af00003da4ce450d08aa0c\n"
                 "  actorq jobs --config topology.toml retry --all-dead\n"
                 "  actorq jobs --config topology.toml cancel 01a233a1f9af00003da4ce450d08aa0c\n"
                 "  actorq jobs --config topology.toml prune --older-than 7d --state succeeded cancelled")
    listing = action(jobs, "list", "List jobs in id order (oldest first), a page at a time: each page ends with "
                     "the --after cursor of the next. Each page reads a range of an index, never the jobs table, "
                     "so a page costs the same however many jobs the journal holds.",
                     "actorq jobs list --state dead --queue emails --limit 20 --config topology.toml\n"
                     "    id                                state  queue   task         tries  created  run/done  last error\n"
                     "    01a233a1f9af00003da4ce450d08aa0c  dead   emails  mail.send    5/5    2h       1h        SMTPError: 550\n"
                     "    next page: --after 01a233a1f9af00003da4ce450d08aa0c", cmd_jobs_list)
    listing.add_argument("--state", type=state_flag, default=None, metavar="S",
                         help="only jobs in state S: " + ", ".join(s.value for s in JobState))
    listing.add_argument("--queue", type=name_flag("a queue name"), default=None, metavar="Q",
                         help="only jobs of queue Q")
    listing.add_argument("--task", type=name_flag("a task name"), default=None, metavar="T",
                         help="only jobs of task T (filters the rows the state and queue select)")
    listing.add_argument("--limit", type=limit_flag, default=DEFAULT_LIMIT, metavar="N",
                         help=f"jobs per page, 1 to {MAX_LIST_LIMIT:,} (default {DEFAULT_LIMIT})")
    listing.add_argument("--after", type=name_flag("a cursor (a job id)"), default=None, metavar="CURSOR",
                         help="start after this job id: the cursor the previous page printed")
    json_flag(listing, '{"jobs": [{id, queue, task, state, priority, attempts, max_attempts, run_at, '
                       'created_at, finished_at (Unix seconds), lease_owner, last_error}], "next": cursor or null}')
    show = action(jobs, "show", "Show one job: its arguments (decoded from msgpack; control characters escaped), "
                  "result, every attempt's error, the last traceback, its lease's owner and expiry, and its times.",
                  "actorq jobs show 01a233a1f9af00003da4ce450d08aa0c --config topology.toml", cmd_jobs_show)
    show.add_argument("job_id", type=job_id_flag, metavar="ID", help="the job's id")
    json_flag(show, "every field, arguments and result as JSON values (bytes as {\"bytes\": hex})")
    retry = action(jobs, "retry", "Retry dead or failed jobs by hand: each is made ready with a fresh set of "
                   "attempts, its error history kept. --all-dead retries every dead job (of --queue), in "
                   "transactions of --batch jobs, with a progress line.",
                   "actorq jobs retry --all-dead --queue emails --config topology.toml\n"
                   "    retried 1,204 dead jobs of queue 'emails': ready again, with fresh attempts",
                   cmd_jobs_retry)
    retry.add_argument("job_ids", nargs="*", type=job_id_flag, metavar="ID", help="the jobs' ids")
    retry.add_argument("--all-dead", action="store_true", help="every dead job (failed ones only by id)")
    retry.add_argument("--queue", type=queue_name_flag, default=None, metavar="Q", help="--all-dead: only queue Q's")
    retry.add_argument("--batch", type=integer_flag(1, MAX_BATCH), default=None, metavar="N", help=batch_help)
    cancel = action(jobs, "cancel", "Cancel jobs that have not finished: each ends cancelled at once, and a running "
                    "attempt's later answer is rejected (through the node serving the journal, it is stopped where "
                    "it runs). A job that had finished is left as it was, and said so; an unknown id exits 2.",
                    "actorq jobs cancel 01a233a1f9af00003da4ce450d08aa0c --config topology.toml\n"
                    "    job 01a233a1f9af00003da4ce450d08aa0c cancelled", cmd_jobs_cancel)
    cancel.add_argument("job_ids", nargs="+", type=job_id_flag, metavar="ID", help="the jobs' ids")
    prune = action(jobs, "prune", "Delete finished jobs (with their errors and results) that finished more than "
                   "AGE ago by the journal's clock, in transactions of --batch jobs, with or without a node running "
                   "(a node prunes by itself too: [journal] retain_succeeded and the others, docs/retention.md); "
                   "prints how many it removed.",
                   "actorq jobs prune --older-than 7d --state succeeded cancelled --config topology.toml\n"
                   "    pruned 120,000 jobs (succeeded, cancelled) that finished more than 7d ago", cmd_jobs_prune)
    prune.add_argument("--older-than", type=age_flag, required=True, metavar="AGE",
                       help='jobs that finished more than AGE ago: "30s", "10m", "12h", "7d" or seconds, '
                            "from 0 to 3650d")
    prune.add_argument("--state", dest="states", type=final_state_flag, action="extend", nargs="+", default=None,
                       metavar="S", help="only jobs in these final states (succeeded, cancelled, failed, dead; "
                                         "default: all four)")
    prune.add_argument("--batch", type=integer_flag(1, MAX_PRUNE_BATCH), default=None, metavar="N",
                       help=f"jobs deleted per transaction, 1 to {MAX_PRUNE_BATCH:,} (default {PRUNE_BATCH:,})")

    health = sub.add_parser(
        "health", help="For probes: exit 0 when the node answers on its control socket and the journal answers "
        "a query; else one line why on stderr, exit 1 (no node, or it does not answer) or 3 (the journal).",
        description="For probes (Kubernetes, systemd, a load balancer): exit 0 when the node of this topology "
        "answers on its private control socket and the journal answers a query; else one line why on stderr and "
        "exit 1 (no node running, or it does not answer within --timeout) or 3 (the journal cannot be read, or "
        "the node's journal writes fail).",
        epilog="example:\n  actorq health --config topology.toml\n"
               "    ok: node prof (pid 4242) idle; journal sqlite:///var/lib/app/jobs.db answers",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    health.add_argument("--config", "-c", required=True, metavar="FILE", help="the topology.toml to use")
    health.add_argument("--timeout", type=seconds_flag(0.0, MAX_WAIT, low_allowed=False), default=5.0,
                        help=f"seconds to wait for the node, at most {MAX_WAIT:.0f} (default: 5)")
    health.set_defaults(handler=cmd_health)
