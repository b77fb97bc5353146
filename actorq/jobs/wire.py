"""The dispatcher ↔ worker protocol: each message a named, typed value, encoded beside its definition.

Every frame is a codec envelope ``[version, kind, body]`` (`actorq.transports.codec`).
A message is validated once, here, on the way in: `from_worker` and `from_dispatcher`
return typed values or raise `FrameError` (the receiver drops and counts it), so the
dispatcher and the worker never look inside a raw body.

::

    worker ──▶ dispatcher                            dispatcher ──▶ worker
    HELLO {owner, credits, queues, pid,              JOBS  [[id, lease, task, payload,
           held?: [[id, lease]...], reset?: true}          attempt, max_attempts, queue]...]
    ACK   [[id, lease, end, error | None]...]        STOP  None   finish running jobs, exit
    HB    None   "I am alive"                        WHO   None   "I do not know you": HELLO with held
    BYE   None   "I hold nothing, I am leaving"      RESET None   "your leases were taken": drop all

An ACK item's ``end`` is how the attempt ended (`AttemptEnd`: ok, raised, discarded,
unrunnable) or ``release`` (never started: the attempt is given back). What that end
means for the job is decided by `actorq.jobs.outcome.decide`, not by the worker.
Hot messages (JOBS, ACK) are arrays, not maps: a field name per job would cost
bytes and time on every job.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, NamedTuple, Sequence, Union

from actorq.jobs.outcome import AttemptEnd
from actorq.journal.protocol import LeasedJob
from actorq.transports.codec import FrameError, decode, encode

__all__ = [
    "Ack", "AckItem", "Bye", "Heartbeat", "Hello", "JobMessage", "Jobs", "Reset", "Stop", "Who",
    "clean_text", "from_dispatcher", "from_worker", "payload_budget",
]

logger = logging.getLogger(__name__)

# message kinds (stable across releases)
HELLO, ACK, BYE, HEARTBEAT = "hello", "ack", "bye", "hb"
JOBS, STOP, WHO, RESET = "jobs", "stop", "who", "reset"
TO_DISPATCHER = frozenset({HELLO, ACK, BYE, HEARTBEAT})
TO_WORKER = frozenset({JOBS, STOP, WHO, RESET})
KINDS = TO_DISPATCHER | TO_WORKER

RELEASE = "release"  # an ACK end: the job never started; its attempt is given back
WORKER_ENDS = frozenset({AttemptEnd.OK, AttemptEnd.RAISED, AttemptEnd.DISCARDED, AttemptEnd.UNRUNNABLE, RELEASE})
MAX_LEASE_ID = 2**63 - 1  # lease ids are positive SQLite INTEGERs (the journal draws 62 random bits)
MAX_CREDITS = 1_000_000
MAX_HELD = 1_000_000
MAX_ERROR_CHARS = 2000  # an error text's bound: keeps every ACK frame far below max_frame_bytes
_CUT = " ... (truncated)"  # ends a text cut to its bound
# Room kept in every frame for the envelope and the per-job fields around the payloads.
FRAME_OVERHEAD = 64 * 1024


def payload_budget(max_frame_bytes: int) -> int:
    """The most payload bytes one frame of `max_frame_bytes` carries (one job's, or a JOBS batch's)."""
    return max_frame_bytes - FRAME_OVERHEAD


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
            or not isinstance(queues, list) or not queues or not all(isinstance(q, str) for q in queues)
            or not isinstance(pid, int) or isinstance(pid, bool)
        ):
            raise FrameError("bad_body", "hello fields")
        held = _held(raw_held) if rejoin else None
        return cls(owner, credits, tuple(queues), pid, held, body.get("reset") is True)


def _held(value: Any) -> dict[str, int]:
    if not isinstance(value, list) or len(value) > MAX_HELD:
        raise FrameError("bad_body", "hello held")
    held: dict[str, int] = {}
    for item in value:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str) or not _lease_id(item[1]):
            raise FrameError("bad_body", "hello held")
        held[item[0]] = item[1]
    return held


AckFields = tuple[str, int, str, str | None]
"""An ACK item as a worker sends it: ``(job id, lease id, end, error)``."""


class AckItem(NamedTuple):
    """How one attempt ended, answering the lease it ran under (a worker sends it as an array)."""

    job_id: str
    lease_id: int
    end: str
    """An `AttemptEnd` value (ok, raised, discarded, unrunnable) or ``release``."""
    error: str | None = None


class Ack(NamedTuple):
    """The attempts a worker finished in one loop iteration, sorted by how they ended."""

    succeeded: list[tuple[str, int]]
    """``(job id, lease id)`` of the attempts that returned (end ``ok``)."""
    released: list[tuple[str, int]]
    """``(job id, lease id)`` of the jobs given back unstarted (``release``)."""
    ended: list[AckItem]
    """The other attempts: raised, discarded or unrunnable, with their error texts."""
    rejected: list[str]
    """Why each malformed item was dropped (``bad_ack``, ``bad_outcome``), in order."""

    @staticmethod
    def frames(items: Sequence[AckFields]) -> list[bytes]:
        """The frames carrying `items` (each as an `AckItem` reads): one, whatever their texts.

        Such an item (a text that did not pass `clean_text`) is sent with its text
        cleaned, so it never takes the other outcomes of its batch with it; an item
        that still cannot be encoded is dropped and logged (its lease is reclaimed
        when its worker dies or goes silent).
        """
        try:
            return [encode(ACK, items)]
        except (TypeError, ValueError, OverflowError):  # UnicodeEncodeError is a ValueError
            pass
        kept: list[AckFields] = []
        for item in items:
            try:
                encode(ACK, [item])
            except (TypeError, ValueError, OverflowError):
                job_id, lease_id, end, error = item
                item = (job_id, lease_id, end, clean_text(error) if isinstance(error, str) else None)
                try:
                    encode(ACK, [item])
                except (TypeError, ValueError, OverflowError) as exc:
                    logger.error("ack of job %r dropped: it cannot be encoded (%s)", job_id, exc)
                    continue
            kept.append(item)
        return [encode(ACK, kept)] if kept else []

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
        ok = AttemptEnd.OK.value
        # inline checks, no call per item: this runs for every job (~0.5 us a job in all)
        for item in _list(body, ACK):
            # an out-of-range lease id matches no lease, and SQLite would refuse the int,
            # failing every ack committed in the same group with it
            if not (type(item) is list and len(item) == 4 and type(item[0]) is str
                    and type(item[1]) is int and 0 < item[1] <= MAX_LEASE_ID):
                rejected.append("bad_ack")
                continue
            end = item[2]
            if end == ok:
                succeeded.append((item[0], item[1]))
            elif end == RELEASE:
                released.append((item[0], item[1]))
            elif type(end) is str and end in WORKER_ENDS:
                error = item[3]
                ended.append(AckItem(item[0], item[1], end, clean_text(error) if type(error) is str else None))
            else:
                rejected.append("bad_outcome")
        return cls(succeeded, released, ended, rejected)


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


class Jobs(NamedTuple):
    """Jobs leased to a worker."""

    jobs: tuple[JobMessage, ...]
    rejected: int = 0
    """Malformed items dropped."""

    @staticmethod
    def encode_leased(jobs: Sequence[LeasedJob]) -> bytes:
        """The frame carrying `jobs` as the journal leased them."""
        return encode(JOBS, [[j.id, j.lease_id, j.task, j.payload, j.attempt, j.max_attempts, j.queue]
                             for j in jobs])

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
            if (type(item) is list and len(item) == 7 and type(item[0]) is str and type(item[1]) is int
                    and 0 < item[1] <= MAX_LEASE_ID and type(item[2]) is str and type(item[3]) is bytes
                    and type(item[4]) is int and type(item[5]) is int and type(item[6]) is str):
                jobs.append(make(JobMessage, item))
            else:
                rejected += 1
        return cls(tuple(jobs), rejected)


class Stop(_Signal):
    """Finish the running jobs, give back the others, and exit."""

    FRAME = encode(STOP, None)


class Who(_Signal):
    """The dispatcher does not know this worker (it restarted): HELLO again, with what you hold."""

    FRAME = encode(WHO, None)


class Reset(_Signal):
    """Your leases were taken away (you were silent too long): drop every job, then HELLO."""

    FRAME = encode(RESET, None)


FromDispatcher = Union[Jobs, Stop, Who, Reset]
_SIGNALS: dict[str, FromDispatcher] = {STOP: Stop(), WHO: Who(), RESET: Reset()}


def from_dispatcher(frame: bytes, max_len: int) -> FromDispatcher:
    """Decode and validate one frame the dispatcher sent.

    Raises:
        FrameError: the frame is malformed; `FrameError.reason` says how.
    """
    kind, body = decode(frame, max_len, kinds=KINDS)
    if kind == JOBS:
        return Jobs.from_body(body)
    signal = _SIGNALS.get(kind)
    if signal is None:
        raise FrameError("unexpected_kind", kind)
    if body is not None:
        raise FrameError("bad_body", f"{kind} carries nothing")
    return signal
