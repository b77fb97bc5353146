"""Fixtures for the supervisor suite (helpers live in `supkit`).

The suite ports OTP's ``supervisor_SUITE`` as ACCEPTANCE section A lists it;
each test names its id. Where each one lives, and on which children:

=========================  ==========================================  ===================
ids                        file                                        children
=========================  ==========================================  ===================
A1, A3-A5, A8-A11          test_start_stop.py                          actor and process
A2                         test_start_stop.py                          none (init ignores)
A6, A7                     test_spec.py                                none (specs, flags)
A12-A21, A24, A25          test_restart.py                             actor and process
A22, A23, A28              test_tree.py                                actor and process
A26                        test_tree.py                                actor
A27                        test_tree.py                                actor
A29, A30                   test_process.py (A30 also tests/kernel)     process (A30: both)
=========================  ==========================================  ===================

What does not apply, and why:

* A6's ``topology.toml`` half (file, key path, "did you mean"): that is the
  node's config loader, not this package.
* A11's ``extra_return``: a start function returns a child or IGNORE; there
  is no ``{ok, Pid, Extra}``.
* A12-A14 "exits with shutdown by itself" for process children: a process's
  ``shutdown`` is always the supervisor's request (SIGTERM, or exit 0 after
  it); a SIGTERM from anyone else is an abnormal exit. Those cases skip.
* A26 on process children: it measures what the supervisor keeps, which does
  not depend on the kind of child; 300 processes would only slow the suite.
* A27 on process children: it is about actor names and refs; a supervisor
  never reuses an OS pid.
* A29 on actor children: an in-process child cannot outlive its process.

* ``kit``: parametrised over ``actor`` and ``process`` children.
* ``clock``: a `FakeClock` for restart intensity windows.
* ``exits``: records every child exit through the ``on_child_exit`` hook.
* Every test ends with no live child process (checked with psutil).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from supkit import ActorKit, Exits, FakeClock, Kit, ProcessKit

from actorq.testing import kill_leftover_children


@pytest.fixture(params=["actor", "process"])
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Kit:
    """Children of either kind (the test runs once per kind)."""
    if request.param == "actor":
        return ActorKit()
    return ProcessKit(tmp_path)


@pytest.fixture
def process_kit(tmp_path: Path) -> ProcessKit:
    """Process children only."""
    return ProcessKit(tmp_path)


@pytest.fixture
def actor_kit() -> ActorKit:
    """Actor children only."""
    return ActorKit()


@pytest.fixture
def clock() -> FakeClock:
    """A hand-moved monotonic clock."""
    return FakeClock()


@pytest.fixture
def exits() -> Exits:
    """An ``on_child_exit`` recorder."""
    return Exits()


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Every test must leave no child process running (A1)."""
    yield
    leftovers = kill_leftover_children(5.0)
    assert not leftovers, f"child processes left behind: {leftovers}"

