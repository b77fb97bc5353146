"""Test mode for users' code: `actorq.testing.TaskRecorder`, its pytest plugin, and the demo suite.

The in-memory journal itself is checked by the journal contract suite (tests/journal,
backend ``memory``); these tests cover what is its own: rollback, one node, the recorder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import actorq
import actorq.journal
from actorq.errors import JournalError, JournalLocked, QueueFull
from actorq.journal.memory import MemoryJournal
from actorq.journal.protocol import NewJob, QueueLimits
from actorq.testing import ManualClock, TaskRecorder

ROOT = Path(__file__).resolve().parent.parent


def _job(job_id: str) -> NewJob:
    return NewJob(id=job_id, queue="q", task="t", payload=b"\x92\x90\x80")


def test_a_transaction_that_raises_leaves_nothing_behind() -> None:
    journal = MemoryJournal(clock=ManualClock(1_000.0))
    journal.enqueue([_job("kept")])
    with pytest.raises(RuntimeError), journal.transaction():
        journal.enqueue([_job("gone")])
        journal.cancel("kept")
        raise RuntimeError("boom")
    assert journal.get("gone") is None and journal.get("kept").state is actorq.JobState.READY  # type: ignore[union-attr]
    with pytest.raises(JournalError) as refused:  # the schema's CHECK, as on SQLite: the whole batch
        journal.enqueue([_job("a"), NewJob(id="b", queue="q", task="t", payload=b"", max_attempts=0)])
    assert refused.value.refused and journal.get("a") is None


def test_one_node_per_store_and_handles_share_it() -> None:
    first = MemoryJournal()
    second = first.reopen()
    first.attach_node()
    with pytest.raises(JournalLocked):
        second.attach_node()
    second.enqueue([_job("seen")])
    assert first.get("seen") is not None and first.try_lead("cron", "n1", 30) and not second.try_lead("cron", "n2", 30)
    first.close()
    second.attach_node()  # the node lock went with the handle that held it
    with pytest.raises(JournalError):
        first.counts()


tasks = actorq.TaskRegistry()
RUNS: list[tuple[str, int]] = []


@tasks.task("flaky", max_attempts=3)
def flaky(name: str) -> None:
    RUNS.append((name, actorq.current_job().attempt))
    raise OSError(f"{name}: down")


@tasks.task("async_add")
async def async_add(a: int, b: int) -> int:
    return a + b


@tasks.task("fan_out")
def fan_out(n: int) -> None:
    RECORDER[0].enqueue_many([async_add.job(i, i) for i in range(n)])


@tasks.task("forever")
def forever() -> None:
    RECORDER[0].enqueue(actorq.Job("forever"))


RECORDER: list[TaskRecorder] = []


@pytest.fixture
def recorder() -> TaskRecorder:
    RUNS.clear()
    RECORDER[:] = [TaskRecorder(tasks, clock=ManualClock(1_000_000.0))]
    return RECORDER[0]


def test_a_failing_job_follows_its_retry_policy_until_dead(recorder: TaskRecorder) -> None:
    job_id = recorder.enqueue(flaky.job("x"))
    result = recorder.drain(raise_errors=False)
    assert result.failed == [job_id] and recorder.get(job_id).state is actorq.JobState.RETRY
    assert recorder.drain(raise_errors=False).ran == 0  # the retry waits for its backoff
    assert recorder.drain(with_scheduled=True, raise_errors=False).failed == [job_id, job_id]
    info = recorder.get(job_id)
    assert info.state is actorq.JobState.DEAD and info.errors == ["OSError: x: down"] * 3
    assert RUNS == [("x", 1), ("x", 2), ("x", 3)]


def test_jobs_enqueued_by_jobs_run_in_the_same_drain_and_async_tasks_run(recorder: TaskRecorder) -> None:
    recorder.enqueue(fan_out.job(3))
    assert recorder.drain().ran == 4
    assert sorted(recorder.result(j.id) for j in recorder.enqueued("async_add")) == [0, 2, 4]
    recorder.enqueue(actorq.Job("forever"))
    with pytest.raises(RuntimeError, match="enqueues jobs forever"):
        recorder.drain(limit=5)


def test_assert_enqueued_says_what_was_there(recorder: TaskRecorder) -> None:
    recorder.enqueue(async_add.job(1, 2))
    recorder.assert_enqueued("async_add", (1, 2))  # a tuple compares as the list it reads back as
    with pytest.raises(AssertionError) as missing:
        recorder.assert_enqueued(task="async_add", args=[9, 9])
    assert "found 0" in str(missing.value) and "async_add(args=[1, 2], kwargs={})" in str(missing.value)
    with pytest.raises(AssertionError):
        recorder.refute_enqueued(task="async_add")
    assert recorder.clear() == 1 and recorder.enqueued() == []


def test_unknown_tasks_go_dead_and_the_journal_s_rules_hold(recorder: TaskRecorder) -> None:
    job_id = recorder.enqueue(actorq.Job("nobody.knows"))
    assert recorder.drain(raise_errors=False).failed == [job_id]
    assert recorder.get(job_id).state is actorq.JobState.DEAD
    recorder.journal.declare_queues([QueueLimits("small", max_depth=1)])
    recorder.enqueue(actorq.Job("async_add", (1, 1)), "small")
    with pytest.raises(QueueFull):
        recorder.enqueue(actorq.Job("async_add", (2, 2)), "small")
    first = recorder.enqueue(actorq.Job("async_add", (0, 0), concurrency_key="k", on_conflict="discard"))
    assert first is not None
    assert recorder.enqueue(actorq.Job("async_add", (0, 1), concurrency_key="k", on_conflict="discard")) is None


def test_the_demo_app_s_suite_passes_with_the_installed_plugin() -> None:
    """examples/testing_demo is a project's own test suite: the fixtures come from the plugin
    actorq installs (the pytest11 entry point), not from this repository's conftest."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/testing_demo"],
                            cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 passed" in result.stdout, result.stdout


THIRD_PARTY = '''
import pytest
from actorq.journal.contract import MemoryBackend
from actorq.journal.contract.journal_tests import *  # noqa: F401,F403
from actorq.journal.contract.rules_tests import *  # noqa: F401,F403


class TheirBackend(MemoryBackend):
    """Stands for a backend of another package: the fixtures are all it gives."""


@pytest.fixture
def backend():
    b = TheirBackend()
    yield b
    b.close()


@pytest.fixture
def journal(backend):
    return backend.open()
'''


def test_another_backend_runs_the_shipped_contract_suite(tmp_path: Path) -> None:
    """A project outside this repository runs the contract from the installed package, with
    nothing of tests/journal: its own `backend` and `journal` fixtures only."""
    (tmp_path / "test_their_journal.py").write_text(THIRD_PARTY)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "b1_ or breaker",
                             "test_their_journal.py"], cwd=tmp_path, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = int(result.stdout.split(" passed")[0].split()[-1])
    assert passed >= 8, result.stdout


def test_what_the_sql_schema_refuses_the_memory_journal_refuses_too() -> None:
    """The contract's checks of SQL constraints are skipped for it (they run SQL); these are
    the same refusals reached through the protocol."""
    journal = MemoryJournal()
    journal.enqueue([NewJob(id="a", queue="q", task="t", payload=b"", max_attempts=1, unique_key="k")])
    [leased] = journal.lease(["q"], "w1", 1, 60.0)
    journal.fail([actorq.journal.Failure("a", leased.lease_id, "OSError: x", actorq.JobState.READY)])
    with pytest.raises(JournalError):  # attempts <= max_attempts: a lease past them is refused, whole
        journal.lease(["q"], "w1", 1, 60.0)
    assert journal.get("a").state is actorq.JobState.READY  # type: ignore[union-attr]
    assert journal.cancel("a")
    journal.enqueue([NewJob(id="b", queue="q", task="t", payload=b"", unique_key="k")])
    [b] = journal.lease(["q"], "w1", 1, 60.0)
    journal.fail([actorq.journal.Failure("b", b.lease_id, "OSError: x", actorq.JobState.DEAD)])
    journal.enqueue([NewJob(id="c", queue="q", task="t", payload=b"", unique_key="k")])
    with pytest.raises(JournalError):  # the unique index of live keys
        journal.retry_dead("b")


def test_drain_runs_an_async_task_from_inside_a_running_loop(recorder: TaskRecorder) -> None:
    import asyncio

    async def an_async_test() -> int:
        job_id = recorder.enqueue(async_add.job(20, 22))
        recorder.drain()
        return recorder.result(job_id)  # type: ignore[arg-type]

    assert asyncio.run(an_async_test()) == 42


def test_a_queue_ref_of_the_recorder_asks_as_a_node_s_does(recorder: TaskRecorder) -> None:
    import asyncio

    queue = recorder.queue("math")
    assert asyncio.run(queue.ask(async_add.job(1, 2))) == 3
    with pytest.raises(actorq.JobFailed):
        asyncio.run(queue.ask(actorq.Job("nobody.knows")))  # an unknown task: dead at once
    with pytest.raises(actorq.AskTimeout):  # a retry waits for its backoff, by the clock
        asyncio.run(queue.ask(flaky.job("y")))
    with pytest.raises(actorq.AskTimeout):  # so does a delayed job
        asyncio.run(queue.ask(actorq.Job("async_add", (1, 1), delay=60)))
    recorder.clock.advance(60)  # type: ignore[attr-defined]
    assert recorder.drain(queue="math", raise_errors=False).succeeded != []
    assert [j.queue for j in recorder.enqueued("async_add")] == ["math", "math"]
