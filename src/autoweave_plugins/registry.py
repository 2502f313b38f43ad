"""The plugins the manager knows: one record each, its state machine, and its workers.

A record's state moves only through ``PluginRecord.move_to``, which checks ``TRANSITIONS``: a
move the table does not allow is a bug in the host and raises ``IllegalTransition``. The table
is the lifecycle of DESIGN §2 plus the edges recovery, reload and concurrency need, each
explained where it is written. Each worker a record holds has one ``Assignment``: the worker,
when it was attached, when it last served, and how many calls it is running.

Folders that were found but rejected (an invalid manifest, a missing entry, a duplicate name)
have no record and no state machine: they are kept beside the records as ``Rejected``, shown
as ``invalid``, and named by ``UnknownPlugin`` when a caller asks for their plugin.
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
from autoweave_plugins.environments.leases import Lease
from autoweave_plugins.environments.model import Environment
from autoweave_plugins.errors import AutoweaveError, UnknownPlugin
from autoweave_plugins.events import PluginView
from autoweave_plugins.latency import LatencyWindow
from autoweave_plugins.permissions.inbound import InboundSpec
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.recovery import CircuitBreaker
from autoweave_plugins.settings import Priority

__all__ = [
    "TRANSITIONS",
    "Assignment",
    "IllegalTransition",
    "PluginRecord",
    "PluginState",
    "RecordedError",
    "Registry",
    "Rejected",
]


class PluginState(enum.StrEnum):
    """discovered → [preparing →] queued → loading → active ⇄ idle → dormant | failed"""

    DISCOVERED = "discovered"
    PREPARING = "preparing"
    """Its dependencies are checked and its own environment built, in the background."""
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
    _S.DISCOVERED: frozenset({_S.PREPARING, _S.QUEUED, _S.LOADING, _S.DORMANT}),
    # DISCOVERED: ready (or reloaded to a version that needs no preparing); FAILED: a missing
    # dependency or a build that failed. QUEUED/LOADING: a load asked for by name meanwhile
    # (it waits for the environment); DORMANT: unloaded by name, while still preparing.
    _S.PREPARING: frozenset({_S.DISCOVERED, _S.FAILED, _S.QUEUED, _S.LOADING, _S.DORMANT}),
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
    # PREPARING: prepared again, when the plugins it depends on may have changed.
    _S.FAILED: frozenset({_S.PREPARING, _S.QUEUED, _S.LOADING, _S.IDLE, _S.DORMANT, _S.DISCOVERED}),
}


class IllegalTransition(RuntimeError):
    """A state change the lifecycle does not allow: a bug in the host, never a plugin's."""


@dataclass(frozen=True, slots=True)
class RecordedError:
    time: float
    type: str
    message: str
    context: str = ""
    """What the error means for the plugin, e.g. "reload failed; 1.0.0 still serving"."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A folder holding a manifest that could not be used: its first error and all of them."""

    folder: str
    name: str | None
    """The name its manifest declares, when it could be read."""
    error: str
    issues: tuple[str, ...]
    since: float = field(default_factory=time.time)


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
    files: dict[str, str] = field(default_factory=dict)
    """Content hash per file of the version serving (``watcher.folder_files``)."""
    last_error: RecordedError | None = None
    """The latest error, until a new version is adopted (a successful reload clears it)."""
    error_count: int = 0
    """Errors recorded in all (``errors`` keeps only the recent ones)."""
    inbound: list[socket.socket] = field(default_factory=list)
    inbound_spec: InboundSpec | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    lease: Lease | None = None
    """The plugin's own environment (its ``requirements``), held while the record uses it."""
    preparation: asyncio.Future[None] | None = None
    """The build of that environment while the record is ``preparing``."""
    prepare_error: AutoweaveError | None = None
    """Why preparing failed (a dependency, or the build): raised to calls until it is fixed."""

    @property
    def name(self) -> str:
        return self.plugin.manifest.name

    @property
    def version(self) -> str:
        return self.plugin.manifest.version

    @property
    def preparing(self) -> bool:
        """Its environment is being built now."""
        return self.preparation is not None and not self.preparation.done()

    @property
    def environment(self) -> Environment | None:
        return self.lease.environment if self.lease is not None else None

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

    def record_error(self, error: BaseException, context: str = "") -> None:
        recorded = RecordedError(time.time(), type(error).__name__, str(error), context)
        self.errors.append(recorded)
        self.last_error = recorded
        self.error_count += 1

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
        if self._state is PluginState.IDLE:  # on every call: a move TRANSITIONS always allows
            self._state = PluginState.ACTIVE
        else:
            self.move_to(PluginState.ACTIVE)

    def call_finished(self, assignment: Assignment, seconds: float, now: float) -> None:
        self.latency.add(seconds)
        self.calls_in_flight -= 1
        self.last_used = now
        if assignment in self.assignments:  # not if its worker died or was swapped meanwhile
            assignment.busy -= 1
            assignment.used = now
        if self.calls_in_flight == 0 and self._state is PluginState.ACTIVE:
            self._state = PluginState.IDLE  # always allowed, like IDLE -> ACTIVE above

    def adopt(
        self, plugin: DiscoveredPlugin, fingerprint: bytes, files: dict[str, str] | None = None
    ) -> None:
        """A new version of the plugin: a fresh start for its restart count, breaker and last
        error (the old version's error says nothing about the new one)."""
        self.plugin = plugin
        self.fingerprint = fingerprint
        self.files = dict(files or {})
        self.breaker.reset()
        self.consecutive_restarts = 0
        self.last_error = None


class Registry(Mapping[str, PluginRecord]):
    """Every known plugin by name (a read-only mapping; ``add``/``remove`` change it)."""

    def __init__(self) -> None:
        self._records: dict[str, PluginRecord] = {}
        self.rejected: dict[str, Rejected] = {}
        """Rejected folders by path, as of the last scan."""

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
            rejected = next((r for r in self.rejected.values() if r.name == name), None)
            if rejected is not None:
                raise UnknownPlugin(name, rejected_folder=rejected.folder, reason=rejected.error)
            raise UnknownPlugin(name, tuple(sorted(self._records)))
        return record

    def set_rejected(self, rejected: list[Rejected]) -> list[Rejected]:
        """Replace the rejected folders; returns those that are new (or newly different)."""
        previous = self.rejected
        self.rejected = {}
        fresh = []
        for entry in rejected:
            before = previous.get(entry.folder)
            if before is not None and before.issues == entry.issues:
                entry = before  # noqa: PLW2901 - keeps when it was first rejected
            else:
                fresh.append(entry)
            self.rejected[entry.folder] = entry
        return fresh

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
