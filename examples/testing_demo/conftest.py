"""The shop's tests get actorq's fixtures from its pytest plugin; this file only says which
task registry the recorder runs, and empties the app's outbox between tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shop  # noqa: E402


@pytest.fixture
def actorq_tasks() -> shop.actorq.TaskRegistry:
    return shop.tasks


@pytest.fixture(autouse=True)
def empty_outbox() -> Iterator[None]:
    shop.OUTBOX.clear()
    shop.LEDGER.clear()
    yield
