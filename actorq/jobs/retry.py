"""Retries: how long a failed job waits before its next attempt, and which errors are retried.

A task declares its backoff with `RetryPolicy` (exponential, linear or fixed: plain data
that travels as JSON to the node, which computes the wait) or with a function
``(attempt, exc) -> seconds``, which stays in the worker: the worker calls it where the
task raised and sends the wait with its ACK (`Backoff`, `backoff_delay`).

Which exceptions are retried is decided in the worker too, where the classes live
(`retryable`). A task raises one of these to say what its error means:

* `Retry`: try again, after the given delay (or the backoff); it counts as an attempt.
* `TransientError`: base class of errors worth another try, whatever the task's
  ``retry_on`` / ``dont_retry_on`` say.
* `PermanentError`: base class of errors no retry can mend: the job ends ``failed`` at once.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

__all__ = [
    "BACKOFF_KINDS", "Backoff", "MAX_RETRY_DELAY", "PermanentError", "Retry", "RetryPolicy", "TransientError",
    "backoff_delay", "check_delay", "retryable",
]

BACKOFF_KINDS = ("exponential", "linear", "fixed", "function")
MAX_RETRY_DELAY = 366 * 86400
"""The longest wait before a retry, in seconds (a year): a `Retry` delay, a backoff function's
value (longer ones are cut to it) and a policy's `cap` are at most this."""

Backoff = Callable[[int, BaseException], float]
"""A backoff function: ``(attempt, exc) -> seconds`` to wait after failed attempt number
`attempt` (1-based) that raised `exc` (a `TimeoutError` for an attempt that ran past its
time limit). It runs in the worker process, on its event loop: keep it quick."""


def _seconds(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value <= MAX_RETRY_DELAY)


def check_delay(delay: object) -> float:
    """`delay` as a float if it is a finite number of seconds from 0 to `MAX_RETRY_DELAY`.

    Raises:
        ValueError: naming the value and what is expected.
    """
    if not _seconds(delay):
        raise ValueError(f"a retry delay must be a number of seconds from 0 to {MAX_RETRY_DELAY:,}, got {delay!r}")
    return float(delay)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The wait after a failed attempt number ``n`` (1-based), then spread by ± `jitter`::

        kind         wait                                 with the defaults (base 1, factor 2)
        exponential  min(cap, base * factor ** (n - 1))   1 s, 2 s, 4 s, ... up to an hour
        linear       min(cap, base * n)                   1 s, 2 s, 3 s, ... up to an hour
        fixed        base                                 1 s every time
        function     what the task's function returned    (without it: the exponential one)

    Make one with ``RetryPolicy(...)`` (exponential), `linear` or `fixed`. The ``function``
    kind is what the node knows of a task declared with a backoff function (the function
    itself stays in the worker): the worker sends its value with each failed attempt; when
    it has none (the function raised or returned no number) the exponential formula of
    `base`, `factor` and `cap` applies.

    Attributes:
        base: seconds before the second attempt (at most `MAX_RETRY_DELAY`).
        factor: growth per attempt (exponential only), >= 1.
        cap: the longest wait, in seconds (at most `MAX_RETRY_DELAY`; not for ``fixed``).
        jitter: relative spread (0.2 = ±20 %) so that failed jobs do not retry in lockstep.
        kind: one of `BACKOFF_KINDS`.

    Raises:
        ValueError: a kind or a number out of range (naming the policy and what is expected).
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.2
    kind: str = "exponential"

    def __post_init__(self) -> None:
        if self.kind not in BACKOFF_KINDS:
            raise ValueError(f"retry kind must be one of {', '.join(BACKOFF_KINDS)}, got {self.kind!r}")
        numbers = (self.base, self.factor, self.cap, self.jitter)
        if (not all(isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) for n in numbers)
                or not 0 <= self.base <= MAX_RETRY_DELAY or self.factor < 1 or not 0 <= self.cap <= MAX_RETRY_DELAY
                or not 0 <= self.jitter < 1):
            raise ValueError(f"invalid retry policy {self!r}: base and cap from 0 to {MAX_RETRY_DELAY:,} s, factor >= 1 "
                             f"and jitter in [0, 1) are expected")

    @classmethod
    def linear(cls, base: float = 1.0, *, cap: float = 3600.0, jitter: float = 0.2) -> "RetryPolicy":
        """Waits that grow by `base` seconds per attempt: base, 2 x base, 3 x base, ... up to `cap`."""
        return cls(base=base, cap=cap, jitter=jitter, kind="linear")

    @classmethod
    def fixed(cls, seconds: float, *, jitter: float = 0.0) -> "RetryPolicy":
        """The same wait, `seconds`, after every failed attempt (no jitter unless asked)."""
        return cls(base=seconds, jitter=jitter, kind="fixed")

    def delay(self, attempt: int, spread: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based), by the formula of `kind`
        (a ``function`` policy without the worker's value: the exponential one).

        Args:
            attempt: the attempt that failed.
            spread: where in the jitter band to land, in [0, 1) (0: the shortest wait);
                None draws it at random.
        """
        if spread is None:
            spread = random.random()
        n = max(1, attempt)
        if self.kind == "fixed":
            wait = self.base
        elif self.kind == "linear":
            wait = min(self.cap, self.base * n)
        else:
            try:
                wait = min(self.cap, self.base * self.factor ** (n - 1))
            except OverflowError:  # 2.0 ** 1024: far past any cap
                wait = self.cap
        return wait * (1 - self.jitter + 2 * self.jitter * spread)


class Retry(Exception):
    """Raise inside a task to have its job tried again after `delay` seconds.

    The attempt counts like any other: the job retries only while attempts are left
    (``attempt < max_attempts``); raised on its last attempt, the job goes ``dead``
    like any exception. It is retried whatever the task's ``retry_on`` / ``dont_retry_on``.

    Args:
        delay: seconds from the end of the attempt to the next one (0 to `MAX_RETRY_DELAY`);
            None: the task's backoff.
        reason: recorded as the attempt's error (``"Retry: <reason>"``).

    Raises:
        ValueError: `delay` is not None or a finite number of seconds in range.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        self.delay = None if delay is None else check_delay(delay)
        self.reason = reason
        super().__init__(delay, reason)

    def __str__(self) -> str:
        when = "after the backoff" if self.delay is None else f"in {self.delay:g} s"
        return f"{self.reason} (retry {when})" if self.reason else f"retry {when}"


class TransientError(Exception):
    """Base class of errors that may pass if tried again (a timeout, a busy service).

    Raised by a task, it is retried (while attempts are left) even when the task's
    ``retry_on`` does not name it or its ``dont_retry_on`` does.
    """


class PermanentError(Exception):
    """Base class of errors that no retry can mend (bad input, a record that is gone).

    Raised by a task, its job ends ``failed`` at once, with the error and its traceback,
    whatever attempts are left and whatever the task's ``retry_on`` says.
    """


def retryable(exc: BaseException, retry_on: tuple[type[BaseException], ...],
              dont_retry_on: tuple[type[BaseException], ...]) -> bool:
    """Whether a task's exception is worth another attempt (attempts left or not).

    In order: `Retry` and `TransientError` are; `PermanentError` is not; then one that
    is an instance of a class in `dont_retry_on` is not; then, when `retry_on` is not
    empty, only one of its classes is. With neither list, every exception is.
    """
    if isinstance(exc, (Retry, TransientError)):
        return True
    if isinstance(exc, PermanentError):
        return False
    if dont_retry_on and isinstance(exc, dont_retry_on):
        return False
    return not retry_on or isinstance(exc, retry_on)


def backoff_delay(backoff: Backoff, attempt: int, exc: BaseException) -> float | None:
    """Call a backoff function; returns its value made fit for an ACK, or None.

    A value past `MAX_RETRY_DELAY` is cut to it, a negative one is 0; None when the
    function raised or returned something else than a finite number (the caller logs it;
    the node then uses the exponential formula). Never raises.
    """
    try:
        value = backoff(attempt, exc)
    except Exception:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(min(max(value, 0.0), MAX_RETRY_DELAY))
