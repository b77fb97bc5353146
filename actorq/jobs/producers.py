"""The producer endpoint: producers in other processes enqueue through the node's journal writer.

On SQLite the file has one writer at a time, and SQLite does not queue waiters
fairly: a producer committing on its own connection, thousands of jobs a
second, kept the node's writer off the file for seconds at a time, and two
such producers made writes fail with "database is locked". Through this
endpoint their jobs join the node's group commits instead, and the dispatcher
hears of them at once (the writer's ``on_enqueued``)::

    Client (DEALER) ──▶ ROUTER  MAXMSGSIZE  request_bytes(max_frame_bytes)   a larger frame disconnects the peer
                                RCVHWM 4    requests queued per peer
                        check   every field (`parse_enqueue`)                else dropped and counted, no answer
                        admit   4 per peer, 256 in all, 20,000 jobs and      else answered BUSY: the client
                                64 MiB of payload in flight, a writer          backs off and sends again
                                backlog under 50,000 ops
                        writer  one ENQUEUE op a job ─▶ group commit ─▶ callbacks on the loop
    Client ◀── ROUTER  ENQUEUED once every job of the request has its answer (accepted = committed)
                       SNDHWM 4    replies to a peer that does not read are dropped

Messages (codec envelopes; names stable across releases)::

    ENQUEUE   [request id, [[id, queue, task, payload, priority, run_at, max_attempts, unique_key,
                              timeout?, unique_for?, ordering_key?, concurrency_key?,
                              concurrency_limit?, discard?]...]]
    ENQUEUED  [request id, [[True, job id | nil] | [False, error text]...]]   one item a job, in order
                                                        (nil: discarded over its concurrency limit)
    BUSY      [request id, text]                                        nothing was done: send again

    WAIT      [request id, job id, seconds]             wait in the node for the job's end
    OUTCOME   [request id, [state?, result?, expired, error?, traceback?]]
                                                        at its end (a final state), or at the
                                                        timeout (its live state; nil: unknown)
    CANCEL    [request id, job id]                      cancel it; the node stops it at once
    CANCELLED [request id, bool]                        True: cancelled now; False: had ended, or unknown

A WAIT holds no socket or thread in the node: it is one of the node's result waiters
(`ResultWaiters`, what `ask` uses), pushed by the writer when the job's completion
commits. At most `MAX_WAITS` wait at once (4 per peer); beyond, a WAIT is answered
BUSY at once and the client reads the journal instead. An answer carries what the
journal holds: a result of at most `wire.result_budget` bytes, texts of at most
`wire.MAX_ERROR_CHARS` characters.

A job's id is the producer's, so sending a request again after a lost answer
(a timeout, a node that died) adds nothing twice (B6). For a job whose unique
key is held (by a live job, or one inside its ``unique_for`` period), the id
answered is that job's. The optional fields may be left off from the end;
``unique_for`` needs ``unique_key`` and ``timeout`` (nil for none) before it;
each later one needs those before it (nil for none). ``concurrency_limit`` (an
integer from 1 to `MAX_CONCURRENCY_LIMIT`; nil: 1) and ``discard`` (a bool: True
is ``on_conflict="discard"``) need a ``concurrency_key``.

What a peer can make the node hold: 4 queued requests of at most
`request_bytes` each per peer in libzmq (with the default 16 MiB frames, 4 x
20 MiB), and in all at most 64 MiB of admitted payload (a lone request over
that is admitted when nothing else is in flight) and 256 requests waiting for
their commit. Answers are at most `MAX_REPLY_BYTES`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, NamedTuple

import zmq

from actorq.errors import ActorQError
from actorq.jobs import journal_writer as jw
from actorq.jobs.task import check_name
from actorq.jobs.wire import MAX_ERROR_CHARS as MAX_TEXT_CHARS, MAX_NAME_CHARS, clean_text, payload_budget, result_budget
from actorq.journal.protocol import MAX_CONCURRENCY_LIMIT, MAX_UNIQUE_FOR, TERMINAL_STATES, JobResult, JobState, NewJob
from actorq.transports.codec import FrameError, decode, describe, encode
from actorq.transports.drops import DropCounter
from actorq.transports.zmq import LoopSocket, bind_router, routed, send_reply

logger = logging.getLogger(__name__)

__all__ = [
    "EndpointUnusable", "ProducerServer", "Result", "encode_cancel", "encode_request", "encode_wait",
    "outcome_body", "parse_enqueue", "parse_reply", "parse_request", "read_outcome", "request_bytes"
]

# Message kinds (stable across releases).
ENQUEUE = "enqueue"  # producer -> node
ENQUEUED = "enqueued"  # node -> producer: one result a job
BUSY = "busy"  # node -> producer: not admitted, nothing done; send again later
WAIT = "wait"  # producer -> node: answer when the job ends, or at the timeout
OUTCOME = "outcome"  # node -> producer: the job's outcome (or its live state at the timeout)
CANCEL = "cancel"  # producer -> node: cancel a job
CANCELLED = "cancelled"  # node -> producer: whether it was cancelled now
REQUEST_KINDS = frozenset({ENQUEUE, WAIT, CANCEL})
REPLY_KINDS = frozenset({ENQUEUED, BUSY, OUTCOME, CANCELLED})

MAX_WAITS = 256  # WAITs waiting at once in a node: each holds a future and, at its end, one reply
MAX_WAITS_PER_PEER = 4
MAX_WAIT_SECONDS = 86_400.0  # one WAIT's longest timeout; a longer wait sends another
MAX_CANCELS = 256  # CANCELs waiting for their commit
_STATES = frozenset(state.value for state in JobState)

MAX_REQUEST_ID = 2**63 - 1
MAX_JOBS_PER_REQUEST = 1000  # a Client splits larger batches; 1,000 jobs take one or two groups
JOB_FIELDS = 8  # and up to `OPTIONAL_FIELDS` more: timeout, unique_for, ordering_key, concurrency_key,
OPTIONAL_FIELDS = 6  # concurrency_limit, discard
# A job's bytes beside its payload: six names of up to 255 characters (4 bytes each in
# UTF-8) with their headers, and the numbers (9 bytes each at most), a bool and array header.
JOB_OVERHEAD = 6 * (4 * MAX_NAME_CHARS + 5) + 80
QUEUED_PER_PEER = 4  # RCVHWM and SNDHWM: a Client has one request out at a time
MAX_IN_FLIGHT_PER_PEER = 4  # one, and room for requests it gave up on that are still in the writer
MAX_IN_FLIGHT = 256  # requests waiting for their commit, in all
MAX_PENDING_JOBS = 20_000  # jobs of producers not yet committed: ~10 groups of the default batch_max
MAX_PENDING_BYTES = 64 << 20  # payload bytes of those jobs
MAX_WRITER_BACKLOG = 50_000  # ops waiting for the writer (all of the node's, not only producers')
MAX_ERROR_CHARS = 500  # an error text in a reply: the journal's message, cut
# A reply: per job an array header, a bool and an id or error text (4 bytes a character at most).
# (~2 MB: it holds an OUTCOME too, a result of at most ~1 MiB and two texts of 2,000 characters.)
MAX_REPLY_BYTES = MAX_JOBS_PER_REQUEST * (4 * MAX_ERROR_CHARS + 16) + 1024
STOP_GRACE = 3.0  # seconds a stopping endpoint waits for its answers: within the role's 10 s shutdown


class EndpointUnusable(ActorQError):
    """A fixed endpoint of the topology cannot be served: another process listens there, or it
    cannot be bound (a missing directory, a port in use); the message says which, and `key`
    names the setting (``producers.endpoint``, ``node.endpoint``)."""

    def __init__(self, message: str, key: str = "producers.endpoint") -> None:
        super().__init__(message)
        self.key = key


class Result(NamedTuple):
    """One job's answer: ``ok`` and the job's id (or its unique key's holder's; None: discarded
    over its concurrency key's limit), or not and why."""

    ok: bool
    text: str | None


def request_bytes(max_frame_bytes: int) -> int:
    """The longest ENQUEUE frame: a full payload budget (`wire.payload_budget`) over at most
    `MAX_JOBS_PER_REQUEST` jobs, with their names and numbers (the ROUTER's MAXMSGSIZE)."""
    return payload_budget(max_frame_bytes) + MAX_JOBS_PER_REQUEST * JOB_OVERHEAD + 1024


def _fail(detail: str) -> FrameError:
    return FrameError("bad_body", detail)


def _job(item: Any) -> NewJob:
    if type(item) is not list or not JOB_FIELDS <= len(item) <= JOB_FIELDS + OPTIONAL_FIELDS:
        raise _fail(f"a job is an array of {JOB_FIELDS} to {JOB_FIELDS + OPTIONAL_FIELDS} fields, "
                    f"got {describe(item)}")
    (job_id, queue, task, payload, priority, run_at, max_attempts, unique_key, timeout, unique_for,
     ordering_key, concurrency_key, concurrency_limit, discard) = (
        [*item, *[None] * (JOB_FIELDS + OPTIONAL_FIELDS - len(item))])
    try:
        check_name("job id", job_id)
        check_name("queue name", queue)
        check_name("task name", task)
        for what, name in (("unique_key", unique_key), ("ordering_key", ordering_key),
                           ("concurrency_key", concurrency_key)):
            if name is not None:
                check_name(what, name)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if type(payload) is not bytes:
        raise _fail(f"a payload is bytes, got {describe(payload)}")
    if type(priority) is not int or type(max_attempts) is not int or max_attempts < 1:
        raise _fail("priority and max_attempts are integers, max_attempts at least 1")
    if run_at is not None and type(run_at) not in (int, float):
        raise _fail(f"run_at is a number or nil, got {describe(run_at)}")
    if timeout is not None and type(timeout) not in (int, float):
        raise _fail(f"timeout is a number or nil, got {describe(timeout)}")
    if unique_for is not None:
        if type(unique_for) not in (int, float) or not 0 < unique_for <= MAX_UNIQUE_FOR:  # NaN fails too
            raise _fail(f"unique_for is nil or seconds > 0 and at most {MAX_UNIQUE_FOR}, got {describe(unique_for)}")
        if unique_key is None:
            raise _fail("unique_for needs a unique_key (a producer derives one from the task and its arguments)")
    if concurrency_limit is not None and (type(concurrency_limit) is not int
                                          or not 1 <= concurrency_limit <= MAX_CONCURRENCY_LIMIT):
        raise _fail(f"concurrency_limit is nil or an integer from 1 to {MAX_CONCURRENCY_LIMIT}, "
                    f"got {describe(concurrency_limit)}")
    if discard is not None and type(discard) is not bool:
        raise _fail(f"discard is nil or a bool, got {describe(discard)}")
    if concurrency_key is None and (concurrency_limit is not None or discard):
        raise _fail("concurrency_limit and discard need a concurrency_key")
    try:  # the journal columns' bounds (G12), and a finite run_at and timeout
        return NewJob(job_id, queue, task, payload, priority, run_at, max_attempts, unique_key, timeout, unique_for,
                      ordering_key, concurrency_key, concurrency_limit, bool(discard))
    except ValueError as exc:
        raise _fail(str(exc)) from None


def parse_enqueue(frame: bytes, max_frame_bytes: int) -> tuple[int, list[NewJob]]:
    """Validate one ENQUEUE frame in full; return its request id and its jobs.

    Args:
        frame: the request's one message part.
        max_frame_bytes: the dispatcher's frame size: the jobs' payloads together may
            take at most `wire.payload_budget` of it (each must reach a worker in one frame).

    Raises:
        FrameError: the codec's reasons (no array or string longer than the payload
            budget, no array of more than `MAX_JOBS_PER_REQUEST` items), ``bad_body``:
            a field of the wrong type or out of its bounds, no jobs or too many, or
            ``too_large``: the payloads exceed the budget.
    """
    budget = payload_budget(max_frame_bytes)
    kind, body = decode(frame, budget, kinds=REQUEST_KINDS, max_items=MAX_JOBS_PER_REQUEST)
    if kind != ENQUEUE:
        raise _fail(f"expected an enqueue request, got {kind}")
    return _enqueue_body(body, budget)


def _enqueue_body(body: Any, budget: int) -> tuple[int, list[NewJob]]:
    if type(body) is not list or len(body) != 2:
        raise _fail("expected [request id, jobs]")
    request_id, items = body
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID:
        raise _fail(f"a request id is an integer from 0 to 2^63-1, got {describe(request_id)}")
    if type(items) is not list or not items:
        raise _fail(f"expected a non-empty array of jobs, got {describe(items)}")
    jobs = [_job(item) for item in items]
    total = sum(len(job.payload) for job in jobs)
    if total > budget:
        raise FrameError("too_large", f"payloads of {total} bytes; the budget is {budget}")
    return request_id, jobs


def parse_request(frame: bytes, max_frame_bytes: int) -> tuple[str, int, Any]:
    """Validate one request frame in full: ``(kind, request id, body)``.

    The body of ENQUEUE is its jobs (`parse_enqueue`); of WAIT, ``(job id, seconds)``; of
    CANCEL, the job id.

    Raises:
        FrameError: as `parse_enqueue`; for WAIT and CANCEL, ``bad_body``: not ``[request id,
            job id]`` (and seconds, a number > 0 and at most `MAX_WAIT_SECONDS`), or a job id
            that is no name (`check_name`).
    """
    budget = payload_budget(max_frame_bytes)
    kind, body = decode(frame, budget, kinds=REQUEST_KINDS, max_items=MAX_JOBS_PER_REQUEST)
    if kind == ENQUEUE:
        return (kind, *_enqueue_body(body, budget))
    fields = 3 if kind == WAIT else 2
    if type(body) is not list or len(body) != fields:
        raise _fail(f"{kind}: expected [request id, job id{', seconds' if kind == WAIT else ''}]")
    request_id, job_id = body[0], body[1]
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID:
        raise _fail(f"a request id is an integer from 0 to 2^63-1, got {describe(request_id)}")
    try:
        check_name("job id", job_id)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if kind == CANCEL:
        return kind, request_id, job_id
    seconds = body[2]
    # `not <=` also refuses NaN
    if type(seconds) not in (int, float) or not 0 < seconds <= MAX_WAIT_SECONDS:
        raise _fail(f"wait: seconds is a number > 0 and at most {MAX_WAIT_SECONDS:g}, got {describe(seconds)}")
    return kind, request_id, (job_id, float(seconds))


def encode_wait(request_id: int, job_id: str, seconds: float) -> bytes:
    """The WAIT frame: answer when job `job_id` ends, or after `seconds` (what a Client sends)."""
    return encode(WAIT, [request_id, job_id, min(float(seconds), MAX_WAIT_SECONDS)])


def encode_cancel(request_id: int, job_id: str) -> bytes:
    """The CANCEL frame of job `job_id` (what a Client sends)."""
    return encode(CANCEL, [request_id, job_id])


def outcome_body(outcome: JobResult | None, max_frame_bytes: int) -> list[Any]:
    """The body of an OUTCOME answer: ``[state, result, expired, error, traceback]``, or, for an
    unknown job, ``[nil, nil, false, nil, nil]``. A result over `wire.result_budget` (none the
    journal got from a worker is) travels as none, and reads as expired."""
    if outcome is None:
        return [None, None, False, None, None]
    result, expired = outcome.result, outcome.expired
    if result is not None and len(result) > result_budget(max_frame_bytes):
        result, expired = None, True
    return [outcome.state.value, result, expired,
            None if outcome.error is None else clean_text(outcome.error),
            None if outcome.traceback is None else clean_text(outcome.traceback)]


def encode_request(request_id: int, jobs: list[NewJob]) -> bytes:
    """The ENQUEUE frame of `jobs` (what a Client sends)."""
    items = [_trim([j.id, j.queue, j.task, j.payload, j.priority, j.run_at, j.max_attempts, j.unique_key,
                    j.timeout, j.unique_for, j.ordering_key, j.concurrency_key,
                    j.concurrency_limit if j.concurrency_limit != 1 else None, j.discard_over_limit or None])
             for j in jobs]
    return encode(ENQUEUE, [request_id, items])


def _trim(item: list[Any]) -> list[Any]:
    """`item` without its trailing nil optional fields: a job without them sends what an older
    node reads."""
    end = len(item)
    while end > JOB_FIELDS and item[end - 1] is None:
        end -= 1
    return item[:end]


def parse_reply(frames: list[bytes]) -> tuple[str, int, Any]:
    """Validate one answer (what a Client receives): ``(kind, request id, body)``.

    The body of ENQUEUED is a list of `Result`; of BUSY, a text; of OUTCOME, its raw
    fields (`read_outcome` checks them); of CANCELLED, a bool.

    Raises:
        FrameError: not one part, not a reply kind, or fields of the wrong shape.
    """
    if len(frames) != 1:
        raise FrameError("part_count", f"{len(frames)} parts")
    kind, body = decode(frames[0], MAX_REPLY_BYTES, kinds=REPLY_KINDS, max_items=MAX_JOBS_PER_REQUEST)
    if type(body) is not list or len(body) != 2 or type(body[0]) is not int:
        raise _fail("expected [request id, body]")
    request_id, rest = body
    if kind == BUSY:
        if type(rest) is not str:
            raise _fail("busy: expected a text")
        return kind, request_id, rest
    if kind == CANCELLED:
        if type(rest) is not bool:
            raise _fail("cancelled: expected a bool")
        return kind, request_id, rest
    if kind == OUTCOME:
        if type(rest) is not list or len(rest) != 5:
            raise _fail("outcome: expected [state, result, expired, error, traceback]")
        return kind, request_id, rest
    if type(rest) is not list or not all(
        type(item) is list and len(item) == 2 and type(item[0]) is bool
        and (type(item[1]) is str or (item[1] is None and item[0])) for item in rest
    ):
        raise _fail("enqueued: expected [[ok, text]...]")
    return kind, request_id, [Result(ok, text) for ok, text in rest]


def read_outcome(job_id: str, body: Any) -> JobResult | None:
    """The `JobResult` an OUTCOME answer about `job_id` carries (`outcome_body`'s reverse, what a
    Client reads); None: the job is unknown.

    Raises:
        FrameError: a field of the wrong type or out of its bounds.
    """
    if type(body) is not list or len(body) != 5:
        raise _fail("outcome: expected [state, result, expired, error, traceback]")
    state, result, expired, error, traceback = body
    if state is None:
        return None
    if type(state) is not str or state not in _STATES:
        raise _fail(f"outcome: not a job state: {describe(state)}")
    if (result is not None and type(result) is not bytes) or type(expired) is not bool:
        raise _fail("outcome: result is bytes or nil, expired a bool")
    for text in (error, traceback):
        if text is not None and (type(text) is not str or len(text) > MAX_TEXT_CHARS + 100):
            raise _fail("outcome: error and traceback are texts of at most 2,100 characters, or nil")
    return JobResult(job_id, JobState(state), result, expired, error, traceback)


class _Request:
    """A request admitted and waiting for its jobs' commit."""

    __slots__ = ("ident", "request_id", "results", "left", "size", "payload")

    def __init__(self, ident: bytes, request_id: int, jobs: int, payload: int) -> None:
        self.ident = ident
        self.request_id = request_id
        self.results: list[list[Any] | None] = [None] * jobs
        self.left = jobs
        self.size = jobs
        self.payload = payload


class ProducerServer:
    """Serves producers' ENQUEUE requests on a ROUTER socket on the node's loop.

    Args:
        loop: the node's loop; the writer's callbacks run on it too.
        endpoint: where to bind (an ``ipc://`` path in the runtime's private directory).
        enqueue: hands one job to the current journal writer, its callback to run on the
            loop after the commit (`JobRuntime.enqueue`, which also wakes the workers idle for
            the job's queue, so that their lease commits in the insert's group); it may raise
            `JournalError`.
        max_frame_bytes: the dispatcher's frame size (bounds the payloads and the frame).
        backlog: the ops waiting for the writer right now.
        wait: waits up to some seconds for a job's end and returns its outcome, or its last
            read at the timeout (`ResultWaiters.outcome`); None: WAITs are answered BUSY.
        cancel: cancels a job through the writer and stops it (`JobRuntime.cancel`); None:
            CANCELs are answered BUSY.

    Attributes:
        max_waits: WAITs that may wait at once (`MAX_WAITS`); beyond, BUSY.
        waits: WAITs admitted; ``waits_busy``: refused for the bound; ``peak_waits``: the
            most waiting at once.
        outcomes: WAITs answered with the job's end (the rest: with its live state, at their timeout).
        cancels: CANCELs admitted.
        dropped: the frames dropped, by reason.
        accepted: requests admitted; ``jobs``: their jobs.
        busy: requests answered BUSY.
        peak_in_flight, peak_pending_jobs: the most requests, and jobs, ever waiting for
            their commit at once (test signals for the bounds).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: str,
                 enqueue: Callable[[NewJob, jw.Callback], None], *, max_frame_bytes: int,
                 backlog: Callable[[], int],
                 wait: Callable[[str, float], Awaitable[JobResult | None]] | None = None,
                 cancel: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self.loop = loop
        self._wait = wait
        self._cancel = cancel
        self.max_waits = MAX_WAITS
        self.waits = 0
        self.waits_busy = 0
        self.outcomes = 0
        self.peak_waits = 0
        self._waiting: dict[asyncio.Task[None], tuple[bytes, int]] = {}  # each WAIT's task -> (peer, request id)
        self._waits_per_peer: dict[bytes, int] = {}
        self._cancels = 0  # CANCELs waiting for their commit
        self._cancelling: set[asyncio.Task[None]] = set()
        self.cancels = 0
        self.endpoint = endpoint
        self.max_frame_bytes = max_frame_bytes
        self._enqueue = enqueue
        self._backlog = backlog
        self.dropped = DropCounter("producers", logger)
        self.accepted = 0
        self.jobs = 0
        self.busy = 0
        self.peak_in_flight = 0
        self.peak_pending_jobs = 0
        self._socket: LoopSocket | None = None
        self._in_flight: set[_Request] = set()
        self._per_peer: dict[bytes, int] = {}  # at most MAX_IN_FLIGHT keys
        self._pending_jobs = 0
        self._pending_bytes = 0
        self._stopping = False
        self._drained: asyncio.Event | None = None

    @property
    def stopping(self) -> bool:
        """True once `stop` or `close` was called: new requests are answered BUSY."""
        return self._stopping

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet answered."""
        return len(self._in_flight)

    def start(self) -> None:
        """Bind and serve. Idempotent."""
        if self._socket is not None:
            return
        self._socket = bind_router(self.loop, self.endpoint, self._on_message, name="producers",
                                   max_message_bytes=request_bytes(self.max_frame_bytes),
                                   queued_per_peer=QUEUED_PER_PEER)
        self.endpoint = self._socket.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Answer new requests BUSY, wait up to `grace` seconds for the answers of those in
        flight (the writer is still running: it stops after this role), then close. Idempotent."""
        self._stopping = True
        self._end_waits()
        if self._in_flight and self._socket is not None:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), grace)
            except asyncio.TimeoutError:
                logger.warning("producers: %d requests still waiting for the journal at stop; their "
                               "producers get no answer and may send them again", len(self._in_flight))
        self.close(linger_ms=500)  # the last answers leave; a peer that is gone does not hold the stop

    def close(self, linger_ms: int = 0) -> None:
        """Stop serving at once; answers still to come are not sent. Idempotent."""
        self._stopping = True
        self._end_waits()
        if self._socket is not None:
            self._socket.close(linger_ms)
            self._socket = None

    def _end_waits(self) -> None:
        """Answer every WAIT BUSY (its client reads the journal instead) and forget it."""
        for task, (ident, request_id) in list(self._waiting.items()):
            task.cancel()
            self._send(ident, encode(BUSY, [request_id, "the node is stopping"]))
        self._waiting.clear()
        self._waits_per_peer.clear()

    def _on_message(self, frames: list[bytes]) -> None:
        message = routed(frames, self._parse, self.dropped)
        if message is None:
            return
        ident, (kind, request_id, body) = message
        if kind == WAIT:
            self._on_wait(ident, request_id, *body)
        elif kind == CANCEL:
            self._on_cancel(ident, request_id, body)
        else:
            self._on_enqueue(ident, request_id, body)

    def _on_wait(self, ident: bytes, request_id: int, job_id: str, seconds: float) -> None:
        why = ""
        if self._wait is None or self._stopping:
            why = "the node is stopping" if self._stopping else "this endpoint does not wait for results"
        elif len(self._waiting) >= self.max_waits:
            why = f"{self.max_waits} result waits in progress (the most a node holds)"
        elif self._waits_per_peer.get(ident, 0) >= MAX_WAITS_PER_PEER:
            why = f"{MAX_WAITS_PER_PEER} result waits of this producer in progress"
        if why:
            self.busy += 1
            self.waits_busy += 1
            self._send(ident, encode(BUSY, [request_id, why]))
            return
        wait = self._wait
        assert wait is not None

        async def waiting() -> None:
            try:
                outcome = await wait(job_id, seconds)
            except Exception as exc:  # the waiter itself failed: the client reads the journal
                logger.warning("producers: waiting for job %s failed: %s", job_id, exc)
                self._send(ident, encode(BUSY, [request_id, clean_text(f"{type(exc).__name__}: {exc}")]))
                return
            if outcome is not None and outcome.state in TERMINAL_STATES:
                self.outcomes += 1
            self._send(ident, encode(OUTCOME, [request_id, outcome_body(outcome, self.max_frame_bytes)]))

        task = self.loop.create_task(waiting())
        self._waiting[task] = (ident, request_id)
        self._waits_per_peer[ident] = self._waits_per_peer.get(ident, 0) + 1
        self.waits += 1
        self.peak_waits = max(self.peak_waits, len(self._waiting))
        task.add_done_callback(self._wait_ended)

    def _wait_ended(self, task: "asyncio.Task[None]") -> None:
        waited = self._waiting.pop(task, None)
        if waited is None:
            return
        ident = waited[0]
        left = self._waits_per_peer.pop(ident, 1) - 1
        if left > 0:
            self._waits_per_peer[ident] = left

    def _on_cancel(self, ident: bytes, request_id: int, job_id: str) -> None:
        if self._cancel is None or self._stopping or self._cancels >= MAX_CANCELS:
            self.busy += 1
            why = ("the node is stopping" if self._stopping
                   else "this endpoint does not cancel jobs" if self._cancel is None
                   else f"{MAX_CANCELS} cancels in progress")
            self._send(ident, encode(BUSY, [request_id, why]))
            return
        cancel = self._cancel
        self._cancels += 1
        self.cancels += 1

        async def cancelling() -> None:
            try:
                done = await cancel(job_id)
            except Exception as exc:  # not committed: the client is told BUSY and may try again
                self._send(ident, encode(BUSY, [request_id, clean_text(f"{type(exc).__name__}: {exc}")]))
            else:
                self._send(ident, encode(CANCELLED, [request_id, bool(done)]))
            finally:
                self._cancels -= 1

        task = self.loop.create_task(cancelling())
        self._cancelling.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._cancelling.discard)

    def _on_enqueue(self, ident: bytes, request_id: int, jobs: list[NewJob]) -> None:
        why = self._refusal(ident, jobs)
        if why:
            self.busy += 1
            self._send(ident, encode(BUSY, [request_id, why]))
            return
        payload = sum(len(job.payload) for job in jobs)
        request = _Request(ident, request_id, len(jobs), payload)
        self._in_flight.add(request)
        self._per_peer[ident] = self._per_peer.get(ident, 0) + 1
        self._pending_jobs += len(jobs)
        self._pending_bytes += payload
        self.accepted += 1
        self.jobs += len(jobs)
        self.peak_in_flight = max(self.peak_in_flight, len(self._in_flight))
        self.peak_pending_jobs = max(self.peak_pending_jobs, self._pending_jobs)
        for index, job in enumerate(jobs):
            def done(result: Any, error: BaseException | None, index: int = index) -> None:
                self._settle(request, index, result, error)
            try:
                self._enqueue(job, done)
            except Exception as exc:  # no writer runs (it is restarting): this job is not committed
                done(None, exc)

    def _parse(self, frame: bytes) -> tuple[str, int, Any]:
        return parse_request(frame, self.max_frame_bytes)

    def _refusal(self, ident: bytes, jobs: list[NewJob]) -> str:
        """Why the request cannot be admitted now ("" if it can)."""
        if self._stopping:
            return "the node is stopping"
        if self._per_peer.get(ident, 0) >= MAX_IN_FLIGHT_PER_PEER:
            return f"{MAX_IN_FLIGHT_PER_PEER} requests of this producer in flight"
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            return f"{MAX_IN_FLIGHT} requests in flight"
        if self._in_flight:  # a lone request is always admitted, whatever its size
            if self._pending_jobs + len(jobs) > MAX_PENDING_JOBS:
                return f"{self._pending_jobs} jobs waiting for the journal"
            if self._pending_bytes + sum(len(job.payload) for job in jobs) > MAX_PENDING_BYTES:
                return f"{self._pending_bytes} payload bytes waiting for the journal"
        backlog = self._backlog()
        if backlog > MAX_WRITER_BACKLOG:
            return f"the journal writer has {backlog} ops waiting"
        return ""

    def _settle(self, request: _Request, index: int, result: Any, error: BaseException | None) -> None:
        if request.results[index] is not None:
            return
        if error is None and (result is None or isinstance(result, str)):
            request.results[index] = [True, result]  # None: discarded over its concurrency key's limit
        else:
            text = f"{type(error).__name__}: {error}" if error is not None else "no id from the journal"
            request.results[index] = [False, clean_text(text)[:MAX_ERROR_CHARS]]
        request.left -= 1
        if request.left:
            return
        self._in_flight.discard(request)
        left = self._per_peer.pop(request.ident, 1) - 1
        if left > 0:
            self._per_peer[request.ident] = left
        self._pending_jobs -= request.size
        self._pending_bytes -= request.payload
        self._send(request.ident, encode(ENQUEUED, [request.request_id, request.results]))
        if not self._in_flight and self._drained is not None:
            self._drained.set()

    def _send(self, ident: bytes, frame: bytes) -> None:
        send_reply(self._socket, ident, frame)
