"""actorq's pytest plugin: fixtures for testing code that enqueues and runs actorq jobs.

Installed with actorq (the ``pytest11`` entry point ``actorq``), so the fixtures are there in
any project's tests without an import (docs/testing.md):

* ``actorq_clock``: a `actorq.testing.ManualClock` (``actorq_clock.advance(60)``).
* ``actorq_journal``: an in-memory journal (`actorq.journal.MemoryJournal`) on that clock.
* ``actorq_tasks``: the registry the recorder runs; None unless the project's conftest.py
  overrides the fixture to return its own.
* ``actorq_recorder``: a `actorq.testing.TaskRecorder`: enqueues are recorded, ``drain()`` runs them.
* ``actorq_inline``: the same in inline mode: each enqueue runs its jobs before it returns.
* ``actorq_clients``: ``actorq_recorder``, with every `actorq.Client` and `actorq.AsyncClient` the test
  creates recording into it.

A module of its own, so that importing `actorq.testing` (a worker writing to a `Ledger`) does
not import pytest.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from actorq.journal.memory import MemoryJournal
from actorq.testing import ManualClock, TaskRecorder

# the shipped contract suite's asserts explain themselves, as a test module's do
pytest.register_assert_rewrite("actorq.journal.contract")


@pytest.fixture
def actorq_clock() -> ManualClock:
    """A wall clock the test moves by hand, at the real time when the test starts."""
    return ManualClock()


@pytest.fixture
def actorq_journal(actorq_clock: ManualClock) -> Iterator[MemoryJournal]:
    """A fresh in-memory journal on `actorq_clock`."""
    journal = MemoryJournal(clock=actorq_clock)
    yield journal
    journal.close()


@pytest.fixture
def actorq_tasks() -> Any:
    """The task registry whose functions the recorder runs: override it in a conftest.py to
    return your application's `actorq.TaskRegistry` (None: jobs are recorded, not run)."""
    return None


@pytest.fixture
def actorq_recorder(actorq_tasks: Any, actorq_journal: MemoryJournal, actorq_clock: ManualClock) -> TaskRecorder:
    """A `TaskRecorder`: enqueues are recorded; ``drain()`` runs them inline."""
    return TaskRecorder(actorq_tasks, clock=actorq_clock, journal=actorq_journal)


@pytest.fixture
def actorq_clients(actorq_recorder: TaskRecorder, monkeypatch: Any) -> TaskRecorder:
    """`actorq_recorder`, with every `actorq.Client` and `actorq.AsyncClient` the test creates recording into it
    (`TaskRecorder.patch_clients`): for code that makes its own client from a URL."""
    actorq_recorder.patch_clients(monkeypatch)
    return actorq_recorder


@pytest.fixture
def actorq_inline(actorq_tasks: Any, actorq_journal: MemoryJournal, actorq_clock: ManualClock) -> TaskRecorder:
    """A `TaskRecorder` in inline mode: every enqueue runs the ready jobs before it returns."""
    return TaskRecorder(actorq_tasks, clock=actorq_clock, journal=actorq_journal, inline=True)
