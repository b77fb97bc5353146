"""The worker process: runs jobs in N concurrent slots and acks them in batches.

Started by the node's worker pool as ``python -c <WORKER_BOOT> SPEC_JSON``.
It imports the task registries named in the topology, connects a DEALER socket
to the dispatcher, announces its credits (slots + prefetch) and then:

* runs async tasks on its own event loop and sync tasks in a thread pool
  with one thread per slot;
* keeps jobs beyond its slots in a local FIFO (prefetch), never more than its credits;
* collects the outcomes finished in one loop iteration into one ACK message;
* sends a heartbeat every ``heartbeat_interval`` seconds; to a restarted
  dispatcher (WHO) it re-announces the jobs it holds, and when told its leases
  were taken away (RESET, after it was silent too long, e.g. SIGSTOP) it drops
  its unstarted jobs, cancels its running async ones and announces again;
* on STOP or SIGTERM: gives back the jobs it has not started ("release"),
  finishes the running ones, sends the last acks, says BYE and exits 0;
* ignores SIGINT (the node coordinates Ctrl-C) and dies with its parent
  (``PR_SET_PDEATHSIG`` on Linux, plus a parent-pid watch), so no orphan keeps running jobs.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import msgpack
import zmq

from actorq._kernel.loop import new_event_loop
from actorq.jobs.dispatcher import OUTCOME_DISCARD, OUTCOME_ERROR, OUTCOME_OK, OUTCOME_RELEASE, OUTCOME_UNKNOWN
from actorq.jobs.task import Discard, JobContext, TaskRegistry, _current
from actorq.transports import constants as wire
from actorq.transports.codec import FrameError, decode, encode
from actorq.transports.zmq import LoopSocket

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


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
    log_level: str = "info"
    max_frame_bytes: int = 16 << 20
    heartbeat_interval: float = 1.0

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
            raise ImportError(f"cannot import task module {module_name!r} (from tasks entry {entry!r}): {exc!r}") from exc
        registry = getattr(module, attr, None)
        if not isinstance(registry, TaskRegistry):
            raise TypeError(f"tasks entry {entry!r}: {module_name}.{attr} is not an actorq.TaskRegistry")
        merged.update(registry)
    return merged


def check_tasks(entries: list[str], sys_path: list[str], timeout: float = 120.0) -> dict[str, str]:
    """Import the task registries in a fresh interpreter, as a worker would.

    Returns ``{task name: on_crash}`` for every registered task.

    The import runs in a child process so that user modules never load into the
    caller (the node keeps its memory and threads to itself).

    Raises:
        ImportError: a module cannot be imported, or an entry is not a TaskRegistry;
            the message names the entry and the cause.
    """
    result = subprocess.run([sys.executable, "-c", CHECK_BOOT, json.dumps([entries, sys_path])],
                            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise ImportError(lines[-1] if lines else f"task import check exited with {result.returncode}")
    tasks: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return tasks


def _check_main() -> int:
    entries, paths = json.loads(sys.argv[1])
    sys.path[0:0] = [p for p in paths if p not in sys.path]
    try:
        registry = load_registries(entries)
    except (ImportError, TypeError) as exc:
        print(exc, file=sys.stderr)
        return 3
    print(json.dumps({task.name: task.on_crash for task in sorted(registry, key=lambda t: t.name)}))
    return 0


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # pragma: no cover - the ppid watch still covers it
            pass


MAX_ERROR_CHARS = 2000  # keeps every ack frame far below max_frame_bytes


def _describe(exc: BaseException) -> str:
    """``"Type: message"``, at most MAX_ERROR_CHARS long; never raises."""
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ fails must not kill the worker
        text = "<unprintable>"
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(described) > MAX_ERROR_CHARS:
        suffix = " ... (truncated)"
        described = described[: MAX_ERROR_CHARS - len(suffix)] + suffix
    return described


class Worker:
    """The worker process's runtime (one per process)."""

    def __init__(self, spec: WorkerSpec, registry: TaskRegistry, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.registry = registry
        self.loop = loop
        self.slots = spec.concurrency
        self.running = 0
        self.backlog: deque[list[Any]] = deque()
        # running jobs: id -> (lease id, its asyncio task, cancellable: an async task's job)
        self.active: dict[str, tuple[int, asyncio.Task[None], bool]] = {}
        self.resets = 0
        self.acks: list[list[Any]] = []
        self._flush_scheduled = False
        self.stopping = False
        self.done = loop.create_future()
        self.executor = ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix="actorq-task")
        self.ctx = zmq.Context()
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, spec.owner.encode())
        sock.setsockopt(zmq.LINGER, 2000)
        sock.setsockopt(zmq.MAXMSGSIZE, spec.max_frame_bytes)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.connect(spec.endpoint)
        self.socket = LoopSocket(loop, sock, self._on_message)
        self.malformed = 0
        self.parent = os.getppid()

    def start(self) -> None:
        self.socket.start()
        self._hello(rejoin=False)
        self.loop.call_later(1.0, self._watch_parent)
        self.loop.call_later(self.spec.heartbeat_interval, self._heartbeat)

    @property
    def capacity(self) -> int:
        """Jobs this worker holds at most: running slots plus prefetch."""
        return self.spec.concurrency + self.spec.prefetch

    def _hello(self, rejoin: bool, reset: bool = False) -> None:
        hello: dict[str, Any] = {"owner": self.spec.owner, "credits": self.capacity,
                                 "queues": self.spec.queues, "pid": os.getpid()}
        if rejoin:
            held = [[job_id, lease_id] for job_id, (lease_id, _, _) in self.active.items()]
            held += [[job[0], job[1]] for job in self.backlog]
            hello["held"] = held
            hello["credits"] = max(0, self.capacity - len(held))
            if reset:
                hello["reset"] = True
        try:
            self.socket.send([encode(wire.HELLO, hello)])
        except zmq.ZMQError as exc:  # the next heartbeat brings a WHO and another try
            logger.warning("worker %s could not say hello: %s", self.spec.owner, exc)

    def _heartbeat(self) -> None:
        try:
            self.socket.send([encode(wire.HEARTBEAT, None)])
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
            os._exit(70)  # parent gone: an orphan must not keep running jobs
        self.loop.call_later(1.0, self._watch_parent)

    # -- messages -----------------------------------------------------------------
    def _on_message(self, frames: list[bytes]) -> None:
        try:
            if len(frames) != 1:
                raise FrameError("part_count")
            kind, body = decode(frames[0], self.spec.max_frame_bytes)
            if kind == wire.JOBS:
                if not isinstance(body, list):
                    raise FrameError("bad_body")
                self._on_jobs(body)
            elif kind == wire.STOP:
                self.begin_stop()
            elif kind == wire.WHO:
                self._hello(rejoin=True)
            elif kind == wire.RESET:
                self._reset()
            else:
                raise FrameError("unexpected_kind")
        except FrameError as exc:
            self.malformed += 1
            logger.warning("worker %s dropped a malformed frame: %s", self.spec.owner, exc)

    def _on_jobs(self, jobs: list[Any]) -> None:
        for job in jobs:
            if not isinstance(job, list) or len(job) != 7:
                self.malformed += 1
                continue
            if self.stopping:
                self._ack(job, OUTCOME_RELEASE)
            elif self.running < self.slots:
                self._start(job)
            else:
                self.backlog.append(job)

    # -- running ------------------------------------------------------------------
    def _start(self, job: list[Any]) -> None:
        self.running += 1
        name = job[2]
        cancellable = name in self.registry and self.registry[name].is_async
        task = self.loop.create_task(self._run(job))
        self.active[job[0]] = (job[1], task, cancellable)
        # the slot is given back when the task is done, even one cancelled (RESET) before
        # its first step, whose body (and so its finally) never runs
        task.add_done_callback(lambda t, job=job: self._slot_freed(job, t))

    async def _run(self, job: list[Any]) -> None:
        job_id, lease_id, name, payload, attempt, max_attempts, queue = job
        outcome, error, retry_in = OUTCOME_OK, None, None
        try:
            try:
                task = self.registry[name]
            except LookupError:
                outcome, error = OUTCOME_UNKNOWN, f"unknown task {name!r}: not in this worker's registry"
            else:
                try:
                    args, kwargs = msgpack.unpackb(payload, raw=False, strict_map_key=True,
                                                   ext_hook=_no_ext)
                    jctx = JobContext(job_id, name, queue, attempt, max_attempts)
                    if task.is_async:
                        token = _current.set(jctx)
                        try:
                            await task.fn(*args, **kwargs)
                        finally:
                            _current.reset(token)
                    else:
                        ctx = contextvars.copy_context()
                        ctx.run(_current.set, jctx)
                        await self.loop.run_in_executor(self.executor, lambda: ctx.run(task.fn, *args, **kwargs))
                except Discard as exc:
                    outcome, error = OUTCOME_DISCARD, _describe(exc)
                except BaseException as exc:
                    # SystemExit, KeyboardInterrupt or CancelledError raised by task code is a failed
                    # attempt too: never a success, and never the end of the worker process
                    outcome, error = OUTCOME_ERROR, _describe(exc)
                    retry_in = task.retry.delay(attempt)
                    logger.info("job %s (%s) attempt %d failed: %s", job_id, name, attempt, error)
        finally:
            self._ack([job_id, lease_id], outcome, error, retry_in)

    def _slot_freed(self, job: list[Any], task: "asyncio.Task[None]") -> None:
        job_id, lease_id = job[0], job[1]
        if task.cancelled():  # never started: say so, so the dispatcher counts the credit back
            self._ack([job_id, lease_id], OUTCOME_RELEASE)
        if self.active.get(job_id, (None,))[0] == lease_id:
            del self.active[job_id]
        self.running -= 1
        if self.backlog and not self.stopping:
            self._start(self.backlog.popleft())
        elif self.stopping and self.running == 0:
            self._finish()

    def _ack(self, job: list[Any], outcome: str, error: str | None = None, retry_in: float | None = None) -> None:
        self.acks.append([job[0], job[1], outcome, error, retry_in])
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.acks:
            acks, self.acks = self.acks, []
            try:
                self.socket.send([encode(wire.ACK, acks)])
            except zmq.ZMQError as exc:  # the dispatcher reclaims on our death or lease expiry
                logger.error("worker %s could not send %d acks: %s", self.spec.owner, len(acks), exc)

    # -- stopping -------------------------------------------------------------------
    def begin_stop(self) -> None:
        """Give back unstarted jobs, let running ones finish, then exit."""
        if self.stopping:
            return
        self.stopping = True
        while self.backlog:
            self._ack(self.backlog.popleft(), OUTCOME_RELEASE)
        if self.running == 0:
            self._finish()

    def _finish(self) -> None:
        self._flush()
        try:
            self.socket.send([encode(wire.BYE, None)])
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
