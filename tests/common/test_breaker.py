"""The circuit breaker's state machine, on a fake clock (the integration is in test_resilience)."""

from __future__ import annotations

import pytest

from common.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from common.errors import CircuitOpen


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_consecutive_failures() -> None:
    """Four failures leave it closed, the fifth opens it; a success in between resets the count."""
    b = CircuitBreaker("x", threshold=5, reset_seconds=10, clock=Clock())
    for _ in range(4):
        b.record(False)
    b.record(True)
    for _ in range(4):
        b.record(False)
    assert b.state == CLOSED
    b.record(False)
    assert b.state == OPEN


def test_open_fails_fast_with_retry_after() -> None:
    """While open, calls are refused with 503 and the seconds left."""
    clock = Clock()
    b = CircuitBreaker("S3", threshold=1, reset_seconds=10, clock=clock)
    b.record(False)
    clock.now += 3.5
    with pytest.raises(CircuitOpen) as info:
        b.before_call()
    assert info.value.status == 503
    assert info.value.retry_after == 7
    assert info.value.code == "backend_unavailable"


def test_half_open_lets_one_trial_through() -> None:
    """After the reset time one call goes through; others wait for its outcome."""
    clock = Clock()
    b = CircuitBreaker("x", threshold=1, reset_seconds=5, clock=clock)
    b.record(False)
    clock.now += 5
    assert b.state == HALF_OPEN
    b.before_call()  # the trial
    with pytest.raises(CircuitOpen):
        b.before_call()
    b.record(True)
    assert b.state == CLOSED
    b.before_call()


def test_failed_trial_opens_again() -> None:
    """A failing trial call re-opens the circuit for another full period."""
    clock = Clock()
    b = CircuitBreaker("x", threshold=3, reset_seconds=5, clock=clock)
    for _ in range(3):
        b.record(False)
    clock.now += 5
    b.before_call()
    b.record(False)
    assert b.state == OPEN
    assert b.retry_after() == 5


def test_a_lost_trial_expires() -> None:
    """A trial that never reported (its request was cancelled) does not block forever."""
    clock = Clock()
    b = CircuitBreaker("x", threshold=1, reset_seconds=5, clock=clock)
    b.record(False)
    clock.now += 5
    b.before_call()
    clock.now += 5
    b.before_call()  # a new trial is allowed


def test_threshold_zero_disables() -> None:
    """BREAKER_THRESHOLD=0 turns the breaker off."""
    b = CircuitBreaker("x", threshold=0, reset_seconds=5, clock=Clock())
    for _ in range(100):
        b.record(False)
    b.before_call()
