"""Small helpers shared by the benchmarks: timing loops and JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from autoweave_plugins.stats import percentile


def per_call_us(fn: Callable[[], object], *, calls: int, repeats: int = 7) -> dict[str, float]:
    """Median/min over ``repeats`` batches of ``calls`` calls, in microseconds per call."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - start) / calls / 1000)
    return {"median_us": round(statistics.median(samples), 3), "min_us": round(min(samples), 3)}


def summary_ms(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(samples) * 1e3, 2),
        "min_ms": round(min(samples) * 1e3, 2),
    }


def summary_us(samples: list[float]) -> dict[str, float]:
    p99 = percentile(samples, 0.99)
    assert p99 is not None, "no samples"
    return {"p50_us": round(statistics.median(samples) * 1e6, 1), "p99_us": round(p99 * 1e6, 1)}


def emit(name: str, results: dict[str, Any]) -> None:
    doc = {
        "benchmark": name,
        "python": platform.python_version(),
        "machine": platform.machine(),
        **results,
    }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


def pin(host_cpu: int, child_cpu: int, pids: list[int | None]) -> None:
    """Pin this process and ``pids``: on 2 cores a ping-pong costs ~40 us on one core and
    ~100 us across cores whatever the code, so round trips are compared at a fixed placement."""
    os.sched_setaffinity(0, {host_cpu})
    for pid in pids:
        assert pid is not None
        os.sched_setaffinity(pid, {child_cpu})


def unpin() -> None:
    """Every thread of this process back on every core: threads started while pinned (the
    event loop's executor, which starts the template) inherited the pin, and so would every
    worker forked from a template one of them started."""
    every = set(range(os.cpu_count() or 1))
    for thread in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(thread), every)
