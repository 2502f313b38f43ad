"""The loader's pure parts, and the one place the grant policy is checked."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest

from autoweave_plugins.errors import PolicyRefused
from autoweave_plugins.events import EventBus
from autoweave_plugins.loader import Loader, build_spec, spawner
from autoweave_plugins.metrics import ManagerMetrics
from autoweave_plugins.policy import GrantPolicy
from autoweave_plugins.pool import WorkerPool
from autoweave_plugins.process import OutputLimits, WorkerProcess
from autoweave_plugins.recovery import CircuitBreaker
from autoweave_plugins.registry import PluginRecord, Registry
from autoweave_plugins.settings import LimitsConfig, ManagerConfig, Priority, WorkerPoolConfig
from tests.unit.conftest import Spawner, plugin


def test_build_spec_carries_the_manifest_and_host_choices() -> None:
    found = plugin(
        "alpha",
        hooks={"onLoad": "init"},
        permissions={
            "filesystem": [{"path": "/tmp/plugin-data", "mode": "readwrite"}],
            "memory": {"max_heap_mb": 64},
        },
    )
    spec = build_spec(found, strict=True, extra_imports=("signal",), config={"k": 1})
    assert (spec.plugin, spec.folder, spec.entry) == ("alpha", found.folder, "main.py")
    assert spec.hooks == {"onLoad": "init"} and spec.max_heap_mb == 64
    assert spec.filesystem == [("/tmp/plugin-data", "readwrite")]
    assert spec.strict and spec.extra_imports == ["signal"] and spec.config == {"k": 1}
    assert spec.manifest["name"] == "alpha"


def test_spawner_passes_the_configured_limits() -> None:
    limits = LimitsConfig(max_frame=1 << 20, ready_timeout=5.0, output=OutputLimits(burst=7))
    spawn = spawner(limits)
    assert isinstance(spawn, functools.partial) and spawn.func == WorkerProcess.spawn
    expected = {
        "max_frame": 1 << 20,
        "ready_timeout": 5.0,
        "output": OutputLimits(burst=7),
        "max_concurrent_requests": limits.max_concurrent_requests,
    }
    assert spawn.keywords == expected


async def test_a_refused_manifest_never_gets_a_worker(spawner: Spawner) -> None:
    config = ManagerConfig(
        plugin_directory=Path("/nonexistent/plugins"),
        worker_pool=WorkerPoolConfig(min_workers=0),
        policy=GrantPolicy(max_heap_mb=128),
    )
    pool = WorkerPool(config.worker_pool, spawn=spawner)
    metrics = ManagerMetrics(lambda: pytest.fail("not scraped"), list)
    loader = Loader(config, Registry(), pool, EventBus(), metrics)
    greedy = plugin("greedy", permissions={"memory": {"max_heap_mb": 512}})
    record = PluginRecord(greedy, Priority.NORMAL, False, CircuitBreaker(5, 60.0))
    with pytest.raises(PolicyRefused, match="max_heap_mb"):
        await loader.start_worker(record, greedy, time.monotonic() + 1)
    assert spawner.started == []
