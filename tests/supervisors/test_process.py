"""OS-process children (ACCEPTANCE A29, A30) and the process launcher.

A29: a process child dies with its parent (``PR_SET_PDEATHSIG`` set by the
launcher before exec), whether the parent process is SIGKILLed or the thread
that started the child exits. A30: several threads start and stop actor
systems that run a supervisor with an actor and a process child; no deadlock,
no leaked process, thread or fd. Also: the polling fallback when pidfds are
unavailable, incarnations, start failures, and admin calls from other threads.
A29 has no actor form: an in-process child cannot outlive its process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from supkit import Exits, ProcessKit, TestActor, eventually, pids

from actorq.testing import live_children

from actorq import ActorSystem
from actorq._kernel.loop import new_event_loop
from actorq.supervisors import (
    KILLED,
    NORMAL,
    SHUTDOWN,
    ChildSpec,
    Counts,
    ProcessChild,
    StartFailed,
    SupFlags,
    actor_start,
    process_start,
    start_supervisor,
)

pytestmark = pytest.mark.timeout(60)

SLEEPER = [sys.executable, "-I", "-S", "-c", "import time; time.sleep(600)"]


def wait_until(predicate: Any, what: str, timeout: float = 15.0) -> None:
    """Synchronous bounded poll (no event loop involved)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- A29: children die with their parent -------------------------------------------------------------------------


PARENT_SCRIPT = textwrap.dedent('''
    import asyncio, sys
    from actorq import ActorSystem
    from actorq.supervisors import ChildSpec, SupFlags, process_start, start_supervisor

    async def main():
        async with ActorSystem() as system:
            sup = await start_supervisor(system, SupFlags(), [ChildSpec("w", process_start(
                [sys.executable, "-I", "-S", "-c", "import time; time.sleep(600)"]))])
            [info] = await sup.which_children()
            print(info.pid, flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
''')


async def test_a29_sigkill_the_parent_its_process_child_exits() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, parent.stdout.readline)
        child = int(line)
        assert psutil.Process(child).ppid() == parent.pid and not gone(child)
        parent.kill()
        parent.wait()
        await eventually(lambda: gone(child), f"process child {child} to die with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    assert live_children() == []


def test_a29_a_child_started_from_a_thread_dies_when_that_thread_exits() -> None:
    """PR_SET_PDEATHSIG follows the thread that forked: why children start on the loop thread."""
    started: list[ProcessChild] = []

    def start_in_thread() -> None:
        async def start() -> None:
            child = await process_start(SLEEPER)()
            started.append(child)

        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(start())

    thread = threading.Thread(target=start_in_thread)
    thread.start()
    thread.join()
    [child] = started
    wait_until(lambda: gone(child.pid), f"process {child.pid} to die with its thread")
    # Its watch went with the thread's loop: reap it and close its pidfd by hand.
    assert child.proc.wait() == -signal.SIGKILL
    if child._pidfd is not None:
        os.close(child._pidfd)


# -- A30: start/stop stress ---------------------------------------------------------------------------------------


def fd_targets() -> dict[str, str]:
    targets = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the fd listdir itself used
            pass
    return targets


def open_fds() -> int:
    return len(fd_targets())


def test_a30_threads_start_and_stop_systems_with_a_supervisor(process_kit: ProcessKit) -> None:
    """A30 (CI size): 4 threads x 10 cycles of ActorSystem + supervisor (actor and process child)."""
    threads_before = threading.active_count()
    fds_before = open_fds()
    errors: list[BaseException] = []
    started: list[int] = []

    def cycles(worker: int) -> None:
        try:
            for cycle in range(10):
                with ActorSystem(name=f"a30-{worker}-{cycle}") as system:
                    specs = [ChildSpec("actor", actor_start(TestActor)), ChildSpec("proc", process_start(SLEEPER))]
                    sup = system.call(start_supervisor(system, SupFlags("one_for_all"), specs), 30)
                    counts = system.call(sup.count_children(), 30)
                    assert counts == Counts(specs=2, active=2, supervisors=0, workers=2)
                    started.append(system.call(pids(sup), 30)["proc"])
                assert not sup.ref.is_alive
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=cycles, args=(i,)) for i in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    assert len(started) == 40 and all(gone(pid) for pid in started)
    assert live_children() == []

    # Polled without an event loop: a loop has fds of its own.
    wait_until(lambda: threading.active_count() <= threads_before, "the thread count to settle")
    wait_until(lambda: open_fds() <= fds_before, f"the fd count back to {fds_before}: {fd_targets()}")


def test_admin_calls_from_another_thread_and_loop() -> None:
    with ActorSystem() as system:
        sup = asyncio.run(start_supervisor(system, SupFlags(), [ChildSpec("a", actor_start(TestActor))]))
        [info] = asyncio.run(sup.which_children())
        assert info.id == "a" and info.state == "running"
        pid = asyncio.run(sup.start_child(ChildSpec("p", process_start(SLEEPER))))
        assert isinstance(pid, int)
        asyncio.run(sup.terminate_child("p"))
        asyncio.run(sup.stop())
        assert asyncio.run(sup.wait()) == SHUTDOWN


# -- the launcher and the watch --------------------------------------------------------------------------------------


async def test_process_start_incarnations_args_env_and_cwd(tmp_path: Path) -> None:
    seen: list[tuple[Any, ...]] = []
    out = tmp_path / "out.txt"
    program = "import os, sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + ' ' + os.environ['AQ'] + '\\n')"

    def argv(*args: Any, incarnation: str) -> list[str]:
        seen.append((*args, incarnation))
        return [sys.executable, "-I", "-S", "-c", program, str(out), *map(str, args), incarnation]

    async with ActorSystem() as system:
        exits = Exits()
        sup = await start_supervisor(system, SupFlags("simple_one_for_one"),
                                     [ChildSpec("p", process_start(argv, env={"AQ": "env-ok"}, cwd=tmp_path),
                                                args=("slot",), restart="transient")], on_child_exit=exits)
        first = await sup.start_child((1,))
        second = await sup.start_child((2,))
        assert await exits.wait(first) == await exits.wait(second) == NORMAL
        await sup.stop()
    incarnations = [s[-1] for s in seen]
    assert [s[:-1] for s in seen] == [("slot", 1), ("slot", 2)] and len(set(incarnations)) == 2
    assert sorted(out.read_text().splitlines()) == [f"slot 1 {incarnations[0]} env-ok",
                                                    f"slot 2 {incarnations[1]} env-ok"]
    with pytest.raises(TypeError):
        process_start([])
    with pytest.raises(TypeError):
        process_start([sys.executable, object()])  # type: ignore[list-item]




async def test_process_child_handle_and_failed_start() -> None:
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags(), [ChildSpec("p", process_start(SLEEPER))])
        [info] = await sup.which_children()
        assert isinstance(info.pid, int) and info.ref is None and info.supervisor is None
        with pytest.raises(StartFailed) as failed:
            await sup.start_child(ChildSpec("missing", process_start(["/nonexistent/actorq-program"])))
        assert isinstance(failed.value.reason, OSError) and "/nonexistent/actorq-program" in str(failed.value.reason)
        await sup.stop()


async def test_without_pidfds_exits_are_seen_by_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError("pidfd_open unavailable here")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    async with ActorSystem() as system:
        exits = Exits()
        sup = await start_supervisor(system, SupFlags(intensity=3), [ChildSpec("p", process_start(SLEEPER))],
                                     on_child_exit=exits)
        old = (await pids(sup))["p"]
        os.kill(old, signal.SIGKILL)
        assert await exits.wait(old) == KILLED

        async def replaced() -> bool:
            now = (await pids(sup))["p"]
            return isinstance(now, int) and now != old

        await eventually(replaced, "the restart")
        new = (await pids(sup))["p"]
        await sup.stop()
        assert exits.of(new) == SHUTDOWN


async def test_process_child_signals_after_exit_are_no_ops() -> None:
    child = await process_start([sys.executable, "-I", "-S", "-c", "pass"])()
    assert isinstance(child, ProcessChild) and len(child.incarnation) == 16
    assert (await child.exited).kind == "normal"
    child.stop()
    child.kill()
    assert child.exited.result().kind == "normal"


# -- replace_exit: a child that asks to be replaced is not a crash ---------------------------------------------------

COUNTDOWN = textwrap.dedent('''
    import os, sys, time
    folder, code = sys.argv[1], int(sys.argv[2])
    starts = len(os.listdir(folder))
    open(os.path.join(folder, f"start-{starts}"), "w").close()
    if starts < 5:
        sys.exit(code)  # the first five incarnations exit with the code at once
    time.sleep(600)
''')


@pytest.mark.parametrize(("code", "survives"), [(75, True), (3, False)])
async def test_an_exit_with_the_replace_code_restarts_outside_intensity(tmp_path: Path, code: int,
                                                                        survives: bool) -> None:
    """Five exits in a row with intensity 1: with the spec's ``replace_exit`` code each is
    replaced and the supervisor lives on; with any other code it gives up at the second."""
    starts = tmp_path / "starts"
    starts.mkdir()
    argv = [sys.executable, "-I", "-S", "-c", COUNTDOWN, str(starts), str(code)]
    async with ActorSystem() as system:
        sup = await start_supervisor(system, SupFlags("one_for_one", intensity=1, period=3600),
                                     [ChildSpec("w", process_start(argv), replace_exit=75)])
        if survives:
            await eventually(lambda: len(list(starts.iterdir())) == 6, "the sixth incarnation to start")
            [info] = await sup.which_children()
            assert sup.ref.is_alive and info.pid is not None and not gone(info.pid)
            assert (await sup.count_children()).active == 1
            await sup.stop()
        else:
            await eventually(lambda: not sup.ref.is_alive, "the supervisor to give up")
            assert "reached_max_restart_intensity" in str(sup.ref.exit_reason)
            assert len(list(starts.iterdir())) == 2  # the first start and one counted restart
    assert live_children() == []


def test_replace_exit_is_an_exit_code() -> None:
    from actorq.supervisors import InvalidChildSpec
    for bad in (0, 256, -1, True, "75", 7.5):
        with pytest.raises(InvalidChildSpec, match="replace_exit: expected None or an exit code from 1 to 255"):
            ChildSpec("w", process_start(SLEEPER), replace_exit=bad)
