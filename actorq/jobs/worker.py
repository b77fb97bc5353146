"""The worker process: runs jobs in N concurrent slots and acks them in batches.

Started by the node's worker pool as ``python -c <WORKER_BOOT> SPEC_JSON``.
It imports the task registries named in the topology, connects a DEALER socket
to the dispatcher, announces its credits (slots + prefetch) and then:

* runs async tasks on its own event loop and sync tasks in a thread pool
  with one thread per slot;
* keeps jobs beyond its slots in a local FIFO (prefetch), never more than its credits;
* never starts a job past its lease deadline (``valid_until``, extended by LEASES after
  each renewal): its lease may have lapsed while this process or its node was paused, and
  the job run elsewhere. Such a job is answered ``release`` unstarted, counted in
  ``lapsed`` and logged (at most a line a second); running jobs are left alone;
* collects the outcomes finished in one loop iteration into one ACK message;
* sends a heartbeat every ``heartbeat_interval`` seconds; to a restarted
  dispatcher (WHO) it re-announces the jobs it holds, and when told its leases
  were taken away (RESET, after it was silent too long, e.g. SIGSTOP) it drops
  its unstarted jobs, cancels its running async ones and announces again;
* on STOP or SIGTERM: gives back the jobs it has not started ("release"),
  finishes the running ones, sends the last acks, says BYE and exits 0;
* stops an attempt that runs past its task's ``timeout`` (on the loop's monotonic clock):
  an async task is cancelled; a sync task's thread cannot be, so the process acks the
  attempt ``timed_out``, gives back every other job it holds (``release``: no attempt
  counted for them), says BYE and exits `EXIT_REPLACED`; the pool starts a new one;
* on CANCEL (jobs cancelled in the journal, found by the dispatcher's poll): gives back
  such a job not yet started, cancels it if async (`asyncio.CancelledError` in the task),
  and for a sync task sets ``current_job().cancelled``; one still running after
  ``cancel_grace`` seconds has its process replaced, as for an overrun. Every answer for
  a cancelled job is fenced by the journal (its lease is void);
* ignores SIGINT (the node coordinates Ctrl-C) and dies with its parent
  (``PR_SET_PDEATHSIG`` on Linux, plus a parent-pid watch), so no orphan keeps running jobs.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import importlib
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import msgpack
import zmq

from actorq._kernel.loop import new_event_loop
from actorq.jobs import wire
from actorq.jobs.outcome import AttemptEnd, TaskPolicy
from actorq.jobs.retry import Retry, backoff_delay, retryable
from actorq.jobs.settings import DEFAULT_RESULT_TTL
from actorq.jobs.task import Discard, JobContext, Task, TaskRegistry, _current
from actorq.transports.codec import FrameError
from actorq.transports.drops import DropCounter
from actorq.transports.zmq import LoopSocket

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 70
"""Exit code: the node (our parent) is gone."""
EXIT_REPLACED = 75
"""Exit code: a sync task overran its timeout, or ran on past ``cancel_grace`` once cancelled;
its thread cannot be stopped, so the process asks to be replaced (the pool starts a new one
at once, not counted in ``workers.intensity``: `ChildSpec.replace_exit`)."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs, passed as JSON on its command line."""

    endpoint: str
    owner: str
    concurrency: int
    prefetch: int
    queues: list[str]
    tasks: list[str]
    sys_path: list[str]
    log_level: str
    max_frame_bytes: int
    heartbeat_interval: float
    cancel_grace: float = 10.0
    result_ttl: float = DEFAULT_RESULT_TTL

    def to_json(self) -> str:
        """Serialise for the command line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "WorkerSpec":
        """Parse what `to_json` made."""
        return cls(**json.loads(text))


def load_registries(entries: list[str]) -> TaskRegistry:
    """Import each ``module`` or ``module:attribute`` entry and merge the registries.

    ``module`` alone means ``module:registry``.

    Raises:
        ImportError: a module cannot be imported (the message names the entry).
        TypeError: the attribute is not a TaskRegistry.
    """
    merged = TaskRegistry()
    for entry in entries:
        module_name, _, attr = entry.partition(":")
        attr = attr or "registry"
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            # user code: its exception's repr may fail or run to megabytes, its description cannot
            raise ImportError(f"cannot import task module {module_name!r} (from tasks entry {entry!r}): "
                              f"{_describe(exc)}") from exc
        registry = getattr(module, attr, None)
        if not isinstance(registry, TaskRegistry):
            raise TypeError(f"tasks entry {entry!r}: {module_name}.{attr} is not an actorq.TaskRegistry")
        merged.update(registry)
    return merged


def check_tasks(entries: list[str], sys_path: list[str], timeout: float = 120.0) -> dict[str, TaskPolicy]:
    """Import the task registries in a fresh interpreter, as a worker would.

    Returns ``{task name: its declared policy}`` for every registered task.

    The import runs in a child process so that user modules never load into the
    caller (the node keeps its memory and threads to itself).

    Raises:
        ImportError: a module cannot be imported, or an entry is not a TaskRegistry;
            the message names the entry and the cause.
        subprocess.CalledProcessError: the child was killed by a signal (``returncode`` is
            minus its number): nothing is known of the modules.
        subprocess.TimeoutExpired: the child ran past `timeout` s (it is killed).
    """
    result = subprocess.run([sys.executable, "-c", CHECK_BOOT, json.dumps([entries, sys_path])],
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode < 0:  # killed from outside (the OOM killer, an operator): not the modules' doing
        raise subprocess.CalledProcessError(result.returncode, "task import check", result.stdout, result.stderr)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise ImportError(lines[-1] if lines else f"task import check exited with {result.returncode}")
    declared = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: TaskPolicy.from_dict(policy) for name, policy in declared.items()}


def _check_main() -> int:
    entries, paths = json.loads(sys.argv[1])
    sys.path[0:0] = [p for p in paths if p not in sys.path]
    try:
        registry = load_registries(entries)
    except (ImportError, TypeError) as exc:
        print(exc, file=sys.stderr)
        return 3
    print(json.dumps({task.name: task.policy.to_dict() for task in sorted(registry, key=lambda t: t.name)}))
    return 0


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # pragma: no cover - the ppid watch still covers it
            pass


def _describe(exc: BaseException) -> str:
    """``"Type: message"``, made fit for the wire and the journal (`wire.clean_text`); never raises."""
    name = type(exc).__name__
    try:
        text = str(exc)
        described = f"{name}: {text}" if text else name
    except BaseException:  # a __str__ that fails must neither kill the worker nor pass the attempt as ok
        described = f"{name}: <unprintable>"
    return wire.clean_text(described)


def _traceback(exc: BaseException) -> str | None:
    """The traceback text of `exc`, made fit for the wire (`wire.traceback_text`); never raises."""
    try:
        return wire.traceback_text("".join(traceback.format_exception(exc)))
    except BaseException:  # a broken __str__ or __cause__ loses the text, never the attempt's outcome
        return None


def _raised(task: Task, exc: BaseException) -> AttemptEnd:
    """How an attempt that raised `exc` ends: RAISED when it may be retried, else PERMANENT. Never raises."""
    try:
        return AttemptEnd.RAISED if retryable(exc, task.retry_on, task.dont_retry_on) else AttemptEnd.PERMANENT
    except Exception:  # a metaclass's __instancecheck__ that fails: the attempt still fails, as a plain raise
        logger.exception("task %s: its retry_on / dont_retry_on could not be checked", task.name)
        return AttemptEnd.RAISED


def _retry_delay(task: Task, exc: BaseException, attempt: int, job_id: str) -> float | None:
    """The wait the worker sends with a retryable end: `Retry`'s delay, else the task's backoff
    function's value; None leaves it to the node (the task's `RetryPolicy`)."""
    if isinstance(exc, Retry) and exc.delay is not None:
        return exc.delay
    if task.backoff is None:
        return None
    delay = backoff_delay(task.backoff, attempt, exc)
    if delay is None:
        logger.warning("job %s (%s): its backoff function raised or returned no finite number of seconds; "
                       "the node's exponential backoff applies", job_id, task.name)
    return delay


class ResultError(Exception):
    """A task's return value cannot be stored: it does not encode, or it is too large."""


def encode_result(task: Task, value: Any, budget: int) -> bytes:
    """msgpack of `task`'s return value (an asker decodes it with any map keys, as it was made).

    Raises:
        ResultError: it cannot be encoded (names its type), or takes more than `budget` bytes.
    """
    try:
        data = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ResultError(f"the return value of task {task.name!r} ({type(value).__name__}) cannot be encoded "
                          f"with msgpack: {exc}") from None
    if len(data) > budget:
        raise ResultError(f"the return value of task {task.name!r} takes {len(data):,} bytes encoded; "
                          f"the limit is {budget:,}")
    return data


class Worker:
    """The worker process's runtime (one per process)."""

    def __init__(self, spec: WorkerSpec, registry: TaskRegistry, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.registry = registry
        self.loop = loop
        self.slots = spec.concurrency
        self.running = 0
        self.backlog: deque[wire.JobMessage] = deque()
        # running jobs: id -> (lease id, its asyncio task, cancellable: an async task's job)
        self.active: dict[str, tuple[int, asyncio.Task[None], bool]] = {}
        # (id, lease id) of running jobs already answered: their ack has gone, or is queued,
        # while the task finishes (its last step, its hooks); a HELLO does not hold them
        self.answered: set[tuple[str, int]] = set()
        self.resets = 0
        self.cancelling: set[str] = set()  # running jobs cancelled by the dispatcher's word
        self.cancel_events: dict[str, threading.Event] = {}  # running sync jobs' flags
        self.acks: list[wire.AckFields] = []
        self._flush_scheduled = False
        self.stopping = False
        self.done = loop.create_future()
        self.executor = ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix="actorq-task")
        self.ctx = zmq.Context()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, spec.owner.encode())
        sock.setsockopt(zmq.LINGER, 2000)
        sock.setsockopt(zmq.MAXMSGSIZE, spec.max_frame_bytes)
        # what the dispatcher can make this socket hold, and what it queues while none reads
        # (see `wire.pipe_messages`)
        sock.setsockopt(zmq.RCVHWM, wire.pipe_messages(self.capacity))
        sock.setsockopt(zmq.SNDHWM, self.capacity + wire.HEARTBEAT_BACKLOG)
        sock.connect(spec.endpoint)
        self.socket = LoopSocket(loop, sock, self._on_message)
        self._ack_frame_bytes = wire.ack_frame_bytes(spec.max_frame_bytes)
        self._result_budget = wire.result_budget(spec.max_frame_bytes)
        self.malformed: Counter[str] = Counter()
        """Frames dropped as malformed, by reason; also JOBS items (``bad_job``) and jobs past
        its credits (``over_credit``, given back)."""
        self._malformed = DropCounter(
            f"worker {spec.owner}", logger, event="dropped a malformed frame", counts=self.malformed).drop
        self._lapsed = DropCounter(f"worker {spec.owner}", logger,
                                   event="did not start a job whose lease had lapsed (given back)")
        self.parent = os.getppid()
        self.hooks = registry.hooks
        self.hook_errors: Counter[str] = Counter()
        """Calls of the registry's hooks that raised, by kind (``before``, ``after``, ``on_failure``)."""
        self._hook_failed = DropCounter(f"worker {spec.owner}", logger, event="a task hook raised",
                                        counts=self.hook_errors).drop

    def start(self) -> None:
        self.socket.start()
        self._hello(rejoin=False)
        self.loop.call_later(1.0, self._watch_parent)
        self.loop.call_later(self.spec.heartbeat_interval, self._heartbeat)

    @property
    def lapsed(self) -> int:
        """Jobs not started because their lease deadline had passed (answered ``release``)."""
        return self._lapsed.total

    @property
    def capacity(self) -> int:
        """Jobs this worker holds at most: running slots plus prefetch."""
        return self.spec.concurrency + self.spec.prefetch

    def _hello(self, rejoin: bool, reset: bool = False) -> None:
        held: dict[str, int] | None = None
        credits = self.capacity
        if rejoin:
            # acks first: the dispatcher settles them before it registers what this HELLO holds.
            # An answered job is not held: announced, the dispatcher would wait for an ack that
            # has already gone, one credit and one job "in flight" lost for good (C14)
            self._flush()
            held = {job_id: lease_id for job_id, (lease_id, _, _) in self.active.items()
                    if (job_id, lease_id) not in self.answered}
            held.update((job.id, job.lease_id) for job in self.backlog)
            credits = max(0, self.capacity - len(held))
        hello = wire.Hello(self.spec.owner, credits, tuple(self.spec.queues), os.getpid(), held, reset and rejoin)
        try:
            self.socket.send([hello.encode()])
        except zmq.ZMQError as exc:  # the next heartbeat brings a WHO and another try
            logger.warning("worker %s could not say hello: %s", self.spec.owner, exc)

    def _heartbeat(self) -> None:
        try:
            self.socket.send([wire.Heartbeat.FRAME])
        except zmq.ZMQError:
            pass
        self.loop.call_later(self.spec.heartbeat_interval, self._heartbeat)

    def _reset(self) -> None:
        """Our leases were taken away: drop unstarted jobs, cancel running async ones, re-announce."""
        self.resets += 1
        dropped = len(self.backlog)
        self.backlog.clear()  # their leases are void: no release, the jobs run elsewhere
        cancelled = 0
        for _, task, cancellable in self.active.values():
            if cancellable:  # a sync job's thread cannot be stopped; its late ack is fenced
                task.cancel()
                cancelled += 1
        logger.warning("worker %s lost its leases (it was silent too long): dropped %d queued jobs, "
                       "cancelled %d running, %d sync jobs run on", self.spec.owner, dropped, cancelled,
                       len(self.active) - cancelled)
        self._hello(rejoin=True, reset=True)

    def _watch_parent(self) -> None:
        if os.getppid() != self.parent:
            os._exit(EXIT_ORPHANED)  # parent gone: an orphan must not keep running jobs
        self.loop.call_later(1.0, self._watch_parent)

    # -- messages -----------------------------------------------------------------
    def _on_message(self, frames: list[bytes]) -> None:
        if len(frames) != 1:
            self._malformed("part_count", f"{len(frames)} parts")
            return
        try:
            message = wire.from_dispatcher(frames[0], self.spec.max_frame_bytes)
        except FrameError as exc:
            self._malformed(exc.reason, exc.detail)
            return
        if isinstance(message, wire.Jobs):
            if message.rejected:
                self._malformed("bad_job", count=message.rejected)
            self._on_jobs(message.jobs)
        elif isinstance(message, wire.Leases):
            self._on_leases(message.until)
        elif isinstance(message, wire.Stop):
            self.begin_stop()
        elif isinstance(message, wire.Who):
            self._hello(rejoin=True)
        elif isinstance(message, wire.Cancel):
            self._on_cancel(message.job_ids)
        else:
            self._reset()

    def _on_jobs(self, jobs: "Sequence[wire.JobMessage]") -> None:
        now = wire.lease_clock()
        for job in jobs:
            if self.stopping:
                self._ack(job.id, job.lease_id, wire.RELEASE)
            elif job.valid_until < now:  # it waited in the socket (a pause) past its deadline
                self._give_back_lapsed(job)
            elif self.running < self.slots:
                self._start(job)
            elif len(self.backlog) < self.spec.prefetch:
                self.backlog.append(job)
            else:  # past its credits, which no dispatcher sends: give it back rather than hold it
                self._malformed("over_credit", f"job {job.id}")
                self._ack(job.id, job.lease_id, wire.RELEASE)

    def _on_leases(self, until: float) -> None:
        """Our leases were renewed: a queued job still within its deadline may wait until `until`.

        A job already past its deadline keeps it: its lease may have lapsed, and been taken,
        before the renewal reached the journal (a renewal extends only the leases still ours).
        """
        now = wire.lease_clock()
        self.backlog = deque(job._replace(valid_until=until) if now <= job.valid_until < until else job
                             for job in self.backlog)

    def _on_cancel(self, job_ids: "Sequence[str]") -> None:
        """Stop the cancelled jobs among those held: their leases are void in the journal already."""
        wanted = set(job_ids)
        for job in [j for j in self.backlog if j.id in wanted]:  # not started: give back (fenced)
            self.backlog.remove(job)
            self._ack(job.id, job.lease_id, wire.RELEASE)
        for job_id in wanted:
            held = self.active.get(job_id)
            if held is None or job_id in self.cancelling:
                continue
            lease_id, task, cancellable = held
            self.cancelling.add(job_id)
            logger.info("job %s cancelled while running: stopping it", job_id)
            if cancellable:
                task.cancel()
            else:
                event = self.cancel_events.get(job_id)
                if event is not None:
                    event.set()
                self.loop.call_later(self.spec.cancel_grace, self._cancel_overdue, job_id, lease_id)

    def _cancel_overdue(self, job_id: str, lease_id: int) -> None:
        """A cancelled sync task ran past its grace: answer it, and replace this process."""
        held = self.active.get(job_id)
        if held is None or held[0] != lease_id or self.stopping:
            return
        self._ack(job_id, lease_id, AttemptEnd.CANCELLED, "cancelled")
        self._replace(job_id, why="a cancelled sync task ran past workers.cancel_grace")

    def _give_back_lapsed(self, job: wire.JobMessage) -> None:
        # released by lease id: fenced if another holder has the job, else ready again, attempt given back
        self._lapsed.drop("lease_lapsed", f"job {job.id}")
        self._ack(job.id, job.lease_id, wire.RELEASE)

    # -- running ------------------------------------------------------------------
    def _start(self, job: wire.JobMessage) -> None:
        self.running += 1
        cancellable = job.task in self.registry and self.registry[job.task].is_async
        task = self.loop.create_task(self._run(job))
        self.active[job.id] = (job.lease_id, task, cancellable)
        # the slot is given back when the task is done, even one cancelled (RESET) before
        # its first step, whose body (and so its finally) never runs
        task.add_done_callback(lambda t, job=job: self._slot_freed(job, t))

    async def _run(self, job: wire.JobMessage) -> None:
        job_id, lease_id, name, payload, attempt, max_attempts, queue, _, job_timeout = job
        end, error, extra = AttemptEnd.OK, None, ()
        value: Any = None
        overran = False
        jctx: JobContext | None = None  # set once the attempt's hooks may run
        failure: BaseException | None = None
        try:
            try:
                task = self.registry[name]
            except LookupError:
                end = AttemptEnd.UNRUNNABLE
                error = wire.clean_text(f"unknown task {name!r}: not in this worker's registry")
            else:
                limit = job_timeout if job_timeout is not None else task.timeout
                scope = asyncio.timeout(limit)  # on the loop's monotonic clock; None: no limit
                try:
                    args, kwargs = msgpack.unpackb(payload, raw=False, strict_map_key=True,
                                                   ext_hook=_no_ext)
                    event = None
                    if not task.is_async:
                        event = self.cancel_events[job_id] = threading.Event()
                    jctx = JobContext(job_id, name, queue, attempt, max_attempts, event)
                    if self.hooks.before:
                        await self._call_hooks("before", self.hooks.before, jctx)
                    if task.is_async:
                        token = _current.set(jctx)
                        try:
                            async with scope:
                                value = await task.fn(*args, **kwargs)
                        finally:
                            _current.reset(token)
                    else:
                        ctx = contextvars.copy_context()
                        ctx.run(_current.set, jctx)
                        running = self.loop.run_in_executor(self.executor, lambda: ctx.run(task.fn, *args, **kwargs))
                        if limit is None:
                            value = await running
                        else:
                            done, _ = await asyncio.wait({running}, timeout=limit)
                            if not done:
                                overran = True
                            else:
                                value = running.result()
                    if value is not None and not overran:  # None stores nothing: the common case costs nothing
                        keep_for = self.spec.result_ttl if task.result_ttl is None else task.result_ttl
                        if keep_for > 0:
                            extra = (encode_result(task, value, self._result_budget), keep_for)
                except Discard as exc:
                    end, error, extra = AttemptEnd.DISCARDED, _describe(exc), (_traceback(exc),)
                    failure = exc
                except BaseException as exc:
                    failure = exc
                    if scope.expired():  # our deadline, not a TimeoutError of the task's own
                        overran = True
                    elif job_id in self.cancelling and isinstance(exc, asyncio.CancelledError):
                        end, error = AttemptEnd.CANCELLED, "cancelled"
                    else:
                        # SystemExit, KeyboardInterrupt or CancelledError raised by task code is a failed
                        # attempt too: never a success, and never the end of the worker process
                        end, error, extra = _raised(task, exc), _describe(exc), (_traceback(exc),)
                        if end is AttemptEnd.RAISED:
                            delay = _retry_delay(task, exc, attempt, job_id)
                            if delay is not None:
                                extra = (*extra, delay)
                        logger.info("job %s (%s) attempt %d failed%s: %s", job_id, name, attempt,
                                    "" if end is AttemptEnd.RAISED else " (not retried)", error)
                if job_id in self.cancelling and end is not AttemptEnd.CANCELLED and not overran:
                    end, error, extra = AttemptEnd.CANCELLED, "cancelled", ()  # it returned after seeing the flag
                if overran:
                    end, error, extra = AttemptEnd.TIMED_OUT, f"timed out after {limit:g} s", ()
                    failure = TimeoutError(error)
                    logger.warning("job %s (%s) attempt %d %s", job_id, name, attempt, error)
                    delay = _retry_delay(task, TimeoutError(error), attempt, job_id)
                    if delay is not None:
                        extra = (None, delay)
        finally:
            self.cancel_events.pop(job_id, None)
            self._ack(job_id, lease_id, end, error, extra)
        if jctx is not None:  # after the ack: a hook can neither delay nor change the outcome
            if failure is not None and end is not AttemptEnd.CANCELLED and self.hooks.on_failure:
                await self._call_hooks("on_failure", self.hooks.on_failure, jctx, failure)
            if self.hooks.after:
                await self._call_hooks("after", self.hooks.after, jctx, end)
        if overran and not task.is_async:
            self._replace(job_id, why="a sync task overran its timeout")

    async def _call_hooks(self, kind: str, hooks: Sequence[Any], jctx: JobContext, *args: Any) -> None:
        """Call each hook with the job (and `args`), ``current_job()`` set; one that raises is
        logged (at most once a second) and counted in `hook_errors`, and the next one runs."""
        token = _current.set(jctx)
        try:
            for fn in hooks:
                try:
                    result = fn(jctx, *args)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise  # the job is being stopped (a cancel, a RESET): not the hook's failure
                except BaseException as exc:  # SystemExit too: a hook never ends the worker or the job
                    self._hook_failed(kind, f"{getattr(fn, '__qualname__', fn)!s} for job {jctx.id}: {_describe(exc)}")
        finally:
            _current.reset(token)

    def _replace(self, overran_id: str, why: str) -> None:
        """A sync task must stop and its thread runs on: give back every other job, say BYE, exit.

        Every other job this process holds is answered ``release`` (its attempt is given
        back: it did nothing wrong), then the process exits `EXIT_REPLACED` and the pool
        starts a fresh one. The overrunning thread dies with the process.
        """
        logger.warning("worker %s: %s (job %s); replacing this process", self.spec.owner, why, overran_id)
        self.stopping = True
        while self.backlog:
            job = self.backlog.popleft()
            self._ack(job.id, job.lease_id, wire.RELEASE)
        for job_id, (lease_id, _, _) in list(self.active.items()):
            if job_id != overran_id:
                self._ack(job_id, lease_id, wire.RELEASE)
        self._flush()
        try:
            self.socket.send([wire.Bye.FRAME])
        except zmq.ZMQError:
            pass
        self.socket.close(linger_ms=2000)  # the acks and BYE leave before the process does
        self.ctx.term()
        logging.shutdown()
        os._exit(EXIT_REPLACED)  # not sys.exit: the interpreter would wait for the overrunning thread

    def _slot_freed(self, job: wire.JobMessage, task: "asyncio.Task[None]") -> None:
        job_id, lease_id = job.id, job.lease_id
        if task.cancelled():  # never started: say so, so the dispatcher counts the credit back
            self._ack(job_id, lease_id, wire.RELEASE)
        self.answered.discard((job_id, lease_id))
        if self.active.get(job_id, (None,))[0] == lease_id:
            del self.active[job_id]
            self.cancelling.discard(job_id)
        self.running -= 1
        if self.backlog and not self.stopping:
            self._start_next()
        elif self.stopping and self.running == 0:
            self._finish()

    def _start_next(self) -> None:
        """Start the first queued job still within its lease deadline; give back the lapsed ones before it."""
        now = wire.lease_clock()
        backlog = self.backlog
        while backlog:
            job = backlog.popleft()
            if job.valid_until >= now:
                self._start(job)
                return
            self._give_back_lapsed(job)

    def _ack(self, job_id: str, lease_id: int, end: str, error: str | None = None, extra: tuple[Any, ...] = ()) -> None:
        if self.active.get(job_id, (None,))[0] == lease_id:
            self.answered.add((job_id, lease_id))
        self.acks.append((job_id, lease_id, end, error, *extra))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.acks:
            acks, self.acks = self.acks, []
            for frame in wire.Ack.frames(acks, self._ack_frame_bytes):  # one, whatever text an item carries
                try:
                    self.socket.send([frame])
                except zmq.ZMQError as exc:  # the dispatcher reclaims on our death or lease expiry
                    logger.error("worker %s could not send %d acks: %s", self.spec.owner, len(acks), exc)

    # -- stopping -------------------------------------------------------------------
    def begin_stop(self) -> None:
        """Give back unstarted jobs, let running ones finish, then exit."""
        if self.stopping:
            return
        self.stopping = True
        while self.backlog:
            job = self.backlog.popleft()
            self._ack(job.id, job.lease_id, wire.RELEASE)
        if self.running == 0:
            self._finish()

    def _finish(self) -> None:
        self._flush()
        try:
            self.socket.send([wire.Bye.FRAME])
        except zmq.ZMQError:
            pass
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        """Close the socket, letting the last acks and BYE leave (up to 2 s), and the thread pool."""
        self.socket.close(linger_ms=2000)
        self.ctx.term()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"ext type {code} is not accepted in a job payload")


async def _amain(spec: WorkerSpec) -> int:
    loop = asyncio.get_running_loop()
    registry = load_registries(spec.tasks)
    worker = Worker(spec, registry, loop)
    loop.add_signal_handler(signal.SIGTERM, worker.begin_stop)
    worker.start()
    logger.debug("worker %s started with %d tasks", spec.owner, len(registry))
    try:
        await worker.done
    finally:
        worker.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    spec = WorkerSpec.from_json(args[0])
    # the owner id names this process: node/pid/incarnation (the pool builds the same string)
    spec = replace(spec, owner=spec.owner.replace("{pid}", str(os.getpid())))
    if len(spec.queues) > wire.MAX_QUEUES or not all(0 < len(q) <= wire.MAX_NAME_CHARS for q in spec.queues):
        # the dispatcher would refuse its HELLO: say why, rather than wait unregistered
        print(f"actorq worker: workers.queues: expected at most {wire.MAX_QUEUES} names of 1 to "
              f"{wire.MAX_NAME_CHARS} characters", file=sys.stderr)
        return 3
    for path in reversed(spec.sys_path):
        if path not in sys.path:
            sys.path.insert(0, path)
    logging.basicConfig(level=spec.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s worker[{os.getpid()}] %(name)s: %(message)s")
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(_amain(spec))
    except (ImportError, TypeError) as exc:
        print(f"actorq worker: {exc}", file=sys.stderr)
        return 3


# the worker's command line; not "-m actorq.jobs.worker", which would import this module twice
WORKER_BOOT = "import sys; from actorq.jobs.worker import main; sys.exit(main())"
CHECK_BOOT = "import sys; from actorq.jobs.worker import _check_main; sys.exit(_check_main())"
