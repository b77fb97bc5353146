"""The operator's commands of ``actorq``: ``jobs list|show|retry|cancel|prune``, ``queues
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
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import msgpack

from actorq.errors import JournalError
from actorq.jobs.client import Client
from actorq.journal.backends import open_journal
from actorq.journal.protocol import (
    MAX_LIST_LIMIT, TERMINAL_STATES, WAITING_STATES, JobDetail, JobState, JobSummary, Journal,
)
from actorq.node.config import Config
from actorq.node.constants import EXIT_CONFIG, EXIT_FAILURE, EXIT_JOURNAL, EXIT_OK
from actorq.node.control import NodeNotRunning, read_node_file
from actorq.node.status import ask_status

__all__ = ["cmd_health", "cmd_jobs_cancel", "cmd_jobs_list", "cmd_jobs_retry", "cmd_jobs_show",
           "cmd_queues_clear", "cmd_queues_list", "safe_text"]

DEFAULT_LIMIT = 50  # jobs per page of `actorq jobs list`
BATCH = 1_000  # jobs per transaction of `retry --all-dead` and `queues clear`
MAX_BATCH = 100_000
MAX_SHOWN = 2_000  # characters of a job's decoded arguments or result that `jobs show` prints
MAX_PAYLOAD = 16 * 1024 * 1024  # bytes of msgpack `jobs show` decodes at most (a journal row is never larger)
ERROR_COLUMN = 60  # characters of the last error in a listing's row
CURSOR_CHARS = 255  # a cursor is a job id


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


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
def _summary_json(job: JobSummary) -> dict[str, Any]:
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
        _out(json.dumps({"jobs": [_summary_json(j) for j in jobs], "next": cursor}, sort_keys=True))
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
    """`value` as JSON can carry it: bytes as ``{"bytes": hex}``, other unknown types by repr."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _detail_json(job: JobDetail) -> dict[str, Any]:
    payload, payload_problem = _decode(job.payload)
    args, kwargs = (payload if isinstance(payload, list) and len(payload) == 2 else (payload, None))
    result, result_problem = _decode(job.result)
    return {"id": job.id, "queue": job.queue, "task": job.task, "state": job.state.value,
            "args": _jsonable(args), "kwargs": _jsonable(kwargs), "payload_problem": payload_problem,
            "result": _jsonable(result), "result_kept": job.result is not None, "result_problem": result_problem,
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
    info = _detail_json(job)
    if args.json:
        _out(json.dumps(info, sort_keys=True))
        return EXIT_OK
    now = time.time()

    def shown(value: Any) -> str:
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
        unknown = 0
        for job_id in args.job_ids:
            if journal.retry_dead(job_id):
                _out(f"job {safe_text(job_id)} retried: ready, with fresh attempts")
                continue
            info = journal.get(job_id)
            if info is None:
                _err(f"{prog}: no job {safe_text(job_id)!r} in journal {config.journal.describe()}")
                unknown += 1
            else:
                _out(f"job {safe_text(job_id)} is {info.state.value}, not dead or failed: left as it is")
    return EXIT_CONFIG if unknown else EXIT_OK


def cmd_jobs_cancel(args: argparse.Namespace, config: Config) -> int:
    """``actorq jobs cancel ID...``: cancel jobs that have not finished (a running one is stopped)."""
    unknown = 0
    with Client.from_config(config.journal, create=False) as client:
        for job_id in args.job_ids:
            if client.cancel(job_id):
                _out(f"job {safe_text(job_id)} cancelled")
                continue
            info = client.get(job_id)
            if info is None:
                _err(f"actorq jobs cancel: no job {safe_text(job_id)!r} in journal {config.journal.describe()}")
                unknown += 1
            else:
                _out(f"job {safe_text(job_id)} had already finished ({info.state}): nothing to cancel")
    return EXIT_CONFIG if unknown else EXIT_OK


# -- queues ----------------------------------------------------------------------------------------
QUEUE_STATES = [s for s in JobState if s not in TERMINAL_STATES] + [s for s in JobState if s in TERMINAL_STATES]


def cmd_queues_list(args: argparse.Namespace, config: Config) -> int:
    """``actorq queues list``: each queue's jobs per state, its oldest ready job's age, paused or not."""
    with _journal(config) as journal:
        counts = journal.counts()
        paused = journal.paused_queues()
        oldest = journal.oldest_ready()
    now = time.time()
    names = sorted(set(counts) | set(paused))
    entries = {name: {"paused": name in paused, "ready": counts.get(name, {}).get("ready", 0),
                      "states": counts.get(name, {}),
                      "oldest_ready_age": round(max(now - oldest[name], 0.0), 3) if name in oldest else None}
               for name in names}
    if args.json:
        _out(json.dumps({"queues": entries}, sort_keys=True))
        return EXIT_OK
    if not names:
        _out("(no queues)")
        return EXIT_OK
    rows = [[safe_text(name), "paused" if e["paused"] else "running",
             *(f"{e['states'].get(s.value, 0):,}" for s in QUEUE_STATES),
             _ago(oldest.get(name), now)] for name, e in entries.items()]
    _table(["queue", "state", *(s.value for s in QUEUE_STATES), "oldest ready"], rows,
           right=set(range(2, 3 + len(QUEUE_STATES))))
    return EXIT_OK


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


def limit_flag(text: str) -> int:
    """An argparse ``type``: a page size, 1 to `MAX_LIST_LIMIT`."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIST_LIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {MAX_LIST_LIMIT}, got {text!r}")
    return value
