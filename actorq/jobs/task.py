"""Tasks, the task registry, and the `Job` message.

A task is found only by the name it was registered under. Workers import the
registries named in ``topology.toml`` (trusted configuration) and look jobs up
by name; a name from the wire or the journal is never imported or evaluated.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Protocol, TypeVar

import msgpack

from actorq.errors import UnknownTask
from actorq.ids import new_id
from actorq.jobs.outcome import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    ON_CRASH,
    TaskPolicy,
    check_concurrency,
    check_key_rules,
    check_task_rules,
    check_timeout,
    check_unique_for,
)
from actorq.jobs.retry import Backoff, RetryPolicy
from actorq.jobs.settings import MAX_RESULT_TTL
from actorq.jobs.wire import MAX_NAME_CHARS, payload_budget
from actorq.journal.protocol import CircuitBreaker, NewJob
from actorq.transports.constants import DEFAULT_MAX_FRAME_BYTES

__all__ = ["Declared", "Discard", "Job", "JobContext", "Task", "TaskRegistry", "current_job", "derived_unique_key"]

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_MAX_PAYLOAD = payload_budget(DEFAULT_MAX_FRAME_BYTES)  # with the default dispatcher.max_frame_bytes


class Discard(Exception):
    """Raise inside a task to fail the job for good (state ``failed``), with no retry."""


class Declared(Protocol):
    """What a producer needs of a task's declaration to enqueue its jobs: a `TaskPolicy`,
    or a row of the journal's task catalog (`actorq.journal.TaskDefaults`)."""

    @property
    def queue(self) -> str:
        """The task's queue."""

    @property
    def priority(self) -> int:
        """Its jobs' priority."""

    @property
    def max_attempts(self) -> int:
        """Its jobs' attempts."""

    @property
    def unique_for(self) -> float | None:
        """Seconds its jobs hold their unique key from their insert (None: only while live)."""


@dataclass(frozen=True, slots=True)
class Task:
    """A registered task.

    Attributes:
        name: the stable name jobs use (``"emails.send"``); never the Python qualname.
        fn: the function; a coroutine function runs on the worker's loop, a plain one
            in the worker's thread pool.
        queue: where its jobs go unless the producer names a queue.
        max_attempts: attempts (runs and crashes) before a job goes dead, unless the
            producer sets it.
        retry: backoff between attempts after the task raised (a ``function`` policy when
            the task was declared with a backoff function: see `backoff`).
        on_crash: what a crash of the worker running the job does to it: ``"reclaim"``
            (default: back to ready, the crash counted as an attempt) or ``"fail"``
            (the job ends ``failed`` with the crash as its error: for work that must
            never run twice).
        priority: its jobs' priority unless the producer sets one (lower runs first).
        timeout: seconds an attempt may run (None: no limit). Past it, an async task is
            cancelled (`asyncio.CancelledError` inside it) and a sync task's worker process
            is replaced; the attempt ends ``timed out after N s`` and the job follows its
            retry policy, like an attempt that raised.
        result_ttl: seconds a job's return value is kept after it succeeded; None: the
            node's ``[results] ttl``; 0: the value is not kept (``ask`` then gets None).
        retry_on: when not empty, only exceptions of these classes are retried; any other
            ends the job ``failed`` at once (see `actorq.jobs.retry.retryable`).
        dont_retry_on: exceptions of these classes end the job ``failed`` at once.
        backoff: the backoff function ``(attempt, exc) -> seconds``, called in the worker
            after an attempt that raised or timed out; None: `retry` alone decides.
        unique_for: seconds each job holds its unique key from its insert, finished or not:
            another job with the key is not added meanwhile (its enqueue returns the
            holder's id). A job with no ``unique_key`` gets `derived_unique_key` (the task
            name and its arguments). None: no period (a key holds while its job is live).
        concurrency_limit: how many jobs with one ``concurrency_key`` run at once, for jobs
            of the task that carry a key and set no limit (None: 1).
        on_conflict: what enqueueing such a job does when its key already has that many
            admitted jobs: ``"block"`` (None too: it is added and waits for a slot) or ``"discard"``
            (nothing is added and the enqueue returns None); a job's own setting wins.
        concurrency: its jobs leased at once, every node together (None: no limit of its own).
        rate: its jobs leased per second, minute or hour (``"10/s"``), every node together;
            `burst` the most tokens its bucket holds (None: the rate's count). The rules are
            declared into the journal's task catalog when a node starts and enforced in the
            lease (docs/rate-limits-and-breakers.md); they bind the task's jobs in the queues
            leased together with its declared queue.
        circuit_breaker: a `CircuitBreaker`: after its `failures` failed attempts within its
            `window`, the task's jobs are not leased for its `cool_down`, then `probes` at a
            time until one succeeds (None: none). Its state is the journal's, every node's.
        key_rate: for the task's jobs with an ordering or concurrency key, the jobs of **each
            key** admitted per second, minute or hour (``"10/m"``), every node together;
            `key_burst` the most tokens each key's bucket holds (None: the key rate's count).
            A job held back stays blocked (it is not failed).
        key_circuit_breaker: a `CircuitBreaker` for **each key** of the task's jobs: a key's
            failed attempts open its own breaker, and its jobs stay blocked while the other
            keys' run (docs/rate-limits-and-breakers.md, "Per key").

    These apply to every job of the task however it is enqueued (``Job("name")``
    through a node's queue ref, `actorq.Client` or ``actorq enqueue``), except
    where the producer set a value of its own.
    """

    name: str
    fn: Callable[..., Any]
    queue: str = DEFAULT_QUEUE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_crash: str = "reclaim"
    priority: int = DEFAULT_PRIORITY
    timeout: float | None = None
    result_ttl: float | None = None
    retry_on: tuple[type[BaseException], ...] = ()
    dont_retry_on: tuple[type[BaseException], ...] = ()
    backoff: Backoff | None = None
    unique_for: float | None = None
    concurrency_limit: int | None = None
    on_conflict: str | None = None
    concurrency: int | None = None
    rate: str | None = None
    burst: int | None = None
    circuit_breaker: CircuitBreaker | None = None
    key_rate: str | None = None
    key_burst: int | None = None
    key_circuit_breaker: CircuitBreaker | None = None

    @property
    def policy(self) -> TaskPolicy:
        """What the task declares about its jobs, as the node applies it."""
        return TaskPolicy(self.queue, self.priority, self.max_attempts, self.retry, self.on_crash, self.timeout,
                          self.unique_for, self.concurrency_limit, self.on_conflict,
                          self.concurrency, self.rate, self.burst, self.circuit_breaker,
                          self.key_rate, self.key_burst, self.key_circuit_breaker)

    @property
    def is_async(self) -> bool:
        """True when `fn` is a coroutine function."""
        return inspect.iscoroutinefunction(self.fn)

    def job(self, *args: Any, **kwargs: Any) -> "Job":
        """Make a `Job` for this task (its declared policy applies when it is enqueued)."""
        return Job(self.name, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, in this process (no job is made)."""
        return self.fn(*args, **kwargs)


def _exception_classes(task: str, what: str, value: object) -> tuple[type[BaseException], ...]:
    """`value` (a class or a tuple of them) as a tuple of exception classes.

    Raises:
        TypeError: naming the task, the option and the first item that is not one.
    """
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"task {task!r}: {what} must be an exception class or a tuple of them, got {item!r}")
    return items  # type: ignore[return-value]


class TaskRegistry:
    """A set of tasks, looked up by name. Name it in ``topology.toml`` (``[node] tasks``).

    Example::

        registry = TaskRegistry()

        @registry.task("emails.send", queue="emails", max_attempts=5)
        async def send(to: str) -> None: ...

    Args:
        middleware: objects with any of the methods ``before(job)``, ``after(job, outcome)``
            and ``on_failure(job, error)``, run around every job of the registry's tasks in
            the worker (see `TaskRegistry.before` and docs/hooks.md); in order for ``before``,
            in reverse order for ``after`` and ``on_failure``.

    Raises:
        TypeError: a middleware object has none of those methods.
    """

    def __init__(self, middleware: Iterable[object] = ()) -> None:
        self._tasks: dict[str, Task] = {}
        self._before: list[Callable[..., Any]] = []
        self._after: list[Callable[..., Any]] = []
        self._on_failure: list[Callable[..., Any]] = []
        for item in middleware:
            self.add_middleware(item)

    # -- hooks around each job (run by the worker, see actorq.jobs.worker) ------------------------
    def add_middleware(self, middleware: object) -> None:
        """Register the ``before``, ``after`` and ``on_failure`` methods `middleware` has.

        Raises:
            TypeError: it has none of them.
        """
        found = False
        for name, hooks in (("before", self._before), ("after", self._after), ("on_failure", self._on_failure)):
            method = getattr(middleware, name, None)
            if callable(method):
                hooks.append(method)
                found = True
        if not found:
            raise TypeError(f"middleware {type(middleware).__name__} has none of the methods "
                            "before(job), after(job, outcome), on_failure(job, error)")

    def before(self, fn: F) -> F:
        """Decorator: call ``fn(job)`` before each attempt of this registry's tasks.

        `job` is the attempt's `JobContext` (``current_job()`` works too). A sync hook runs on
        the worker's event loop: keep it quick; an async hook is awaited. A hook that raises is
        logged and counted; the attempt runs all the same.
        """
        self._before.append(_hook(fn, "before"))
        return fn

    def after(self, fn: F) -> F:
        """Decorator: call ``fn(job, outcome)`` after each attempt, once its ack is sent.

        `outcome` is how the attempt ended, an `actorq.jobs.outcome.AttemptEnd` (a str):
        ``"ok"``, ``"raised"``, ``"permanent"``, ``"discarded"``, ``"timed_out"``, ``"cancelled"``.
        What the journal then makes of it (retry, dead) is a node event (docs/hooks.md).
        """
        self._after.append(_hook(fn, "after"))
        return fn

    def on_failure(self, fn: F) -> F:
        """Decorator: call ``fn(job, error)`` after an attempt that raised or timed out (before ``after``).

        `error` is the exception the task raised (a `TimeoutError` for one that overran its time).
        """
        self._on_failure.append(_hook(fn, "on_failure"))
        return fn

    @property
    def hooks(self) -> "Hooks":
        """The registered hooks, in the order the worker calls them."""
        return Hooks(tuple(self._before), tuple(reversed(self._after)), tuple(reversed(self._on_failure)))

    def task(
        self,
        name: str,
        *,
        queue: str = DEFAULT_QUEUE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry: RetryPolicy | Backoff | None = None,
        on_crash: str = "reclaim",
        priority: int = DEFAULT_PRIORITY,
        timeout: float | None = None,
        result_ttl: float | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        dont_retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
        unique_for: float | None = None,
        concurrency_limit: int | None = None,
        on_conflict: str | None = None,
        concurrency: int | None = None,
        rate: str | None = None,
        burst: int | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        key_rate: str | None = None,
        key_burst: int | None = None,
        key_circuit_breaker: CircuitBreaker | None = None,
    ) -> Callable[[F], Task]:
        """Decorator: register the function under `name` (see `Task` for the options).

        Args:
            retry: the backoff after a failed attempt: a `RetryPolicy` (exponential by default,
                `RetryPolicy.linear`, `RetryPolicy.fixed`) or a function ``(attempt, exc) ->
                seconds`` run in the worker (see docs/retries.md).
            retry_on: an exception class, or a tuple of them: only these are retried.
            dont_retry_on: an exception class, or a tuple of them: these are never retried.

        Raises:
            ValueError: the name is empty or already registered, the queue empty,
                max_attempts < 1, priority not an integer, on_crash not "reclaim" or "fail",
                or timeout not None or a number of seconds > 0,
                or result_ttl not None or a number of seconds from 0 to `MAX_RESULT_TTL`,
                or unique_for not None or a number of seconds > 0 up to `MAX_UNIQUE_FOR`,
                or concurrency_limit not None or an integer from 1 to `MAX_CONCURRENCY_LIMIT`,
                or on_conflict not None, "block" or "discard".
                or concurrency not None or an integer from 1 to `MAX_QUEUE_LIMIT`, or rate not
                None or ``"COUNT/UNIT"`` (unit s, m or h), or burst without a rate or out of range.
            TypeError: retry is neither a RetryPolicy nor a callable, or retry_on or
                dont_retry_on holds something else than exception classes, or
                circuit_breaker is not a `CircuitBreaker`.
            ValueError: key_rate, key_burst or key_circuit_breaker out of range as rate,
                burst and circuit_breaker are.
        """
        check_name("task name", name)
        try:
            check_name("queue name", queue)
        except ValueError as exc:
            raise ValueError(f"task {name!r}: {exc}") from None
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ValueError(f"task {name!r}: priority must be an integer, got {priority!r}")
        if max_attempts < 1:
            raise ValueError(f"task {name!r}: max_attempts must be >= 1, got {max_attempts}")
        if on_crash not in ON_CRASH:
            raise ValueError(f"task {name!r}: on_crash must be one of {', '.join(ON_CRASH)}, got {on_crash!r}")
        try:
            check_timeout(timeout)
            check_unique_for(unique_for)
            check_concurrency(concurrency_limit, on_conflict)
            check_task_rules(concurrency, rate, burst)
            check_key_rules(key_rate, key_burst, key_circuit_breaker)
        except ValueError as exc:
            raise ValueError(f"task {name!r}: {exc}") from None
        if circuit_breaker is not None and not isinstance(circuit_breaker, CircuitBreaker):
            raise TypeError(f"task {name!r}: circuit_breaker must be a CircuitBreaker(failures=..., window=..., "
                            f"cool_down=..., probes=...), got {type(circuit_breaker).__name__}")

        if result_ttl is not None and not (isinstance(result_ttl, (int, float)) and not isinstance(result_ttl, bool)
                                           and 0 <= result_ttl <= MAX_RESULT_TTL):
            raise ValueError(f"task {name!r}: result_ttl must be None or seconds from 0 to {MAX_RESULT_TTL:,}, "
                             f"got {result_ttl!r}")

        backoff: Backoff | None = None
        if retry is None:
            policy = RetryPolicy()
        elif isinstance(retry, RetryPolicy):
            policy = retry
        elif callable(retry):
            backoff, policy = retry, RetryPolicy(kind="function")
        else:
            raise TypeError(f"task {name!r}: retry must be a RetryPolicy or a function (attempt, exc) -> seconds, "
                            f"got {type(retry).__name__}")
        only = _exception_classes(name, "retry_on", retry_on)
        never = _exception_classes(name, "dont_retry_on", dont_retry_on)

        def register(fn: F) -> Task:
            if name in self._tasks:
                raise ValueError(f"task {name!r} is already registered")
            task = Task(name, fn, queue, max_attempts, policy, on_crash, priority, timeout,
                        None if result_ttl is None else float(result_ttl), only, never, backoff,
                        unique_for=None if unique_for is None else float(unique_for),
                        concurrency_limit=concurrency_limit, on_conflict=on_conflict,
                        concurrency=concurrency, rate=rate, burst=burst, circuit_breaker=circuit_breaker,
                        key_rate=key_rate, key_burst=key_burst, key_circuit_breaker=key_circuit_breaker)
            self._tasks[name] = task
            return task

        return register

    def __getitem__(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(f"unknown task {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    def policies(self) -> dict[str, TaskPolicy]:
        """``{task name: declared policy}`` of every task."""
        return {name: task.policy for name, task in self._tasks.items()}

    def update(self, other: "TaskRegistry") -> None:
        """Add every task and hook of `other`. Raises ValueError on a name registered in both."""
        for task in other:
            if task.name in self._tasks and self._tasks[task.name] is not task:
                raise ValueError(f"task {task.name!r} is registered twice")
            self._tasks[task.name] = task
        for mine, theirs in ((self._before, other._before), (self._after, other._after),
                             (self._on_failure, other._on_failure)):
            mine.extend(fn for fn in theirs if fn not in mine)


class Hooks(NamedTuple):
    """A registry's hooks around each job, each tuple in calling order (`TaskRegistry.hooks`)."""

    before: tuple[Callable[..., Any], ...]
    after: tuple[Callable[..., Any], ...]
    on_failure: tuple[Callable[..., Any], ...]


def _hook(fn: Any, kind: str) -> Callable[..., Any]:
    if not callable(fn):
        raise TypeError(f"a {kind} hook must be callable, got {type(fn).__name__}")
    return fn  # type: ignore[no-any-return]


@dataclass(slots=True)
class Job:
    """A job to send with ``queue.tell(job)``.

    Args:
        task: the registered task name.
        args, kwargs: the call's arguments; they must be msgpack-encodable
            (None, bool, int, float, str, bytes, lists, tuples, dicts with string keys).
        id: defaults to a new time-ordered id; re-sending a job with the same id is a no-op.
        priority: lower runs first within a queue; None (default): the task's declared one.
        delay: seconds from now before it may run (or give `run_at`, a Unix time).
        max_attempts: attempts before it goes dead; None (default): the task's declared number.
        unique_key: while a live job (scheduled, ready, running or waiting to retry)
            holds this key, another job with it is not added; enqueue returns the
            holder's id instead. Once that job is finished, the key is free again
            (unless a period holds it: `unique_for`).
        timeout: seconds each attempt may run, overriding the task's declared
            ``timeout``; None (default): the task's (see `TaskRegistry.task`).
        unique_for: seconds from its insert during which this job holds its key whatever
            its state, finished included; > 0, at most a year (`MAX_UNIQUE_FOR`). Without a
            `unique_key`, the key is `derived_unique_key` (task name and arguments). None
            (default): the task's declared ``unique_for``, if any.
        ordering_key: jobs with the same ordering key run one at a time, in the order they
            were enqueued (by id), across every worker and node; any number of keys. The
            next one waits ``blocked`` until the one before it has finished.
        concurrency_key: at most `concurrency_limit` jobs with the same concurrency key are
            admitted at once (from their enqueue, or their admission, to their end: a retry
            keeps its slot), across every worker and node; the others wait ``blocked``. A
            job takes one of the two keys, not both.
        concurrency_limit: that limit, an integer from 1 to `MAX_CONCURRENCY_LIMIT`; None
            (default): the task's declared ``concurrency_limit``, else 1. Needs a
            `concurrency_key`.
        on_conflict: what an enqueue does when the key already has its limit of admitted jobs:
            ``"block"`` (default: the job is added and waits for a free slot) or
            ``"discard"`` (nothing is added; enqueue returns None). None (default): the
            task's declared ``on_conflict``, else ``"block"``.
    """

    task: str
    args: tuple[Any, ...] | list[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    priority: int | None = None
    delay: float | None = None
    run_at: float | None = None
    max_attempts: int | None = None
    unique_key: str | None = None
    timeout: float | None = None
    unique_for: float | None = None
    ordering_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    on_conflict: str | None = None

    def to_new_job(self, queue: str | None = None, max_payload: int = DEFAULT_MAX_PAYLOAD,
                   declared: Declared | None = None) -> NewJob:
        """Validate and encode for the journal, applying the task's declaration.

        What the producer set wins; what it left None comes from `declared` (the
        task's declared queue, priority and max_attempts), then from the defaults
        (queue ``default``, priority 0, 20 attempts).

        Args:
            queue: the queue the producer named, or None for the task's own.
            max_payload: the largest encoded ``[args, kwargs]`` accepted, in bytes (it must
                fit in one frame to a worker: ``dispatcher.max_frame_bytes`` less 64 KiB).
            declared: the task's declaration, when the producer knows it.

        Raises:
            TypeError: an argument cannot be encoded with msgpack (the message names it).
            ValueError: max_attempts < 1, a task name, job id, queue or unique key that is empty,
                longer than 255 characters or not valid UTF-8, arguments over `max_payload`, or
                unique_for not a number of seconds > 0 up to `MAX_UNIQUE_FOR`.
        """
        check_name("task name", self.task)
        check_name("job id", self.id)
        if queue is None:
            queue = declared.queue if declared is not None else DEFAULT_QUEUE
        else:
            check_name("queue name", queue)
        max_attempts = self.max_attempts
        if max_attempts is None:
            max_attempts = declared.max_attempts if declared is not None else DEFAULT_MAX_ATTEMPTS
        elif max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        priority = self.priority
        if priority is None:
            priority = declared.priority if declared is not None else DEFAULT_PRIORITY
        if self.unique_key is not None:
            check_name("unique_key", self.unique_key)
        check_timeout(self.timeout)
        check_unique_for(self.unique_for)
        unique_for = self.unique_for
        if unique_for is None and declared is not None:
            unique_for = getattr(declared, "unique_for", None)  # a mapping's own declarations may lack it
        unique_key = self.unique_key
        if unique_key is None and unique_for is not None:
            unique_key = derived_unique_key(self.task, self.args, self.kwargs)
        for what, key in (("ordering_key", self.ordering_key), ("concurrency_key", self.concurrency_key)):
            if key is not None:
                check_name(what, key)
        if self.ordering_key is not None and self.concurrency_key is not None:
            raise ValueError("a job takes one flow key: ordering_key or concurrency_key, not both")
        check_concurrency(self.concurrency_limit, self.on_conflict)
        concurrency_limit, on_conflict = self.concurrency_limit, self.on_conflict
        if self.concurrency_key is None:
            if concurrency_limit is not None or on_conflict is not None:
                raise ValueError("concurrency_limit and on_conflict need a concurrency_key")
        elif declared is not None:  # a mapping's own declarations may lack them
            if concurrency_limit is None:
                concurrency_limit = getattr(declared, "concurrency_limit", None)
            if on_conflict is None:
                on_conflict = getattr(declared, "on_conflict", None)
        run_at = self.run_at
        if self.delay is not None:
            run_at = time.time() + self.delay
        payload = encode_payload(self.args, self.kwargs)
        if len(payload) > max_payload:
            raise ValueError(f"job arguments take {len(payload):,} bytes encoded; the limit is {max_payload:,} "
                             "(dispatcher.max_frame_bytes less 64 KiB): pass a reference to the data instead")
        return NewJob(self.id, queue, self.task, payload, priority, run_at, max_attempts, unique_key,
                      None if self.timeout is None else float(self.timeout),
                      None if unique_for is None else float(unique_for),
                      self.ordering_key, self.concurrency_key,
                      concurrency_limit if self.concurrency_key is not None else None,
                      on_conflict == "discard" and self.concurrency_key is not None)


_PACK_ERRORS = (TypeError, ValueError, OverflowError)


def check_name(what: str, value: object) -> None:
    """Refuse a name that cannot cross the wire: not a string, empty, over
    `wire.MAX_NAME_CHARS` characters, or not encodable as UTF-8 (an unpaired surrogate).

    Raises:
        ValueError: naming `what` and the problem (never echoing a huge value).
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"a {what} must be a non-empty string, got {type(value).__name__}")
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"a {what} may have at most {MAX_NAME_CHARS} characters, got {len(value):,}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a {what} must be valid UTF-8 (it holds an unpaired surrogate)") from None


DERIVED_KEY_TASK_CHARS = MAX_NAME_CHARS - 65  # the task name's part of a derived key: 190 characters


def _canonical(value: Any) -> Any:
    """`value` with every map's keys in sorted order (a tuple as a list): equal arguments,
    however their keywords were ordered, encode to the same bytes."""
    if isinstance(value, dict):
        try:
            keys = sorted(value, key=lambda k: (type(k).__name__, k))
        except TypeError:  # keys no worker accepts: encoding them raises, naming the argument
            keys = list(value)
        return {key: _canonical(value[key]) for key in keys}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value


def derived_unique_key(task: str, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> str:
    """The unique key of a job that has a `unique_for` and no key of its own: its task name and
    arguments, ``"<task>:<sha256 hex>"``.

    The digest covers the task name and the msgpack of ``[args, kwargs]`` with map keys sorted,
    so ``f(a=1, b=2)`` and ``f(b=2, a=1)`` share a key, and a tuple and a list of the same
    items too. The queue, priority and run time are not part of it. A task name longer than
    `DERIVED_KEY_TASK_CHARS` is cut in the readable part (the digest still covers all of it),
    so the key fits the 255 characters of any key.

    Raises:
        TypeError: an argument cannot be encoded with msgpack (see `encode_payload`).
    """
    canonical = encode_payload(_canonical(list(args)), _canonical(kwargs))
    digest = hashlib.sha256(task.encode("utf-8") + b"\x00" + canonical).hexdigest()
    return f"{task[:DERIVED_KEY_TASK_CHARS]}:{digest}"


def _check_value(value: Any) -> None:
    """Encode one value as a worker will decode it (string or bytes map keys only)."""
    packed = msgpack.packb(value, use_bin_type=True)
    if isinstance(value, (dict, list, tuple)):  # containers may hide keys msgpack packs but workers refuse
        msgpack.unpackb(packed, raw=False, strict_map_key=True)


def encode_payload(args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> bytes:
    """msgpack ``[args, kwargs]`` exactly as a worker decodes it.

    Raises:
        TypeError: names the first argument that cannot be encoded, or that holds a
            map key other than a string (workers decode with ``strict_map_key``).
    """
    try:
        payload = msgpack.packb([list(args), kwargs], use_bin_type=True)
        if kwargs or any(isinstance(a, (dict, list, tuple)) for a in args):
            msgpack.unpackb(payload, raw=False, strict_map_key=True)
        return payload
    except _PACK_ERRORS as exc:
        error = exc
    for i, value in enumerate(args):
        try:
            _check_value(value)
        except _PACK_ERRORS as exc:
            raise TypeError(f"job argument {i} ({type(value).__name__}) cannot be encoded with msgpack: {exc}") from None
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"job keyword {key!r}: keyword names must be strings") from None
        try:
            _check_value(value)
        except _PACK_ERRORS as exc:
            raise TypeError(f"job argument {key!r} ({type(value).__name__}) cannot be encoded with msgpack: {exc}") from None
    raise TypeError(f"job arguments cannot be encoded with msgpack: {error}") from None


class JobContext(NamedTuple):
    """What a running task can know about its job (see `current_job`)."""

    id: str
    task: str
    queue: str
    attempt: int
    max_attempts: int
    cancel_event: threading.Event | None = None
    """Set by the worker when the job is cancelled while it runs (read `cancelled`)."""

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled: a sync task should return soon (it is stopped,
        with its process, after ``workers.cancel_grace``). An async task gets
        `asyncio.CancelledError` instead."""
        return self.cancel_event is not None and self.cancel_event.is_set()


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("actorq_current_job")


def current_job() -> JobContext:
    """Return the context of the job running in this task call.

    Raises:
        LookupError: called outside a running job.
    """
    return _current.get()

