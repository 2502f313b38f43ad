"""Latency windows: the most recent durations of something, and their percentiles.

A leaf module: the worker process (``WorkerStats``), the registry and the scheduler each keep
windows, and the stats builders read them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TypedDict

__all__ = ["LatencySummary", "LatencyWindow", "WorkerStats", "percentile"]


def percentile(samples: list[float] | deque[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank, or None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class LatencySummary(TypedDict):
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class LatencyWindow:
    """The most recent ``size`` durations, in seconds."""

    __slots__ = ("count", "samples")

    def __init__(self, size: int = 1024) -> None:
        self.samples: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        self.count += 1

    def summary_ms(self) -> LatencySummary:
        p50, p95, p99 = (percentile(self.samples, q) for q in (0.5, 0.95, 0.99))
        return {
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p95_ms": None if p95 is None else round(p95 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }


@dataclass(slots=True)
class WorkerStats:
    """One worker's call counters and latency window, kept by the host."""

    calls: int = 0
    errors: int = 0
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    rss: int | None = None  # measured by the host at the last health check
