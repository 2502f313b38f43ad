"""Plugins with requirements through a real PluginManager: real uv, real sandboxed workers.

Everything is offline: the packages are wheels generated in the test (``tests/wheelhouse``), and
uv gets its own cache per test. Each plugin reports the version it imported and the file it came
from, so "each sees its own" is judged by where the module was loaded from, not by its word.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from autoweave_plugins import PluginManager
from autoweave_plugins.environments import ResolutionFailed
from autoweave_plugins.errors import DependencyError, PolicyRefused
from autoweave_plugins.events import Event
from autoweave_plugins.registry import PluginState
from tests.wheelhouse import write_wheel

CODE = """
import tinypkg

def version():
    return [tinypkg.VERSION, tinypkg.__file__]
"""
HOOKS = {"onVersion": "version"}


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    write_wheel(directory, "tinypkg", "1.0")
    write_wheel(directory, "tinypkg", "2.0")
    return directory


@pytest.fixture
def environments(
    tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return {
        "find_links": str(wheelhouse),
        "offline": True,
        "cache_dir": str(tmp_path / "envs"),
        "prune_interval": 0,
    }


def plugin(root: Path, name: str, code: str = CODE, **manifest: Any) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "version": "1.0.0", "entry": "main.py", "hooks": HOOKS, **manifest}
    (folder / "autoweave.plugin.json").write_text(json.dumps(doc))
    (folder / "main.py").write_text(code)
    return folder


def manager(root: Path, environments: dict[str, Any]) -> PluginManager:
    return PluginManager(
        root,
        worker_pool={"min_workers": 0},
        watcher={"enabled": False},
        environments=environments,
    )


def recorder(manager: PluginManager, name: str) -> list[Event]:
    seen: list[Event] = []
    manager.on(name, seen.append)
    return seen


async def test_two_pins_of_one_package_serve_side_by_side(
    tmp_path: Path, environments: dict[str, Any], wheelhouse: Path
) -> None:
    root = tmp_path / "plugins"
    plugin(root, "pin-one", requirements=["tinypkg==1.0"])
    plugin(root, "pin-two", requirements=["tinypkg==2.0"])
    plugin(root, "plain", "def version():\n    return ['none', '']\n")
    host = manager(root, environments)
    prepared = recorder(host, "plugin:prepared")
    async with host:
        assert await host.call("plain", "onVersion") == ["none", ""]  # serves meanwhile
        one, two = await asyncio.gather(
            host.call("pin-one", "onVersion"), host.call("pin-two", "onVersion")
        )
        # Both workers are up at once, each importing its own pin from its own environment.
        assert all(host.records[n].workers for n in ("pin-one", "pin-two"))
        meta_one = host.get_plugin_metadata("pin-one")
        meta_two = host.get_plugin_metadata("pin-two")
        assert meta_one["environment"] is not None and meta_two["environment"] is not None
        assert one[0] == "1.0" and one[1].startswith(meta_one["environment"]["path"] + "/")
        assert two[0] == "2.0" and two[1].startswith(meta_two["environment"]["path"] + "/")
        assert meta_one["environment"]["packages"] == [
            {"name": "tinypkg", "version": "1.0", "source": wheelhouse.as_uri()}
        ]
        assert host.get_plugin_metadata("plain")["environment"] is None
        stats = host.get_manager_stats()["environments"]
        assert (stats["builds"], stats["failures"], stats["preparing"]) == (2, 0, 0)
        assert stats["in_use"] == 2
    assert sorted(e.plugin.name for e in prepared if e.plugin) == ["pin-one", "pin-two"]
    assert all(e.data["environment"]["requirements"] for e in prepared)


async def test_a_call_while_preparing_waits_for_the_environment(
    tmp_path: Path, environments: dict[str, Any]
) -> None:
    root = tmp_path / "plugins"
    root.mkdir()
    host = manager(root, environments)
    async with host:
        plugin(root, "late", requirements=["tinypkg==2.0"])
        assert host.rescan() == ["late"]
        # The build runs in the background: the plugin is preparing until it finishes.
        assert host.state("late") is PluginState.PREPARING
        assert host.get_manager_stats()["plugins"]["preparing"] == 1
        assert (await host.call("late", "onVersion"))[0] == "2.0"
        assert host.state("late") is PluginState.IDLE


async def test_an_unresolvable_requirement_fails_only_its_plugin(
    tmp_path: Path, environments: dict[str, Any]
) -> None:
    root = tmp_path / "plugins"
    plugin(root, "wants-three", requirements=["tinypkg>=3"])
    plugin(root, "fine", requirements=["tinypkg==1.0"])
    host = manager(root, environments)
    errors = recorder(host, "plugin:error")
    async with host:
        assert (await host.call("fine", "onVersion"))[0] == "1.0"
        with pytest.raises(ResolutionFailed) as caught:
            await host.call("wants-three", "onVersion")
        assert caught.value.culprits == ("tinypkg>=3",)
        assert host.state("wants-three") is PluginState.FAILED
        [event] = [e for e in errors if e.plugin and e.plugin.name == "wants-three"]
        message = str(event.data["error"])
        assert "cannot resolve 'tinypkg>=3'" in message
        assert "only tinypkg<=2.0 is available" in message  # uv's own explanation
        recorded = host.get_plugin_metadata("wants-three")["errors"]
        assert recorded[-1]["type"] == "ResolutionFailed"
        # A second call gets the same answer without running uv again.
        runs = host.environments.stats.uv_runs
        with pytest.raises(ResolutionFailed):
            await host.call("wants-three", "onVersion")
        assert host.environments.stats.uv_runs == runs
        assert (await host.call("fine", "onVersion"))[0] == "1.0"
        assert host.get_manager_stats()["plugins"]["failed"] == 1


async def test_reload_builds_the_new_environment_before_the_swap(
    tmp_path: Path, environments: dict[str, Any]
) -> None:
    root = tmp_path / "plugins"
    folder = plugin(root, "swapper", requirements=["tinypkg==1.0"])
    host = manager(root, environments)
    async with host:
        assert (await host.call("swapper", "onVersion"))[0] == "1.0"
        [old_worker] = host.records["swapper"].workers
        old_key = host.get_plugin_metadata("swapper")["environment"]["key"]  # type: ignore[index]

        plugin(root, "swapper", requirements=["tinypkg==2.0"])
        await host.reload("swapper")
        version, location = await host.call("swapper", "onVersion")
        meta = host.get_plugin_metadata("swapper")
        assert meta["environment"] is not None and meta["environment"]["key"] != old_key
        assert version == "2.0" and location.startswith(meta["environment"]["path"] + "/")
        await old_worker.wait_closed()  # the old version drained and was retired

        # A reload whose environment cannot be built changes nothing: 2.0 keeps serving.
        [serving] = host.records["swapper"].workers
        plugin(root, "swapper", requirements=["tinypkg>=3"])
        with pytest.raises(ResolutionFailed):
            await host.reload("swapper")
        assert (await host.call("swapper", "onVersion"))[0] == "2.0"
        assert host.records["swapper"].workers == [serving]
        assert host.state("swapper") is PluginState.IDLE
        assert json.loads((folder / "autoweave.plugin.json").read_text())["requirements"] == [
            "tinypkg>=3"
        ]


async def test_dependencies_between_plugins(tmp_path: Path, environments: dict[str, Any]) -> None:
    root = tmp_path / "plugins"
    plain = "def version():\n    return ['ok', '']\n"
    plugin(root, "base", plain)
    plugin(root, "needs-base", plain, dependencies={"base": "^1.0.0"})
    plugin(root, "needs-new-base", plain, dependencies={"base": ">=2.0"})
    plugin(root, "needs-ghost", plain, dependencies={"ghost": "*"})
    plugin(root, "loop-a", plain, dependencies={"loop-b": "*"})
    plugin(root, "loop-b", plain, dependencies={"loop-a": "*"})
    host = manager(root, environments)
    async with host:
        assert await host.call("needs-base", "onVersion") == ["ok", ""]
        for name in ("needs-new-base", "needs-ghost", "loop-a", "loop-b"):
            assert host.state(name) is PluginState.FAILED, name
        with pytest.raises(DependencyError, match=r"'base' >=2.0, but 'base' is version 1.0.0"):
            await host.call("needs-new-base", "onVersion")
        with pytest.raises(DependencyError, match="requires plugin 'ghost' \\*, which is not"):
            await host.call("needs-ghost", "onVersion")
        with pytest.raises(DependencyError, match="dependency cycle") as cycle:
            await host.call("loop-a", "onVersion")
        assert set(cycle.value.cycle) == {"loop-a", "loop-b"}
        # The missing one appears: the plugin that waited for it loads.
        plugin(root, "ghost", plain)
        host.rescan()
        assert host.state("needs-ghost") is PluginState.DISCOVERED
        assert await host.call("needs-ghost", "onVersion") == ["ok", ""]


async def test_no_grant_reaches_the_environment_cache(
    tmp_path: Path, environments: dict[str, Any]
) -> None:
    data = tmp_path / "data"
    cache = data / "envs"
    root = tmp_path / "plugins"
    plain = "def version():\n    return ['ok', '']\n"
    for name, path in (("snoop", cache), ("broad", data), ("fair", data / "fair")):
        grant = {"filesystem": [{"path": str(path), "mode": "read"}]}
        plugin(root, name, plain, permissions=grant)
    (data / "fair").mkdir(parents=True)
    host = PluginManager(
        root,
        worker_pool={"min_workers": 0},
        watcher={"enabled": False},
        policy={"allowed_roots": [str(data)]},
        environments={**environments, "cache_dir": str(cache)},
    )
    async with host:
        for name in ("snoop", "broad"):
            with pytest.raises(PolicyRefused, match="a path denied by policy"):
                await host.load(name)
        await host.load("fair")  # the same root still grants what is not the cache


async def test_the_host_prunes_only_environments_nobody_uses(
    tmp_path: Path, environments: dict[str, Any]
) -> None:
    root = tmp_path / "plugins"
    plugin(root, "user", requirements=["tinypkg==2.0"])
    # An environment left from a plugin that is gone (built by an earlier run, say).
    leftover = await PluginManager(root, environments=environments).environments.ensure(
        ["tinypkg==1.0"]
    )
    host = manager(root, {**environments, "prune_after": 0})
    async with host:
        assert (await host.call("user", "onVersion"))[0] == "2.0"
        in_use = host.records["user"].environment
        assert in_use is not None
        assert await host.preparer.prune_unused() == (leftover.key,)
        assert in_use.root.is_dir() and not leftover.root.exists()
        assert host.get_manager_stats()["environments"]["pruned"] == 1
        assert (await host.call("user", "onVersion"))[0] == "2.0"
