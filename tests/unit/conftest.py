"""Fakes for the manager's parts, so that their unit tests run in milliseconds without workers.

``FakeWorker`` has the surface of ``WorkerProcess`` that the pool, loader, supervisor and
stats use; an exit is simulated with ``exit(reason)``, which runs the ``on_exit`` callbacks as
the real process does once it is reaped.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any, cast

import pytest

from autoweave_plugins.broker.metrics import PluginMetrics
from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.manifest import parse_manifest_bytes
from autoweave_plugins.process import Sample, WorkerProcess, WorkerStats

_pids = itertools.count(10_000)


class FakeWorker:
    """A worker process that exists only in memory."""

    def __init__(self, rss: int | None = 30 << 20) -> None:
        self.pid: int | None = next(_pids)
        self.plugin: str | None = None
        self.rss = rss
        self.stats = WorkerStats()
        self.metrics = PluginMetrics()
        self.exit_reason: str | None = None
        self.returncode: int | None = None
        self.on_exit: list[Callable[[Any, str, int | None], None]] = []
        self.assigned: list[Any] = []
        self.pings = 0
        self.cpu_seconds = 0.0
        self.samples = 0

    @property
    def alive(self) -> bool:
        return self.exit_reason is None

    def exit(self, reason: str, returncode: int = -9) -> None:
        """The process ended (and was reaped): run the exit callbacks once."""
        if self.returncode is not None:
            return
        self.exit_reason = self.exit_reason or reason
        self.returncode = returncode
        for callback in list(self.on_exit):
            callback(self, self.exit_reason, returncode)

    def kill(self, reason: str) -> None:
        self.exit(reason)

    def sample(self) -> Sample | None:
        """What the host would read from /proc: None once the process is gone."""
        self.samples += 1
        if not self.alive or self.rss is None:
            return None
        return Sample(self.rss, self.cpu_seconds)

    async def stop(self, timeout: float = 2.0, reason: str = "shutdown") -> None:
        self.exit(reason, 0)

    async def assign(self, spec: Any, **options: Any) -> dict[str, Any]:
        self.plugin = spec.plugin
        self.assigned.append(spec)
        return {}

    async def call(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        self.stats.calls += 1
        return args[0] if args else None

    async def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        self.pings += 1
        return {}

    async def drain(self, timeout: float) -> None:
        return None

    def measure_rss(self) -> int | None:
        self.stats.rss = self.rss if self.alive else None
        return self.stats.rss


def as_process(worker: FakeWorker) -> WorkerProcess:
    """The fake, typed as what it stands in for."""
    return cast(WorkerProcess, worker)


def plugin(name: str = "alpha", **manifest: Any) -> DiscoveredPlugin:
    """A validated plugin that has no folder on disk."""
    document = {"name": name, "version": "1.0.0", "entry": "main.py", **manifest}
    folder = f"/nonexistent/plugins/{name}"
    return DiscoveredPlugin(
        folder,
        f"{folder}/autoweave.plugin.json",
        parse_manifest_bytes(json.dumps(document).encode()),
    )


class Spawner:
    """A ``spawn`` for the pool: fake workers, or failures when ``fail`` is set."""

    def __init__(self) -> None:
        self.started: list[FakeWorker] = []
        self.fail: BaseException | None = None

    async def __call__(self) -> WorkerProcess:
        if self.fail is not None:
            raise self.fail
        worker = FakeWorker()
        self.started.append(worker)
        return as_process(worker)


@pytest.fixture
def spawner() -> Spawner:
    return Spawner()
