"""Oracles for flood attacks: how the host fared while a hostile plugin kept it busy.

A flood is judged from outside the attacker: a benign sibling worker is called back to back for
as long as the attack runs (its slowest answer is the latency a real plugin would have seen),
the host loop's lag is sampled with a short timer (how long the loop was stalled at worst), and
the host's peak RSS is read from the kernel (VmHWM) so that a transient spike counts too.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from autoweave_plugins.process import WorkerProcess
from tests.security._support import peak_rss, reset_peak_rss

__all__ = ["FloodReport", "watch_host"]


@dataclass
class FloodReport:
    """What the host looked like during a flood. Filled in when ``watch_host`` exits."""

    sibling_calls: list[float] = field(default_factory=list)
    loop_lag: float = 0.0
    rss_growth: int = 0

    @property
    def slowest_call(self) -> float:
        return max(self.sibling_calls, default=0.0)

    def summary(self) -> str:
        return (
            f"sibling calls={len(self.sibling_calls)} slowest={self.slowest_call:.3f}s "
            f"loop lag={self.loop_lag:.3f}s peak RSS growth={self.rss_growth / 2**20:.1f} MiB"
        )


async def _call_sibling(sibling: WorkerProcess, report: FloodReport, stop: asyncio.Event) -> None:
    while not stop.is_set():
        token = secrets.token_hex(4)
        started = time.perf_counter()
        answer = await sibling.call("onEcho", token, timeout=10.0)
        report.sibling_calls.append(time.perf_counter() - started)
        assert answer == token


async def _sample_lag(report: FloodReport, stop: asyncio.Event, interval: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + interval
        await asyncio.sleep(interval)
        report.loop_lag = max(report.loop_lag, loop.time() - due)


@contextlib.asynccontextmanager
async def watch_host(sibling: WorkerProcess) -> AsyncIterator[FloodReport]:
    """Measure the sibling's latency, the loop's lag and the peak RSS growth around a flood."""
    report = FloodReport()
    stop = asyncio.Event()
    baseline = reset_peak_rss()
    tasks = [
        asyncio.ensure_future(_call_sibling(sibling, report, stop)),
        asyncio.ensure_future(_sample_lag(report, stop)),
    ]
    try:
        yield report
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        report.rss_growth = peak_rss() - baseline
