"""The dispatcher ↔ worker protocol: each message a named, typed value, encoded beside its definition.

Every frame is a codec envelope ``[version, kind, body]`` (`actorq.transports.codec`).
A message is validated once, here, on the way in: `from_worker` and `from_dispatcher`
return typed values or raise `FrameError` (the receiver drops and counts it), so the
dispatcher and the worker never look inside a raw body.

::

    worker ──▶ dispatcher                            dispatcher ──▶ worker
    HELLO {owner, credits, queues, pid,              JOBS  [[id, lease, task, payload, attempt,
           held?: [[id, lease]...], reset?: true}          max_attempts, queue, valid_until,
                                                           timeout?]...]
    ACK   [[id, lease, end, error | None,            LEASES until  "your leases were renewed"
            (result, keep_for |
             traceback | None, delay?)?]...]
    HB    None   "I am alive"                        STOP  None   finish running jobs, exit
    BYE   None   "I hold nothing, I am leaving"      WHO   None   "I do not know you": HELLO with held
                                                     RESET None   "your leases were taken": drop all
                                                     CANCEL [id...] "these jobs were cancelled": stop them

An ACK item of an attempt that returned a value carries two more fields: the value's
msgpack (at most `result_budget` bytes) and the seconds to keep it; one of an attempt
that raised carries one more: its traceback text (cut to `MAX_ERROR_CHARS`, keeping
the end), or nil. An attempt that ended ``raised`` or ``timed_out`` may carry one more
after it: the seconds to wait before the next attempt (``delay``: a finite number from
0 to `MAX_RETRY_DELAY`, from `actorq.Retry` or the task's backoff function; an item
with a delay out of range is dropped as ``bad_delay``). The other items keep four
fields, so a task that returns None costs nothing.
An ACK item's ``end`` is how the attempt ended (`AttemptEnd`: ok, raised, permanent,
discarded, unrunnable, timed_out, cancelled) or ``release`` (never started: the attempt
is given back). What that end means for the job is decided by
`actorq.jobs.outcome.decide`, not by the worker.
Hot messages (JOBS, ACK) are arrays, not maps: a field name per job would cost
bytes and time on every job.

Lease deadlines. A worker never starts a job whose lease may have lapsed: the
journal may have given it to someone else (another node rescued it while this
one was paused). A JOBS item's ``valid_until`` and a LEASES message's ``until``
are readings of `lease_clock` up to which the dispatcher vouches for the lease:
a share of the lease's length from when it asked for the lease or its renewal,
so before the journal's expiry. Before starting a job the worker compares its
``valid_until`` with `lease_clock`; past it, the job is answered ``release``
unstarted (the journal fences that by lease id, or gives the attempt back). On
LEASES, jobs still within their deadline take the later one; a lapsed job keeps
its own, since its lease may have been taken before the renewal.

Every field has a bound (the ``MAX_*`` constants; an error text longer than its
bound is cut, anything else past one is refused), validation raises nothing but
`FrameError` whatever the input, and the sockets at both ends hold no more than
the credits call for (`pipe_messages`, `worker_frame_bytes`). Texts are made fit
for the wire and the journal where they are made (`clean_text`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, ClassVar, NamedTuple, Sequence, Union

from actorq.jobs.outcome import AttemptEnd
from actorq.jobs.retry import MAX_RETRY_DELAY
from actorq.journal.protocol import KeptResult, LeasedJob
from actorq.transports.codec import FrameError, decode, encode

__all__ = [
    "Ack", "AckItem", "Bye", "Cancel", "Heartbeat", "Hello", "JobMessage", "Jobs", "Leases", "Reset", "Stop", "Who",
    "ack_frame_bytes", "clean_text", "from_dispatcher", "from_worker", "lease_clock", "payload_budget",
    "pipe_messages", "result_budget", "traceback_text", "worker_frame_bytes",
]

logger = logging.getLogger(__name__)

# message kinds (stable across releases)
HELLO, ACK, BYE, HEARTBEAT = "hello", "ack", "bye", "hb"
JOBS, LEASES, STOP, WHO, RESET = "jobs", "leases", "stop", "who", "reset"
CANCEL = "cancel"
TO_DISPATCHER = frozenset({HELLO, ACK, BYE, HEARTBEAT})
TO_WORKER = frozenset({JOBS, LEASES, STOP, WHO, RESET, CANCEL})
KINDS = TO_DISPATCHER | TO_WORKER

RELEASE = "release"  # an ACK end: the job never started; its attempt is given back
WORKER_ENDS = frozenset({AttemptEnd.OK, AttemptEnd.RAISED, AttemptEnd.PERMANENT, AttemptEnd.DISCARDED,
                         AttemptEnd.UNRUNNABLE, AttemptEnd.TIMED_OUT, AttemptEnd.CANCELLED, RELEASE})
DELAY_ENDS = frozenset({AttemptEnd.RAISED, AttemptEnd.TIMED_OUT})  # the ends an ACK item may give a delay
# The bounds of every field. A HELLO's owner needs none of its own: it must equal its
# sender's ZeroMQ routing id, which is at most 255 bytes.
MAX_LEASE_ID = 2**63 - 1  # lease ids are positive SQLite INTEGERs (the journal draws 62 random bits)
MAX_CREDITS = 1_000_000
MAX_HELD = MAX_CREDITS  # a worker never holds more jobs than its credits
MAX_NAME_CHARS = 255  # a job id, task name or queue name; the dispatcher never sends a longer one
MAX_QUEUES = 256  # queue names in one HELLO
MAX_PID = 2**32
MAX_ERROR_CHARS = 2000  # an error text's bound, and a traceback's: keeps an ACK item without a result under 17 KB
_CUT = " ... (truncated)"  # ends a text cut to its bound
# Room kept in every frame for the envelope and the per-job fields around the payloads.
FRAME_OVERHEAD = 64 * 1024

# The clock of lease deadlines, read by the dispatcher and by its workers, which are its
# child processes on the same machine. Both Linux clocks below are system-wide (one value
# for every process of a time namespace, which children share: a deadline read in the
# dispatcher means the same in a worker) and keep running while a process is stopped
# (SIGSTOP). CLOCK_BOOTTIME also counts time the machine was suspended, while the
# journal's clock (PostgreSQL's, or the wall clock for SQLite) goes on and leases expire;
# CLOCK_MONOTONIC, where there is no boot clock, stands still then. A reading costs ~60 ns.
_LEASE_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def lease_clock() -> float:
    """Seconds on the clock of lease deadlines: the machine's boot clock (Linux), or its monotonic clock."""
    return time.clock_gettime(_LEASE_CLOCK)


def payload_budget(max_frame_bytes: int) -> int:
    """The most payload bytes one frame of `max_frame_bytes` carries (one job's, or a JOBS batch's)."""
    return max_frame_bytes - FRAME_OVERHEAD


# -- what each socket holds ----------------------------------------------------------------
# ZeroMQ bounds a pipe in messages (the high-water mark), not bytes, so what one peer can
# make the other end hold is HWM x the largest frame it accepts (ZMQ_MAXMSGSIZE; a peer
# sending a longer frame is disconnected). Both bounds follow from the credits: a worker
# holds at most `capacity` (slots + prefetch) jobs, every JOBS frame carries one or more of
# them and every ACK frame answers one or more, so neither direction ever has more than
# `capacity` such frames unread, plus signals: HELLO, BYE, STOP, WHO/RESET (at most once a
# second), LEASES (one per renewal, every third of the lease timeout) and the heartbeats
# sent while the dispatcher was busy.
#
# With the default capacity of 32 (16 slots + 16 prefetch), each pipe holds 288 messages
# (was 100,000). Towards the dispatcher a frame is at most ~1.1 MiB (an ACK batch is split
# at 1 MiB; a HELLO naming 32 held jobs and 256 queues of the longest names is ~300 KB), so
# one peer, flooding, makes the dispatcher hold at most ~300 MiB with frames of the largest
# size and ~30 KB with small ones (was 100,000 x 16 MiB; measured: a peer offering 625 MiB
# of 64 KiB frames to a stalled dispatcher made it hold 626 MiB, now 17 MiB). Towards a
# worker a frame may be a full JOBS frame (max_frame_bytes): 32 of them are what a real
# dispatcher may send.
#
# The slack must stay well above what a real worker has unread: with libzmq 4.3.5, a
# DEALER that closed (with linger) while the ROUTER's pipe from it was full lost the tail
# of what it had sent, which for a worker that stops would be its last acks.
HWM_SLACK = 256
"""Messages a pipe holds beyond `capacity`: signals, and 256 heartbeats (20 s of them at
the shortest sane interval, 0.1 s, for the default 20 s heartbeat timeout)."""
HEARTBEAT_BACKLOG = 10_000
"""Messages a worker queues beyond `capacity` while no dispatcher reads (it restarts):
10,000 heartbeats of ~80 bytes each (< 1 MB), 2.8 hours at the default interval; past
that, a send fails and an ack would be lost (reclaimed, so run again)."""
ACK_FRAME_BYTES = 1 << 20
"""A worker splits an ACK batch into frames of at most this many bytes (an item takes at
most 4 x (255 + 2000) + 32 = 9,052: UTF-8 takes at most 4 bytes a character)."""
_HELD_ITEM_BYTES = 4 * MAX_NAME_CHARS + 16


# Room kept in an ACK item that carries a result for its other fields (an error text is
# at most MAX_ERROR_CHARS characters of up to 4 bytes, the names 255 each).
RESULT_ITEM_SLACK = 16 * 1024


def result_budget(max_frame_bytes: int) -> int:
    """The most bytes a task's encoded return value may take: it travels in one ACK frame."""
    return ack_frame_bytes(max_frame_bytes) - RESULT_ITEM_SLACK


def traceback_text(text: str) -> str:
    """A traceback made fit for the wire and the journal: its last `MAX_ERROR_CHARS` characters."""
    if len(text) > MAX_ERROR_CHARS:
        text = _CUT.strip() + "\n" + text[-(MAX_ERROR_CHARS - len(_CUT)):]
    return clean_text(text)


def pipe_messages(capacity: int) -> int:
    """The high-water mark of a dispatcher-worker pipe, either way, for workers of `capacity` credits."""
    return capacity + HWM_SLACK


def ack_frame_bytes(max_frame_bytes: int) -> int:
    """The longest ACK frame a worker sends (it splits its batches to fit)."""
    return min(ACK_FRAME_BYTES, payload_budget(max_frame_bytes))


def worker_frame_bytes(capacity: int, max_frame_bytes: int) -> int:
    """The longest frame a worker of `capacity` credits sends: an ACK frame, or a HELLO
    naming every job it holds and every queue it serves (the dispatcher's ZMQ_MAXMSGSIZE)."""
    hello = capacity * _HELD_ITEM_BYTES + MAX_QUEUES * (4 * MAX_NAME_CHARS + 8)
    return min(max_frame_bytes, max(ACK_FRAME_BYTES, hello) + FRAME_OVERHEAD)


def _lease_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_LEASE_ID


def _list(body: Any, kind: str) -> list[Any]:
    if not isinstance(body, list):
        raise FrameError("bad_body", f"{kind} needs a list")
    return body


def clean_text(text: str) -> str:
    """`text` made fit to cross a process boundary and to be stored: valid UTF-8, no NUL, bounded.

    Bytes that a non-UTF-8 file name carried into the text as surrogates (`os.fsdecode`)
    read as ``\\xNN`` escapes of those bytes, other unpaired surrogates as ``\\udNNN``, and a
    NUL, which PostgreSQL's text refuses, as ``\\x00``. A longer result is cut to
    `MAX_ERROR_CHARS`, saying so. msgpack cannot encode a surrogate: one text left as
    it was would fail the whole frame it travels in. Never raises.
    """
    text = text[: MAX_ERROR_CHARS + 1]  # the rest would be cut anyway: never escape megabytes
    try:
        text.encode()
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")  # back to the bytes the name held
        except UnicodeEncodeError:  # a surrogate no decoder made
            raw = text.encode("utf-8", "backslashreplace")
        text = raw.decode("utf-8", "backslashreplace")
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[: MAX_ERROR_CHARS - len(_CUT)] + _CUT


class _Signal:
    """A message without a body: every instance is alike, and `FRAME` is its encoding."""

    __slots__ = ()
    FRAME: ClassVar[bytes]

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# -- worker -> dispatcher -----------------------------------------------------------------
class Hello(NamedTuple):
    """A worker announces itself: after it starts, after WHO (with ``held``), after RESET (``reset``)."""

    owner: str
    credits: int
    queues: tuple[str, ...]
    pid: int
    held: dict[str, int] | None = None
    """``{job id: lease id}`` of every job it holds, when re-announcing; None at first start."""
    reset: bool = False
    """True once it has dropped its jobs after a RESET."""

    def encode(self) -> bytes:
        """The frame."""
        body: dict[str, Any] = {"owner": self.owner, "credits": self.credits, "queues": list(self.queues),
                                "pid": self.pid}
        if self.held is not None:
            body["held"] = [[job_id, lease_id] for job_id, lease_id in self.held.items()]
        if self.reset:
            body["reset"] = True
        return encode(HELLO, body)

    @classmethod
    def from_body(cls, body: Any, sender: bytes) -> "Hello":
        """Validate a HELLO body from the peer whose routing id is `sender`.

        Raises:
            FrameError: ``bad_body``.
        """
        if not isinstance(body, dict):
            raise FrameError("bad_body", "hello needs a map")
        owner, credits, queues, pid = body.get("owner"), body.get("credits"), body.get("queues"), body.get("pid")
        raw_held = body.get("held")
        rejoin = raw_held is not None
        if (
            not isinstance(owner, str) or not owner or owner.encode() != sender
            or not isinstance(credits, int) or isinstance(credits, bool)
            or not (0 if rejoin else 1) <= credits <= MAX_CREDITS
            or not isinstance(queues, list) or not 0 < len(queues) <= MAX_QUEUES
            or not all(isinstance(q, str) and 0 < len(q) <= MAX_NAME_CHARS for q in queues)
            or not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= MAX_PID
        ):
            raise FrameError("bad_body", "hello fields")
        held = _held(raw_held) if rejoin else None
        return cls(owner, credits, tuple(queues), pid, held, body.get("reset") is True)


def _held(value: Any) -> dict[str, int]:
    if not isinstance(value, list) or len(value) > MAX_HELD:
        raise FrameError("bad_body", "hello held")
    held: dict[str, int] = {}
    for item in value:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or len(item[0]) > MAX_NAME_CHARS or not _lease_id(item[1])):
            raise FrameError("bad_body", "hello held")
        held[item[0]] = item[1]
    return held


AckFields = tuple[Any, ...]
"""An ACK item as a worker sends it: ``(job id, lease id, end, error)``, then for a returned
value ``(result, keep_for)``, for an attempt that raised ``(traceback,)`` or ``(traceback,
delay)``, for one that timed out nothing or ``(None, delay)``."""


class AckItem(NamedTuple):
    """How one attempt ended, answering the lease it ran under (a worker sends it as an array)."""

    job_id: str
    lease_id: int
    end: str
    """An `AttemptEnd` value (ok, raised, discarded, unrunnable) or ``release``."""
    error: str | None = None
    traceback: str | None = None
    """The traceback text of an attempt that raised."""
    delay: float | None = None
    """Seconds to wait before the next attempt, as the worker asked (raised or timed_out only)."""


class Ack(NamedTuple):
    """The attempts a worker finished in one loop iteration, sorted by how they ended."""

    succeeded: list[tuple[str, int]]
    """``(job id, lease id)`` of the attempts that returned (end ``ok``)."""
    released: list[tuple[str, int]]
    """``(job id, lease id)`` of the jobs given back unstarted (``release``)."""
    ended: list[AckItem]
    """The other attempts: raised, discarded or unrunnable, with their error texts."""
    rejected: list[str]
    """Why each malformed item was dropped (``bad_ack``, ``bad_outcome``, ``bad_result``,
    ``bad_delay``), in order."""
    results: dict[str, KeptResult]
    """``{job id: (msgpack of its return value, seconds to keep it)}`` of the succeeded
    attempts that returned a value."""

    @staticmethod
    def frames(items: Sequence[AckFields], max_bytes: int) -> list[bytes]:
        """The frames carrying `items` (each as an `AckItem` reads), each at most `max_bytes` long.

        One frame, unless it would be longer (then the batch is split in halves; one
        item is at most ~17 KB, plus a result of up to `result_budget`). An item whose
        text cannot be encoded (a text that did not pass `clean_text`) is sent with its
        text cleaned, so it never takes the other outcomes of its batch with it; an item
        that still cannot be encoded is
        dropped and logged (its lease is reclaimed when its worker dies or goes silent).
        """
        try:
            frame = encode(ACK, items)
        except (TypeError, ValueError, OverflowError):  # UnicodeEncodeError is a ValueError
            items = Ack._encodable(items)
            if not items:
                return []
            frame = encode(ACK, items)
        if len(frame) <= max_bytes or len(items) < 2:
            return [frame]
        half = len(items) // 2
        return Ack.frames(items[:half], max_bytes) + Ack.frames(items[half:], max_bytes)

    @staticmethod
    def _encodable(items: Sequence[AckFields]) -> list[AckFields]:
        kept: list[AckFields] = []
        for item in items:
            try:
                encode(ACK, [item])
            except (TypeError, ValueError, OverflowError):
                job_id, lease_id, end, error = item[:4]
                item = (job_id, lease_id, end, clean_text(error) if isinstance(error, str) else None)
                try:
                    encode(ACK, [item])
                except (TypeError, ValueError, OverflowError) as exc:
                    logger.error("ack of job %r dropped: it cannot be encoded (%s)", job_id, exc)
                    continue
            kept.append(item)
        return kept

    @classmethod
    def from_body(cls, body: Any) -> "Ack":
        """Validate an ACK body item by item: a bad item is dropped and named, the rest stand.

        Raises:
            FrameError: ``bad_body`` when the body is not a list.
        """
        succeeded: list[tuple[str, int]] = []
        released: list[tuple[str, int]] = []
        ended: list[AckItem] = []
        rejected: list[str] = []
        results: dict[str, KeptResult] = {}
        ok = AttemptEnd.OK.value
        # inline checks, no call per item: this runs for every job (~0.5 us a job in all)
        for item in _list(body, ACK):
            # an out-of-range lease id matches no lease, and SQLite would refuse the int,
            # failing every ack committed in the same group with it
            if not (type(item) is list and 4 <= len(item) <= 6 and type(item[0]) is str
                    and len(item[0]) <= MAX_NAME_CHARS and type(item[1]) is int and 0 < item[1] <= MAX_LEASE_ID):
                rejected.append("bad_ack")
                continue
            end, fields = item[2], len(item)
            if end == ok:
                if fields == 6:  # a returned value and its keep time (the frame's size bounds the value)
                    if not (type(item[4]) is bytes and item[4] and type(item[5]) in (int, float)
                            and math.isfinite(item[5])):
                        rejected.append("bad_result")
                        continue
                    results[item[0]] = KeptResult(item[4], float(item[5]))
                elif fields != 4:
                    rejected.append("bad_ack")
                    continue
                succeeded.append((item[0], item[1]))
            elif fields >= 5 and (end == RELEASE or not (item[4] is None or type(item[4]) is str)):
                rejected.append("bad_ack")  # a release carries nothing more; a traceback is text
            elif end == RELEASE:
                released.append((item[0], item[1]))
            elif type(end) is str and end in WORKER_ENDS:
                delay = None
                if fields == 6:  # only a returned value, or a retry's delay, makes six fields
                    delay = item[5]
                    if end not in DELAY_ENDS:
                        rejected.append("bad_ack")
                        continue
                    # NaN fails the comparisons, inf the bound
                    if type(delay) not in (int, float) or not 0 <= delay <= MAX_RETRY_DELAY:
                        rejected.append("bad_delay")
                        continue
                    delay = float(delay)
                error = item[3]
                trace = item[4] if fields >= 5 else None
                ended.append(AckItem(item[0], item[1], end, clean_text(error) if type(error) is str else None,
                                     None if trace is None else traceback_text(trace), delay))
            else:
                rejected.append("bad_outcome")
        return cls(succeeded, released, ended, rejected, results)


class Heartbeat(_Signal):
    """A worker is alive (sent every heartbeat interval)."""

    FRAME = encode(HEARTBEAT, None)


class Bye(_Signal):
    """A worker holds nothing and is leaving."""

    FRAME = encode(BYE, None)


FromWorker = Union[Hello, Ack, Heartbeat, Bye]


def from_worker(frame: bytes, sender: bytes, max_len: int) -> FromWorker:
    """Decode and validate one frame a worker sent.

    Args:
        frame: the message part after the ROUTER's routing id.
        sender: that routing id (a HELLO must name it as its owner).
        max_len: the longest string, binary, array or map accepted.

    Raises:
        FrameError: the frame is malformed; `FrameError.reason` says how.
    """
    kind, body = decode(frame, max_len, kinds=KINDS)
    if kind == ACK:
        return Ack.from_body(body)
    if kind == HEARTBEAT:
        if body is not None:
            raise FrameError("bad_body", "heartbeat carries nothing")
        return Heartbeat()
    if kind == HELLO:
        return Hello.from_body(body, sender)
    if kind == BYE:
        if body is not None:
            raise FrameError("bad_body", "bye carries nothing")
        return Bye()
    raise FrameError("unexpected_kind", kind)


# -- dispatcher -> worker ------------------------------------------------------------------
class JobMessage(NamedTuple):
    """One leased job, as a worker receives it."""

    id: str
    lease_id: int
    task: str
    payload: bytes
    attempt: int
    max_attempts: int
    queue: str
    valid_until: float = math.inf
    """The `lease_clock` reading past which the lease may have lapsed: the job must not start
    after it. ``math.inf``: it never lapses."""
    timeout: float | None = None
    """The job's own time limit in seconds (None: its task's declared one, if any)."""


class Jobs(NamedTuple):
    """Jobs leased to a worker."""

    jobs: tuple[JobMessage, ...]
    rejected: int = 0
    """Malformed items dropped."""

    @staticmethod
    def encode_leased(jobs: Sequence[LeasedJob], valid_until: float) -> bytes:
        """The frame carrying `jobs` as the journal leased them, none to start after `valid_until`
        (a `lease_clock` reading; ``math.inf``: never lapses)."""
        return encode(JOBS, [[j.id, j.lease_id, j.task, j.payload, j.attempt, j.max_attempts, j.queue, valid_until,
                              j.timeout] for j in jobs])

    @classmethod
    def from_body(cls, body: Any) -> "Jobs":
        """Validate a JOBS body item by item.

        Raises:
            FrameError: ``bad_body`` when the body is not a list.
        """
        jobs: list[JobMessage] = []
        rejected = 0
        make = tuple.__new__  # the fields are checked here: skip the per-job argument parsing (~0.4 us)
        for item in _list(body, JOBS):
            # a deadline is a float from 0 to inf (NaN fails the comparison); the 9th field, a
            # time limit, is nil or a float > 0 (a frame without it is read as nil)
            if type(item) is list and len(item) == 8:
                item = item + [None]
            if (type(item) is list and len(item) == 9
                    and (item[8] is None or (type(item[8]) is float and 0.0 < item[8] < math.inf)) and type(item[0]) is str and len(item[0]) <= MAX_NAME_CHARS
                    and type(item[1]) is int and 0 < item[1] <= MAX_LEASE_ID
                    and type(item[2]) is str and len(item[2]) <= MAX_NAME_CHARS and type(item[3]) is bytes
                    and type(item[4]) is int and type(item[5]) is int
                    and type(item[6]) is str and len(item[6]) <= MAX_NAME_CHARS
                    and type(item[7]) is float and item[7] >= 0.0):
                jobs.append(make(JobMessage, item))
            else:
                rejected += 1
        return cls(tuple(jobs), rejected)


class Leases(NamedTuple):
    """The worker's leases were renewed: the jobs it holds whose deadline has not passed may
    wait until `until` (a `lease_clock` reading; ``math.inf``: never lapses)."""

    until: float

    def encode(self) -> bytes:
        """The frame."""
        return encode(LEASES, self.until)

    @classmethod
    def from_body(cls, body: Any) -> "Leases":
        """Validate a LEASES body: a float from 0 to inf.

        Raises:
            FrameError: ``bad_body``.
        """
        if type(body) is not float or not body >= 0.0:  # NaN fails the comparison
            raise FrameError("bad_body", "leases needs a deadline from 0 to inf")
        return cls(body)


class Stop(_Signal):
    """Finish the running jobs, give back the others, and exit."""

    FRAME = encode(STOP, None)


class Who(_Signal):
    """The dispatcher does not know this worker (it restarted): HELLO again, with what you hold."""

    FRAME = encode(WHO, None)


class Reset(_Signal):
    """Your leases were taken away (you were silent too long): drop every job, then HELLO."""

    FRAME = encode(RESET, None)


class Cancel(NamedTuple):
    """These jobs were cancelled in the journal: stop them (their leases are already void)."""

    job_ids: tuple[str, ...]

    def encode(self) -> bytes:
        """The frame."""
        return encode(CANCEL, list(self.job_ids))

    @classmethod
    def from_body(cls, body: Any) -> "Cancel":
        """Validate a CANCEL body: a list of job ids, at most a worker's credits of them.

        Raises:
            FrameError: ``bad_body``.
        """
        if (type(body) is not list or len(body) > MAX_CREDITS
                or not all(type(i) is str and 0 < len(i) <= MAX_NAME_CHARS for i in body)):
            raise FrameError("bad_body", "cancel needs a list of job ids")
        return cls(tuple(body))


FromDispatcher = Union[Jobs, Leases, Stop, Who, Reset, Cancel]
_SIGNALS: dict[str, FromDispatcher] = {STOP: Stop(), WHO: Who(), RESET: Reset()}


def from_dispatcher(frame: bytes, max_len: int) -> FromDispatcher:
    """Decode and validate one frame the dispatcher sent.

    Raises:
        FrameError: the frame is malformed; `FrameError.reason` says how.
    """
    kind, body = decode(frame, max_len, kinds=KINDS)
    if kind == JOBS:
        return Jobs.from_body(body)
    if kind == LEASES:
        return Leases.from_body(body)
    if kind == CANCEL:
        return Cancel.from_body(body)
    signal = _SIGNALS.get(kind)
    if signal is None:
        raise FrameError("unexpected_kind", kind)
    if body is not None:
        raise FrameError("bad_body", f"{kind} carries nothing")
    return signal
