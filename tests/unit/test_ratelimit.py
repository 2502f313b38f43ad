"""The one token bucket: starts full, refills at its rate, never saves more than its burst."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_new_bucket_allows_its_burst_then_denies() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock=clock)
    assert [bucket.allow() for _ in range(7)] == [True] * 5 + [False] * 2
    assert bucket.denied == 2


def test_tokens_come_back_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 5, clock=clock)
    while bucket.allow():
        pass
    clock.now += 0.25  # 2.5 tokens
    assert [bucket.allow() for _ in range(3)] == [True, True, False]


def test_an_idle_bucket_saves_no_more_than_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(100.0, 3, clock=clock)
    clock.now += 3600.0
    assert sum(bucket.allow() for _ in range(10)) == 3


def test_a_zero_rate_bucket_never_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(0.0, 1, clock=clock)
    assert bucket.allow()
    clock.now += 1e6
    assert not bucket.allow()


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        TokenBucket(-1.0, 1)
    with pytest.raises(ValueError, match="must not be negative"):
        TokenBucket(1.0, -1)


@given(
    rate=st.floats(0.0, 1000.0),
    burst=st.integers(0, 50),
    steps=st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(0, 40)), max_size=30),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    clock = Clock()
    start = clock.now
    bucket = TokenBucket(rate, burst, clock=clock)
    allowed = tried = 0
    for advance, attempts in steps:
        clock.now += advance
        for _ in range(attempts):
            tried += 1
            allowed += bucket.allow()
    assert allowed <= burst + rate * (clock.now - start) + 1e-6
    assert bucket.denied == tried - allowed
