"""RestartIntensity: OTP's sliding window (more than `intensity` restarts within `period`)."""

from __future__ import annotations

from actorq.supervisors import RestartIntensity


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_restart_exactly_period_old_still_counts_as_in_otp() -> None:
    clock = Clock()
    window = RestartIntensity(1, 5.0, clock)
    assert window.allow()
    clock.now += 5.0  # OTP: Now =< Then + Period is inside the period
    assert not window.allow()


def test_a21_restarts_spaced_wider_than_the_period_never_give_up() -> None:
    clock = Clock()
    window = RestartIntensity(1, 1.0, clock)
    for _ in range(50):
        assert window.allow()
        clock.now += 1.001
    assert window.recent == 0


def test_the_intensity_plus_first_restart_inside_the_period_gives_up() -> None:
    clock = Clock()
    window = RestartIntensity(2, 60.0, clock)
    assert window.allow() and window.allow()
    clock.now += 59.0
    assert not window.allow() and window.recent == 3
