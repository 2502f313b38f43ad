"""The plugins the manager knows: one record each, its state machine, and its workers.

A record's state moves only through ``PluginRecord.move_to``, which checks ``TRANSITIONS``: a
move the table does not allow is a bug in the host and raises ``IllegalTransition``. The table
is the lifecycle of DESIGN §2 plus the edges recovery, reload and concurrency need, each
explained where it is written. Each worker a record holds has one ``Assignment``: the worker,
when it was attached, when it last served, and how many calls it is running.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.errors import UnknownPlugin
from autoweave_plugins.events import PluginView
from autoweave_plugins.permissions.inbound import InboundSpec
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.recovery import CircuitBreaker
from autoweave_plugins.settings import Priority
from autoweave_plugins.stats import LatencyWindow

__all__ = [
    "TRANSITIONS",
    "Assignment",
    "IllegalTransition",
    "PluginRecord",
    "PluginState",
    "RecordedError",
    "Registry",
]


class PluginState(enum.StrEnum):
    """discovered → queued → loading → active ⇄ idle → dormant | failed"""

    DISCOVERED = "discovered"
    QUEUED = "queued"
    LOADING = "loading"
    ACTIVE = "active"
    IDLE = "idle"
    DORMANT = "dormant"
    FAILED = "failed"


_S = PluginState
TRANSITIONS: Mapping[PluginState, frozenset[PluginState]] = {
    # Nothing serves before it is loaded: no worker is ever attached to a discovered or
    # dormant plugin except by a load. LOADING directly: loads are keyed by name, so a load
    # queued for a name can run for a record that was reset (reload) or replaced (rescan).
    _S.DISCOVERED: frozenset({_S.QUEUED, _S.LOADING, _S.DORMANT}),
    # IDLE/FAILED: a reload's swap, or a breaker opening, while a load waits in the queue.
    # ACTIVE: a live worker (a scale-out) serves while a load for a dead one is queued.
    _S.QUEUED: frozenset({_S.LOADING, _S.ACTIVE, _S.IDLE, _S.FAILED, _S.DORMANT, _S.DISCOVERED}),
    # QUEUED/DORMANT/DISCOVERED: a load superseded (reload, unload) is left in LOADING.
    _S.LOADING: frozenset({_S.IDLE, _S.ACTIVE, _S.FAILED, _S.QUEUED, _S.DORMANT, _S.DISCOVERED}),
    # QUEUED/LOADING: its worker died (not yet reaped) and a call asked for a new one.
    _S.ACTIVE: frozenset({_S.IDLE, _S.QUEUED, _S.LOADING, _S.FAILED, _S.DORMANT, _S.DISCOVERED}),
    _S.IDLE: frozenset({_S.ACTIVE, _S.QUEUED, _S.LOADING, _S.FAILED, _S.DORMANT, _S.DISCOVERED}),
    _S.DORMANT: frozenset({_S.QUEUED, _S.LOADING, _S.DISCOVERED}),
    # IDLE: a load that was already under way when the breaker opened. Never ACTIVE: a call
    # is refused while the breaker is open, and a failed load leaves no worker.
    _S.FAILED: frozenset({_S.QUEUED, _S.LOADING, _S.IDLE, _S.DORMANT, _S.DISCOVERED}),
}


class IllegalTransition(RuntimeError):
    """A state change the lifecycle does not allow: a bug in the host, never a plugin's."""


@dataclass(frozen=True, slots=True)
class RecordedError:
    time: float
    type: str
    message: str


@dataclass(eq=False, slots=True)
class Assignment:
    """One worker serving a record."""

    worker: WorkerProcess
    started: float
    """When it was attached (monotonic): a worker up ``healthy_period`` resets restarts."""
    used: float
    """When a call on it last finished (monotonic): scale-in stops extra idle workers."""
    busy: int = 0
    """Calls running on it now."""


@dataclass(eq=False)
class PluginRecord:
    plugin: DiscoveredPlugin
    priority: Priority
    pinned: bool
    breaker: CircuitBreaker
    _state: PluginState = PluginState.DISCOVERED
    assignments: list[Assignment] = field(default_factory=list)
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

    @property
    def version(self) -> str:
        return self.plugin.manifest.version

    @property
    def priority_name(self) -> str:
        return self.priority.name

    @property
    def state(self) -> PluginState:
        return self._state

    def move_to(self, state: PluginState) -> None:
        """Change state; raises ``IllegalTransition`` for a move ``TRANSITIONS`` forbids."""
        if state is not self._state and state not in TRANSITIONS[self._state]:
            raise IllegalTransition(f"{self.name}: {self._state} -> {state} is not allowed")
        self._state = state

    @property
    def workers(self) -> list[WorkerProcess]:
        """The workers serving this plugin now, oldest first (a copy)."""
        return [a.worker for a in self.assignments]

    def view(self) -> PluginView:
        return PluginView(self.name, self.plugin.manifest, self.plugin.folder, self._state.value)

    def record_error(self, error: BaseException) -> None:
        self.errors.append(RecordedError(time.time(), type(error).__name__, str(error)))

    def attach(self, worker: WorkerProcess) -> Assignment:
        now = time.monotonic()
        assignment = Assignment(worker, started=now, used=now)
        self.assignments.append(assignment)
        return assignment

    def detach(self, worker: WorkerProcess) -> Assignment | None:
        """Stop routing calls to ``worker``; its assignment, or None if it had none."""
        for index, assignment in enumerate(self.assignments):
            if assignment.worker is worker:
                return self.assignments.pop(index)
        return None

    def assignment(self, worker: WorkerProcess) -> Assignment | None:
        return next((a for a in self.assignments if a.worker is worker), None)

    def least_busy(self) -> Assignment | None:
        assignments = self.assignments
        if len(assignments) == 1:  # the common case, on every call: no list, no key function
            only = assignments[0]
            return only if only.worker.alive else None
        alive = [a for a in assignments if a.worker.alive]
        return min(alive, key=lambda a: a.busy) if alive else None

    def call_started(self, assignment: Assignment) -> None:
        assignment.busy += 1
        self.calls_in_flight += 1
        self.access_count += 1
        self.move_to(PluginState.ACTIVE)

    def call_finished(self, assignment: Assignment, seconds: float, now: float) -> None:
        self.latency.add(seconds)
        self.calls_in_flight -= 1
        self.last_used = now
        if assignment in self.assignments:  # not if its worker died or was swapped meanwhile
            assignment.busy -= 1
            assignment.used = now
        if self.calls_in_flight == 0 and self._state is PluginState.ACTIVE:
            self.move_to(PluginState.IDLE)

    def adopt(self, plugin: DiscoveredPlugin, fingerprint: bytes) -> None:
        """A new version of the plugin: a fresh start for its restart count and breaker."""
        self.plugin = plugin
        self.fingerprint = fingerprint
        self.breaker.reset()
        self.consecutive_restarts = 0


class Registry(Mapping[str, PluginRecord]):
    """Every known plugin by name (a read-only mapping; ``add``/``remove`` change it)."""

    def __init__(self) -> None:
        self._records: dict[str, PluginRecord] = {}

    def __getitem__(self, name: str) -> PluginRecord:
        return self._records[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def get_record(self, name: str) -> PluginRecord:
        """The record of ``name``; raises ``UnknownPlugin`` listing the known names."""
        record = self._records.get(name)
        if record is None:
            raise UnknownPlugin(name, tuple(sorted(self._records)))
        return record

    def is_current(self, record: PluginRecord) -> bool:
        """Still the record for its name (not removed, nor replaced by a newer one)."""
        return self._records.get(record.name) is record

    def add(self, record: PluginRecord) -> None:
        self._records[record.name] = record

    def remove(self, record: PluginRecord) -> None:
        if self.is_current(record):
            del self._records[record.name]

    def owner(self, worker: WorkerProcess) -> PluginRecord | None:
        """The record ``worker`` was assigned to, if it still exists."""
        return self._records.get(worker.plugin) if worker.plugin else None

    def folders(self) -> list[str]:
        return [r.plugin.folder for r in self._records.values()]

    def by_folder(self) -> dict[str, PluginRecord]:
        return {r.plugin.folder: r for r in self._records.values()}
