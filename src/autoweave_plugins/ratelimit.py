"""One token bucket, for every rate the host or a worker puts on what a plugin sends.

Used for a worker's output lines and log records (``output``), the plugin metrics the host
keeps (``broker.metrics``) and the metrics the worker's SDK sends (``worker.runtime``). A leaf
module: it imports nothing of the package, so the sandboxed worker may import it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; it starts full.

    ``allow()`` takes a token if there is one. ``denied`` counts the times there was none, so
    that a caller can report how much it dropped.
    """

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "denied", "rate")

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate < 0 or burst < 0:
            raise ValueError(f"rate and burst must not be negative, got {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self.denied = 0
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def allow(self) -> bool:
        """Take one token; False (and count it) if the bucket is empty."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.denied += 1
        return False
