"""One record per discovered plugin: its state, its workers, and what happened to it."""

from __future__ import annotations

import asyncio
import enum
import socket
import time
from collections import deque
from dataclasses import dataclass, field

from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.events import PluginView
from autoweave_plugins.permissions.inbound import InboundSpec
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.recovery import CircuitBreaker
from autoweave_plugins.settings import Priority
from autoweave_plugins.stats import LatencyWindow

__all__ = ["PluginRecord", "PluginState", "RecordedError"]


class PluginState(enum.StrEnum):
    """discovered → queued → loading → active ⇄ idle → dormant | failed"""

    DISCOVERED = "discovered"
    QUEUED = "queued"
    LOADING = "loading"
    ACTIVE = "active"
    IDLE = "idle"
    DORMANT = "dormant"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RecordedError:
    time: float
    type: str
    message: str


@dataclass(eq=False)
class PluginRecord:
    plugin: DiscoveredPlugin
    priority: Priority
    pinned: bool
    breaker: CircuitBreaker
    state: PluginState = PluginState.DISCOVERED
    workers: list[WorkerProcess] = field(default_factory=list)
    busy: dict[WorkerProcess, int] = field(default_factory=dict)
    worker_started: dict[WorkerProcess, float] = field(default_factory=dict)
    worker_used: dict[WorkerProcess, float] = field(default_factory=dict)
    loaded_at: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    access_count: int = 0
    calls_in_flight: int = 0
    restarts: int = 0
    consecutive_restarts: int = 0
    errors: deque[RecordedError] = field(default_factory=lambda: deque(maxlen=20))
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    scaling: bool = False
    fingerprint: bytes = b""
    inbound: list[socket.socket] = field(default_factory=list)
    inbound_spec: InboundSpec | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.plugin.manifest.name

    def view(self) -> PluginView:
        return PluginView(self.name, self.plugin.manifest, self.plugin.folder, self.state.value)

    def record_error(self, error: BaseException) -> None:
        self.errors.append(RecordedError(time.time(), type(error).__name__, str(error)))

    def add_worker(self, worker: WorkerProcess) -> None:
        now = time.monotonic()
        self.workers.append(worker)
        self.busy[worker] = 0
        self.worker_started[worker] = now
        self.worker_used[worker] = now

    def drop_worker(self, worker: WorkerProcess) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        self.busy.pop(worker, None)
        self.worker_started.pop(worker, None)
        self.worker_used.pop(worker, None)

    def least_busy(self) -> WorkerProcess | None:
        alive = [w for w in self.workers if w.alive]
        return min(alive, key=lambda w: self.busy.get(w, 0)) if alive else None
