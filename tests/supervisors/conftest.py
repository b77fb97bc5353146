"""Fixtures for the supervisor suite (helpers live in `supkit`).

* ``kit``: parametrised over ``actor`` and ``process`` children.
* ``clock``: a `FakeClock` for restart intensity windows.
* ``exits``: records every child exit through the ``on_child_exit`` hook.
* Every test ends with no live child process (checked with psutil).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from supkit import ActorKit, Exits, FakeClock, Kit, ProcessKit, live_children


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
    deadline = time.monotonic() + 5.0
    leftovers = live_children()
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.02)
        leftovers = live_children()
    described = []
    for child in leftovers:
        try:
            described.append(f"pid {child.pid}: {' '.join(child.cmdline())[:100]}")
            child.kill()
        except psutil.NoSuchProcess:
            pass
    assert not leftovers, f"child processes left behind: {described}"

