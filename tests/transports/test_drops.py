"""`DropCounter`: every drop counted by reason, at most one log line a second (G1's rate-limited log)."""

from __future__ import annotations

import logging

import pytest

from actorq.transports.drops import DropCounter

LOGGER = "actorq.test.drops"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_drops_is_counted_in_full_and_logged_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    drops = DropCounter("control", logging.getLogger(LOGGER), clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for n in range(10_000):
            drops.drop("too_deep" if n % 2 else "bad_body", "detail")
        clock.now += 0.999
        drops.drop("part_count")
        clock.now += 0.001
        drops.drop("part_count")
    assert drops.total == 10_002
    assert drops.by_reason == {"too_deep": 5000, "bad_body": 5000, "part_count": 2}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0] == "control: dropped a frame (bad_body: detail); 1 so far {'bad_body': 1}"
    assert lines[1].startswith("control: dropped a frame (part_count); 10002 so far")


def test_the_event_names_what_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    failures = DropCounter("control", logging.getLogger(LOGGER), event="a request failed", clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        try:
            raise RuntimeError("no tree")
        except RuntimeError:
            failures.drop("failed", "tree: RuntimeError: no tree", exc_info=True)
    [record] = caplog.records
    assert record.getMessage().startswith("control: a request failed (failed: tree: RuntimeError: no tree); 1 so far")
    assert record.exc_info is not None
