"""Restart policy: capped exponential backoff with bounded jitter, and a circuit breaker."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

__all__ = ["CircuitBreaker", "backoff_delay"]


def backoff_delay(
    attempt: int, base: float, cap: float, jitter: Callable[[], float] = random.random
) -> float:
    """Delay before restart ``attempt`` (1-based): ``min(cap, base * 2**(n-1) + U(0, base))``."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    exponent = min(attempt - 1, 62)  # 2**62 * base is far past any cap; avoid float overflow
    return min(cap, base * 2.0**exponent + jitter() * base)


class CircuitBreaker:
    """Opens after ``threshold`` crashes within ``window`` seconds; stays open until reset."""

    def __init__(self, threshold: int, window: float) -> None:
        self.threshold = threshold
        self.window = window
        self.crashes: deque[float] = deque()
        self.open = False

    def record_crash(self, now: float) -> bool:
        """Count a crash at ``now``; True when this crash opens the breaker."""
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > self.window:
            self.crashes.popleft()
        if not self.open and len(self.crashes) >= self.threshold:
            self.open = True
            return True
        return False

    def reset(self) -> None:
        self.crashes.clear()
        self.open = False
