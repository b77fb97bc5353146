"""What the ``actorq`` commands share: argparse types that check each flag where it is read
(a problem is one line naming the flag and its range, G12), a few bounds, and how a line
is written to stdout or stderr."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

from actorq.journal.config import parse_duration
from actorq.journal.protocol import TERMINAL_STATES, JobState

__all__ = ["FINAL_STATES", "MAX_PRUNE_BATCH", "MAX_WAIT", "PRUNE_BATCH", "age_flag", "duration_text", "err",
           "final_state_flag", "integer_flag", "job_id_flag", "out", "queue_name_flag", "seconds_flag"]

MAX_WAIT = 3_600.0  # seconds `actorq tree`, `status` and `health` wait for the node at most
PRUNE_BATCH = 1_000  # jobs `actorq jobs prune` deletes per transaction: a node beside it waits one batch at most
MAX_PRUNE_BATCH = 100_000
# the final states in the order a person reads them
FINAL_STATES = (JobState.SUCCEEDED, JobState.CANCELLED, JobState.FAILED, JobState.DEAD)


def integer_flag(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers from `low` to `high`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text!r}")
        return value
    return parse


def seconds_flag(low: float, high: float, *, low_allowed: bool) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number of seconds up to `high`, from `low` (or above it)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        above_low = value >= low if low_allowed else value > low
        if not (math.isfinite(value) and above_low and value <= high):
            expected = f"from {low:.15g} to {high:.15g}" if low_allowed else f"> {low:.15g} and <= {high:.15g}"
            raise argparse.ArgumentTypeError(f"expected seconds {expected}, got {text!r}")
        return value
    return parse


def queue_name_flag(text: str) -> str:
    """An argparse ``type`` for a queue name (the journal checks its length where it matters)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a non-empty queue name, got ''")
    return text


def job_id_flag(text: str) -> str:
    """An argparse ``type`` for a job id: 1 to 255 characters."""
    if not text or len(text) > 255:
        raise argparse.ArgumentTypeError(f"expected a job id of 1 to 255 characters, got {len(text)}")
    return text


def age_flag(text: str) -> float:
    """An argparse ``type`` for an age: ``30s``, ``10m``, ``12h``, ``7d`` or seconds, up to 3650d."""
    try:
        seconds = parse_duration(text, forever=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert seconds is not None
    return seconds


def final_state_flag(text: str) -> JobState:
    """An argparse ``type`` for a final state."""
    if text not in {s.value for s in TERMINAL_STATES}:
        raise argparse.ArgumentTypeError(f"expected a final state, one of {', '.join(s.value for s in FINAL_STATES)}; "
                                         f"got {text[:60]!r}")
    return JobState(text)


def duration_text(seconds: float) -> str:
    """`seconds` as the flag would write it: ``7d``, ``12h``, ``90s``."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"


def out(text: str) -> None:
    """Write one line to stdout, at once (a progress line must show while the work goes on)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    """Write one line to stderr, at once."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
