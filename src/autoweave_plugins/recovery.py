"""Restart policy: why a worker ended, capped exponential backoff with bounded jitter, and a
circuit breaker.

``ExitReason`` lives here, below the pool and the supervisor, because both judge exits by it:
the pool counts them, the supervisor restarts after the ones that are crashes.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable

__all__ = ["CircuitBreaker", "ExitReason", "backoff_delay"]


class ExitReason(enum.StrEnum):
    """Why a worker process ended (DESIGN §7). A ``StrEnum``: each compares equal to its name."""

    IDLE = "idle"
    """Reclaimed: idle timeout, LRU at the cap, scale-in, or an explicit unload."""
    CRASHED = "crashed"
    """Exited by itself, or for a reason the host did not give."""
    PROTOCOL = "protocol"
    """Broke the RPC protocol and was killed."""
    UNHEALTHY = "unhealthy"
    """Did not answer the health check's ping in time."""
    MEMORY = "memory"
    """Its RSS, measured by the host, went over the manifest's ``max_heap_mb`` budget."""
    TIMEOUT = "timeout"
    """A load or a hook overran and the worker did not answer the cancel."""
    SHUTDOWN = "shutdown"
    """The manager stopped."""
    RELOAD = "reload"
    """Replaced by a new version (blue/green)."""
    LOAD_FAILED = "load_failed"
    """The plugin's own code failed to load in it (``EntryError``): not a crash, not retried."""

    @classmethod
    def of(cls, reason: str) -> ExitReason:
        """``reason`` as an ExitReason; a reason the host does not know counts as a crash."""
        try:
            return cls(reason)
        except ValueError:
            return cls.CRASHED

    @property
    def reported(self) -> ExitReason:
        """The reason events and counters publish: DESIGN §7 names no ``protocol``, so a
        protocol violation is reported as a crash."""
        return ExitReason.CRASHED if self is ExitReason.PROTOCOL else self

    @property
    def is_crash(self) -> bool:
        """An exit the plugin caused: it counts towards the breaker and is restarted."""
        return self in _CRASHES


_CRASHES = frozenset(
    {
        ExitReason.CRASHED,
        ExitReason.PROTOCOL,
        ExitReason.UNHEALTHY,
        ExitReason.MEMORY,
        ExitReason.TIMEOUT,
    }
)


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
