"""Issue 10's host settings through a real manager: per-plugin imports, declared paths made."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from autoweave_plugins import PluginManager
from autoweave_plugins.errors import LoadError, PolicyRefused
from autoweave_plugins.settings import ManagerConfig

SPAWNER = """
import subprocess
def version():
    return subprocess.__name__
"""
WRITER = """
import os
def write(folder):
    with open(os.path.join(folder, "out.txt"), "w") as handle:
        handle.write("written")
    return sorted(os.listdir(folder))
"""


def make(root: Path, name: str, code: str, hooks: dict[str, str], **permissions: Any) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    doc = {"name": name, "version": "1.0.0", "entry": "main.py", "hooks": hooks}
    if permissions:
        doc["permissions"] = permissions
    (folder / "autoweave.plugin.json").write_text(json.dumps(doc))
    (folder / "main.py").write_text(code)


def manager(root: Path, **mapping: Any) -> PluginManager:
    base = {"plugin_directory": str(root), "worker_pool": {"min_workers": 0}, **mapping}
    return PluginManager(config=ManagerConfig.from_mapping(base))


async def test_imports_are_granted_and_denied_per_plugin(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    for name in ("granted", "plain"):
        make(root, name, SPAWNER, {"onVersion": "version"})
    plugins = {"granted": {"extra_imports": ["subprocess"]}}
    async with manager(root, plugins=plugins) as m:
        assert await m.call("granted", "onVersion") == "subprocess"
        with pytest.raises(LoadError, match="starting processes is not allowed in a plugin"):
            await m.call("plain", "onVersion")


async def test_a_global_denial_reaches_the_worker(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    make(root, "xmlish", "import xml.dom.minidom\ndef ok():\n    return 1\n", {"onOk": "ok"})
    async with manager(root, worker_pool={"min_workers": 0, "denied_imports": ["xml.dom"]}) as m:
        with pytest.raises(LoadError, match="the host denies it to this plugin"):
            await m.call("xmlish", "onOk")


async def test_a_declared_folder_that_does_not_exist_is_made_by_the_host(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    data = tmp_path / "data"
    wanted = data / "writer" / "cache"
    grant = [{"path": str(wanted), "mode": "readwrite"}]
    make(root, "writer", WRITER, {"onWrite": "write"}, filesystem=grant)
    policy = {"allowed_roots": [str(data / "{plugin}")]}
    async with manager(root, policy=policy) as m:
        assert await m.call("writer", "onWrite", str(wanted)) == ["out.txt"]
    assert (wanted / "out.txt").read_text() == "written"
    assert stat.S_IMODE(wanted.stat().st_mode) == 0o700


async def test_a_missing_declared_path_outside_the_roots_is_refused_at_load(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    elsewhere = tmp_path / "elsewhere" / "cache"
    grant = [{"path": str(elsewhere), "mode": "readwrite"}]
    make(root, "writer", WRITER, {"onWrite": "write"}, filesystem=grant)
    policy = {"allowed_roots": [str(tmp_path / "data" / "{plugin}")]}
    async with manager(root, policy=policy) as m:
        with pytest.raises(PolicyRefused, match=r"filesystem\[0\]"):
            await m.call("writer", "onWrite", str(elsewhere))
        assert m.pool.size == 0  # no worker was taken for it, and none lost
    assert not elsewhere.exists()
