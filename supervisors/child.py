"""Children: one handle shape for an actor and for an OS process.

A supervisor only ever sees a `Child` (the protocol lives in `spec`, beside
the `StartFn` that returns one): a ``pid``, a ``ref``, a ``name``, an
``exited`` future that resolves once with an `Exit`, and ``stop()`` /
``kill()``. Two kinds implement it:

* `ActorChild`: an actor on the supervisor's own `ActorSystem`, started by
  `actor_start`. ``pid`` is its `ActorRef`; ``stop()`` sends the exit signal
  ``"shutdown"``, ``kill()`` sends ``"kill"``.
* `ProcessChild`: a program in its own OS process, started by `process_start`
  with `subprocess.Popen` (nothing is pickled). ``pid`` is the OS pid;
  ``stop()`` sends SIGTERM, ``kill()`` SIGKILL.

How a process child is watched and tied to its parent::

    supervisor (loop thread) ──Popen──▶ launcher: python -I -S -c _LAUNCHER
                                          │ prctl(PR_SET_PDEATHSIG, SIGKILL)
                                          │ getppid() still the supervisor's process?
                                          │ execvp(argv)  ──▶  the real program
         ◀── status pipe: EOF on exec (CLOEXEC), or the error text
         ◀── pidfd (os.pidfd_open) readable when the process exits: the loop's
             add_reader sees the death in the same iteration and reaps it

PR_SET_PDEATHSIG survives exec, so the program gets SIGKILL when its parent
dies, even by SIGKILL (A29). Linux delivers it when the *thread* that forked
the child exits, not the process: start process children from the event
loop's thread (supervisors always do), never from a thread pool, or they die
with that pool thread. An `ActorSystem` run with ``start_in_thread`` stops its
supervisors, and so its process children, before its loop thread ends.
Without pidfds (old kernels, some sandboxes), each child is polled every
``POLL_INTERVAL`` seconds with ``Popen.poll`` (``waitpid``), which reaps it too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from actorq._kernel.ref import ActorRef
from actorq._kernel.system import ActorSystem, current_owner, system_of
from actorq.supervisors.exits import Exit
from actorq.supervisors.spec import Child, Ignore, StartFn

if TYPE_CHECKING:
    from actorq._kernel.actor import Actor
    from actorq.supervisors.ref import SupervisorRef

logger = logging.getLogger(__name__)

__all__ = ["ActorChild", "ProcessChild", "actor_start", "current_system", "process_start"]

POLL_INTERVAL = 0.1  # seconds between exit checks when pidfds are not available

# Runs in the child before the real program: ask for SIGKILL on parent death,
# make sure the parent did not die before that took effect, then exec. The
# status fd is close-on-exec, so the parent reads EOF when exec succeeds.
_LAUNCHER = """\
import ctypes, os, sys
fd, parent, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def fail(why):
    os.write(fd, why.encode("utf-8", "replace"))
    os._exit(127)
try:
    if ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG, SIGKILL
        fail("prctl(PR_SET_PDEATHSIG) failed: errno %d" % ctypes.get_errno())
except (OSError, AttributeError) as exc:
    fail("prctl(PR_SET_PDEATHSIG) unavailable: %s" % exc)
if os.getppid() != parent:
    fail("the parent process exited before the child started")
os.set_inheritable(fd, False)
try:
    os.execvp(argv[0], argv)
except OSError as exc:
    fail("cannot execute %r: %s" % (argv[0], exc))
"""


def current_system() -> ActorSystem:
    """The `ActorSystem` of the supervisor that is starting a child in this context.

    Start functions (`actor_start`, `supervisor_spec`) use it to spawn on the
    supervisor's own system.

    Raises:
        RuntimeError: no supervisor is starting a child here.
    """
    owner = current_owner()
    if owner is None:
        raise RuntimeError("this start function runs only while a supervisor starts a child")
    return system_of(owner)


class ActorChild:
    """An actor child: the `Child` handle of an actor on the supervisor's system.

    Args:
        system: the system that runs the actor.
        ref: the actor.
        supervisor: for a supervisor child, its `SupervisorRef`.

    Create it on the loop thread (start functions run there).
    """

    def __init__(self, system: ActorSystem, ref: ActorRef, supervisor: "SupervisorRef | None" = None) -> None:
        self.pid: ActorRef = ref
        self.ref: ActorRef = ref
        self.name: str = ref.name
        self.supervisor = supervisor
        self._system = system
        self.exited: asyncio.Future[Exit] = system.loop.create_future()
        ref.monitor(self._on_stopped)

    def __repr__(self) -> str:
        return f"<ActorChild {self.name}>"

    def _on_stopped(self, reason: object) -> None:
        if not self.exited.done():
            self.exited.set_result(Exit.from_actor(reason))

    def stop(self) -> None:
        """Send the exit signal ``"shutdown"``: the actor stops after its current hook, `on_stop` runs."""
        self._system.exit(self.ref, "shutdown")

    def kill(self) -> None:
        """Send the exit signal ``"kill"``: the actor's task is cancelled (exit ``killed``)."""
        self._system.exit(self.ref, "kill")


def actor_start(
    actor: "type[Actor] | Callable[..., Actor]",
    *args: Any,
    name: str | None = None,
    mailbox_size: int = 10_000,
    **kwargs: Any,
) -> StartFn:
    """A `StartFn` that spawns an actor on the supervisor's own `ActorSystem`.

    The actor is built as ``actor(*args, *start_args, **kwargs)``, where
    ``start_args`` are the spec's args (plus a pool's extra args).

    Args:
        actor: an `Actor` subclass, or a factory returning an `Actor` instance.
        name: a registered name (`ActorSystem.whereis`); a restart reuses it, so
            the name always resolves to the running incarnation. Leave it None
            for pool children (names are unique).
        mailbox_size: the actor's mailbox bound.

    Returns:
        An async function returning an `ActorChild`; it raises what the
        actor's construction or `on_start` raised.
    """

    async def start(*start_args: Any) -> ActorChild:
        system = current_system()
        instance = actor(*args, *start_args, **kwargs)
        ref = await system.spawn(instance, name=name, mailbox_size=mailbox_size)
        return ActorChild(system, ref)

    start.__qualname__ = f"actor_start({getattr(actor, '__qualname__', actor)!s})"
    return start


class ProcessChild:
    """A process child: the `Child` handle of a program in its own OS process.

    Built by `process_start`; it starts watching the process at once.

    Attributes:
        pid: the OS pid.
        ref: always None.
        name: ``"<program>:<pid>"``.
        incarnation: a fresh random id (`secrets.token_hex(8)`), never reused.
        proc: the `subprocess.Popen` object.
        exited: the `Exit`, once reaped.
        stop_requested: True once `stop` was called (SIGTERM and exit code 0
            then mean ``shutdown``).
    """

    def __init__(self, proc: "subprocess.Popen[bytes]", incarnation: str, name: str | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self.proc = proc
        self.pid: int = proc.pid
        self.ref: ActorRef | None = None
        self.name: str = name or f"process:{proc.pid}"
        self.incarnation = incarnation
        self.stop_requested = False
        self.exited: asyncio.Future[Exit] = self._loop.create_future()
        self._pidfd: int | None = None
        self._poll_handle: asyncio.TimerHandle | None = None
        try:
            self._pidfd = os.pidfd_open(proc.pid)
            self._loop.add_reader(self._pidfd, self._reap)
        except (AttributeError, OSError, NotImplementedError):
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            self._poll_handle = self._loop.call_later(POLL_INTERVAL, self._poll)

    def __repr__(self) -> str:
        return f"<ProcessChild {self.name} incarnation {self.incarnation}>"

    def stop(self) -> None:
        """Send SIGTERM (once the process has exited, a no-op)."""
        if not self.exited.done():
            self.stop_requested = True
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL (once the process has exited, a no-op)."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.exited.done():
            return
        try:
            if self._pidfd is not None:  # a pidfd never names a recycled pid
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def _poll(self) -> None:
        self._poll_handle = None
        self._reap()
        if not self.exited.done():
            self._poll_handle = self._loop.call_later(POLL_INTERVAL, self._poll)

    def _reap(self) -> None:
        if self.exited.done():
            return
        returncode = self.proc.poll()
        if returncode is None:
            return  # spurious wake-up
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._poll_handle is not None:
            self._poll_handle.cancel()
            self._poll_handle = None
        self.exited.set_result(Exit.from_returncode(returncode, self.stop_requested))


def _command_arg(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)  # type: ignore[return-value]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"process argument: expected str, int or os.PathLike, got {value!r}")


def process_start(
    argv: Sequence[str] | Callable[..., Sequence[str]],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> StartFn:
    """A `StartFn` that runs a program in its own OS process (see the module docstring).

    Args:
        argv: the command line; the start args are appended to it (each a str,
            int or path). Or a callable, called as ``argv(*start_args,
            incarnation=...)`` with a fresh incarnation id, returning the
            command line: use it to give each process an identity of its own.
        env: the environment (default: inherited).
        cwd: the working directory (default: inherited).

    Returns:
        An async function returning a `ProcessChild` once the program has been
        exec'ed. It raises `OSError` if the program cannot be executed (the
        supervisor reports that as a failed start).

    Raises:
        TypeError: a static `argv` that is empty or holds a non-string.
    """
    if not callable(argv):
        static = [_command_arg(a) for a in argv]
        if not static:
            raise TypeError("process_start: argv is empty")
    env_dict = dict(env) if env is not None else None

    async def start(*start_args: Any) -> ProcessChild:
        incarnation = secrets.token_hex(8)
        if callable(argv):
            command = [_command_arg(a) for a in argv(*start_args, incarnation=incarnation)]
        else:
            command = [*static, *(_command_arg(a) for a in start_args)]
        if not command:
            raise TypeError("process_start: the argv callable returned an empty command line")
        return await _launch(command, env_dict, cwd, incarnation)

    start.__qualname__ = "process_start(...)"
    return start


async def _launch(command: list[str], env: dict[str, str] | None, cwd: str | os.PathLike[str] | None,
                  incarnation: str) -> ProcessChild:
    loop = asyncio.get_running_loop()
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(wfd), str(os.getpid()), *command]
        proc = subprocess.Popen(launcher, env=env, cwd=cwd, stdin=subprocess.DEVNULL, pass_fds=(wfd,))
    except BaseException:
        os.close(rfd)
        raise
    finally:
        os.close(wfd)
    child = ProcessChild(proc, incarnation, f"{os.path.basename(command[0])}:{proc.pid}")
    try:
        os.set_blocking(rfd, False)
        error = await _read_to_eof(loop, rfd)
    except BaseException:
        child.kill()
        raise
    finally:
        os.close(rfd)
    if error:
        await asyncio.shield(child.exited)  # the launcher exits at once after reporting
        raise OSError(error.decode("utf-8", "replace"))
    logger.debug("started %s (incarnation %s)", child.name, incarnation)
    return child


async def _read_to_eof(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            chunks.append(data)
        elif not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


def _is_child(value: object) -> bool:
    """True for a started `Child` (the shape a start function must return besides IGNORE)."""
    return not isinstance(value, Ignore) and isinstance(value, Child)
