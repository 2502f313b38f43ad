"""Restart policy: exit reasons, backoff and the circuit breaker, without workers."""

from __future__ import annotations

import pytest

from autoweave_plugins.recovery import CircuitBreaker, ExitReason, backoff_delay


def test_exit_reasons_compare_equal_to_their_names() -> None:
    memory: str = ExitReason.MEMORY
    assert memory == "memory" and f"{ExitReason.IDLE}" == "idle"
    assert ExitReason.of("unhealthy") is ExitReason.UNHEALTHY
    assert ExitReason.of("no such reason") is ExitReason.CRASHED


@pytest.mark.parametrize(
    ("reason", "crash"),
    [
        ("crashed", True),
        ("protocol", True),
        ("unhealthy", True),
        ("memory", True),
        ("timeout", True),
        ("idle", False),
        ("shutdown", False),
        ("reload", False),
    ],
)
def test_which_exits_are_crashes(reason: str, crash: bool) -> None:
    assert ExitReason.of(reason).is_crash is crash


def test_protocol_is_reported_as_a_crash() -> None:
    assert ExitReason.PROTOCOL.reported is ExitReason.CRASHED
    assert all(r.reported is r for r in ExitReason if r is not ExitReason.PROTOCOL)


def test_backoff_doubles_with_bounded_jitter_up_to_the_cap() -> None:
    assert [backoff_delay(n, 0.1, 10.0, jitter=lambda: 0.0) for n in (1, 2, 3, 4)] == [
        0.1,
        0.2,
        0.4,
        0.8,
    ]
    assert backoff_delay(1, 0.1, 10.0, jitter=lambda: 0.5) == pytest.approx(0.15)
    assert backoff_delay(200, 0.1, 10.0, jitter=lambda: 0.999) == 10.0  # no float overflow
    with pytest.raises(ValueError, match="1-based"):
        backoff_delay(0, 0.1, 10.0)


def test_breaker_opens_at_the_threshold_within_the_window() -> None:
    breaker = CircuitBreaker(threshold=3, window=10.0)
    assert not breaker.record_crash(0.0) and not breaker.record_crash(5.0)
    assert not breaker.record_crash(20.0)  # the first two fell out of the window
    assert not breaker.record_crash(25.0)
    assert breaker.record_crash(29.0) and breaker.open
    assert not breaker.record_crash(30.0)  # True only for the crash that opens it
    breaker.reset()
    assert not breaker.open and not breaker.crashes
