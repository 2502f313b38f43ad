"""The preparer's decisions, with a builder whose builds the test releases by hand.

The environments themselves are real directories with a real lock file (leases take real
flocks); only *when* a build finishes is in the test's hands, so the waiting, the timeout and
what a load sees meanwhile are checked without a timing race. Real builds with uv are in
``tests/integration/test_plugin_environments.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from autoweave_plugins.environments import Environment, EnvironmentBuilder, Leases
from autoweave_plugins.environments.store import ENV_METADATA, SITE_DIR
from autoweave_plugins.errors import LoadError, LoadTimeout
from autoweave_plugins.events import Event, EventBus
from autoweave_plugins.loader import Loader, build_spec
from autoweave_plugins.metrics import ManagerMetrics
from autoweave_plugins.pool import WorkerPool
from autoweave_plugins.preparer import Preparer
from autoweave_plugins.recovery import CircuitBreaker
from autoweave_plugins.registry import PluginRecord, PluginState, Registry
from autoweave_plugins.settings import ManagerConfig, Priority, WorkerPoolConfig
from tests.unit.conftest import Spawner, plugin


def state_of(record: PluginRecord) -> PluginState:
    """Read afresh (mypy would keep the state narrowed from an earlier assert)."""
    return record.state


class GatedBuilder(EnvironmentBuilder):
    """Builds nothing: ``ensure`` returns a prepared directory once ``gate`` is set."""

    def __init__(self, cache: Path) -> None:
        super().__init__({"cache_dir": str(cache), "build_timeout": 0.05})
        self.gate = asyncio.Event()
        self.built: Environment | None = None

    def lookup(self, requirements: Iterable[str]) -> Environment | None:
        return self.built

    async def ensure(self, requirements: Iterable[str]) -> Environment:
        await self.gate.wait()
        key = "a" * 64
        root = self.store.env_dir(key)
        (root / SITE_DIR).mkdir(parents=True, exist_ok=True)
        (root / ENV_METADATA).write_text("{}")
        self.store.create()
        self.built = Environment(key, root, root / SITE_DIR, tuple(requirements), (), 0)
        return self.built


class Host:
    def __init__(self, tmp_path: Path, spawner: Spawner) -> None:
        self.builder = GatedBuilder(tmp_path / "envs")
        self.config = ManagerConfig(
            plugin_directory=Path("/nonexistent/plugins"),
            worker_pool=WorkerPoolConfig(min_workers=0),
            environments=self.builder.config,
        )
        self.registry = Registry()
        self.bus = EventBus()
        pool = WorkerPool(self.config.worker_pool, spawn=spawner)
        metrics = ManagerMetrics(lambda: pytest.fail("not scraped"), list)
        self.leases = Leases(self.builder.store)
        self.loader = Loader(self.config, self.registry, pool, self.bus, metrics, self.leases)
        self.preparer = Preparer(
            self.config, self.registry, self.loader, self.bus, self.builder, self.leases
        )
        self.events: list[Event] = []
        self.bus.on("*", self.events.append)

    def add(self, name: str, **manifest: object) -> PluginRecord:
        record = PluginRecord(
            plugin(name, **manifest), Priority.NORMAL, False, CircuitBreaker(5, 60.0)
        )
        self.registry.add(record)
        return record


async def test_a_load_waits_for_the_build_and_gives_up_after_twice_the_build_timeout(
    tmp_path: Path, spawner: Spawner
) -> None:
    host = Host(tmp_path, spawner)
    record = host.add("needy", requirements=["tinypkg"])
    host.preparer.begin(record)
    assert record.state is PluginState.PREPARING and record.preparing
    started = time.monotonic()
    with pytest.raises(LoadTimeout, match=r"still being built after 0\.1 s"):
        await host.loader.request_load(record)
    assert time.monotonic() - started >= 0.1
    assert record.state is PluginState.PREPARING and spawner.started == []
    waiting = host.loader.request_load(record)  # a second caller, while it still builds
    host.builder.gate.set()
    host.loader.open()
    try:
        await waiting
    finally:
        await host.loader.close()
        await host.preparer.stop()
    [worker] = spawner.started
    [spec] = worker.assigned
    assert record.environment is not None
    assert spec.environment_paths == [str(record.environment.path)]
    assert spec.environment_roots == [str(record.environment.root)]
    prepared = [e for e in host.events if e.name == "plugin:prepared"]
    assert prepared[0].data["cached"] is False and prepared[0].data["environment"]["key"]


async def test_a_plugin_with_requirements_never_starts_without_its_environment(
    tmp_path: Path, spawner: Spawner
) -> None:
    host = Host(tmp_path, spawner)
    record = host.add("needy", requirements=["tinypkg"])
    with pytest.raises(LoadError, match="its environment is not prepared yet"):
        await host.loader.start_worker(record, record.plugin, time.monotonic() + 1)
    assert spawner.started == []


async def test_preload_does_not_wait_and_the_preparer_loads_a_pinned_plugin_when_ready(
    tmp_path: Path, spawner: Spawner
) -> None:
    host = Host(tmp_path, spawner)
    pinned = host.add("pinned", requirements=["tinypkg"])
    pinned.pinned, pinned.priority = True, Priority.HIGH
    host.loader.open()
    try:
        host.preparer.begin(pinned)
        await host.loader.preload()  # returns although the build is still held
        assert pinned.state is PluginState.PREPARING and spawner.started == []
        loaded = asyncio.Event()
        host.bus.on("plugin:loaded", lambda event: loaded.set())
        host.builder.gate.set()
        await loaded.wait()
        assert pinned.workers and state_of(pinned) is PluginState.IDLE
    finally:
        await host.loader.close()
        await host.preparer.stop()


def test_the_spec_carries_no_environment_for_a_plugin_without_one() -> None:
    spec = build_spec(plugin("plain"))
    assert spec.environment_paths == [] and spec.environment_roots == []
