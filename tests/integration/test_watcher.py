"""Hot reload with the real file watcher and real workers."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from autoweave_plugins import PluginManager
from autoweave_plugins.events import Event

CODE = """
import asyncio
VERSION = {version!r}

async def version(delay=0.0):
    await asyncio.sleep(delay)
    return VERSION
"""


def write(root: Path, name: str, version: str = "v1", **manifest: Any) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": name,
        "version": "1.0.0",
        "entry": "main.py",
        "hooks": {"onVersion": "version"},
        **manifest,
    }
    (folder / "autoweave.plugin.json").write_text(json.dumps(doc))
    (folder / "main.py").write_text(CODE.format(version=version))
    return folder


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp~")
    tmp.write_text(text)
    os.replace(tmp, path)


def manager(root: Path, **watcher: Any) -> PluginManager:
    return PluginManager(
        root,
        worker_pool={"min_workers": 1},
        watcher={"debounce": 0.05, "manifest_only": False, **watcher},
    )


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def children() -> int:
    return sum(
        1 for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE
    )


async def test_code_change_reloads_blue_green(tmp_path: Path) -> None:
    folder = write(tmp_path, "hot")
    events: list[Event] = []
    async with manager(tmp_path) as m:
        m.on("*", events.append)
        assert await m.call("hot", "onVersion") == "v1"
        slow = asyncio.ensure_future(m.call("hot", "onVersion", delay=0.5))  # in flight on v1
        await asyncio.sleep(0.05)
        atomic_write(folder / "main.py", CODE.format(version="v2"))
        await until(lambda: any(e.name == "plugin:reloaded" for e in events))
        assert await m.call("hot", "onVersion") == "v2"
        assert await slow == "v1"  # the call in flight completed on the old version
        await until(
            lambda: any(
                e.name == "worker:terminated" and e.data["reason"] == "reload" for e in events
            )
        )


async def test_touch_and_identical_resave_do_nothing(tmp_path: Path) -> None:
    folder = write(tmp_path, "calm")
    events: list[Event] = []
    async with manager(tmp_path) as m:
        await m.call("calm", "onVersion")
        m.on("*", events.append)
        os.utime(folder / "main.py")
        (folder / "autoweave.plugin.json").write_text(
            (folder / "autoweave.plugin.json").read_text()
        )
        await asyncio.sleep(0.5)
        assert [e.name for e in events if e.name.startswith("plugin:")] == []
        assert m.get_manager_stats()["loader"]["loads_ok"] == 1


async def test_invalid_manifest_keeps_the_old_version_serving(tmp_path: Path) -> None:
    folder = write(tmp_path, "careful")
    errors: list[Event] = []
    async with manager(tmp_path, manifest_only=True) as m:
        m.on("plugin:error", errors.append)
        assert await m.call("careful", "onVersion") == "v1"
        (folder / "autoweave.plugin.json").write_text('{"name": "careful", "vers')  # half-written
        await until(lambda: bool(errors))
        assert await m.call("careful", "onVersion") == "v1"
        (folder / "main.py").write_text(CODE.format(version="v3"))
        doc = {
            "name": "careful",
            "version": "1.0.1",
            "entry": "main.py",
            "hooks": {"onVersion": "version"},
        }
        (folder / "autoweave.plugin.json").write_text(json.dumps(doc))
        await until(lambda: m.records["careful"].plugin.manifest.version == "1.0.1")
        assert await m.call("careful", "onVersion") == "v3"


async def test_failing_new_version_leaves_the_old_one(tmp_path: Path) -> None:
    folder = write(tmp_path, "stable")
    errors: list[Event] = []
    async with manager(tmp_path) as m:
        m.on("plugin:error", errors.append)
        assert await m.call("stable", "onVersion") == "v1"
        (folder / "main.py").write_text("raise RuntimeError('broken v2')\n")
        await until(lambda: bool(errors))
        assert "broken v2" in str(errors[0].data["error"])
        assert await m.call("stable", "onVersion") == "v1"


async def test_new_and_removed_folders(tmp_path: Path) -> None:
    write(tmp_path, "first")
    events: list[Event] = []
    async with manager(tmp_path) as m:
        m.on("*", events.append)
        await m.call("first", "onVersion")
        write(tmp_path, "second", "s1")
        await until(lambda: "second" in m.records)
        assert await m.call("second", "onVersion") == "s1"
        shutil.rmtree(tmp_path / "first")
        await until(lambda: "first" not in m.records)
        assert any(
            e.name == "plugin:unloaded" and e.data.get("reason") == "removed" for e in events
        )
        await until(lambda: len(m.pool.live) == 2)  # second's worker and one spare


async def test_storm_of_writes_settles_on_the_final_files(tmp_path: Path) -> None:
    names = [f"storm{i:02d}" for i in range(20)]
    folders = {n: write(tmp_path, n) for n in names}
    before = children()
    # Headroom above 20: blue/green needs a second worker per plugin while it swaps, and at
    # the cap the pool would (correctly) reclaim idle plugins, which is not what this tests.
    m = PluginManager(
        tmp_path,
        worker_pool={"min_workers": 1, "max_workers": 48},
        watcher={"debounce": 0.05, "manifest_only": False},
    )
    async with m:
        await m.load_many(names)
        final: dict[str, str] = {}
        rng = random.Random(7)
        for i in range(1000):
            name = rng.choice(names)
            final[name] = f"w{i}"
            (folders[name] / "main.py").write_text(CODE.format(version=final[name]))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # 1,000 writes spread over about a second
        deadline = asyncio.get_running_loop().time() + 60
        pending = dict(final)
        while pending:
            assert asyncio.get_running_loop().time() < deadline, f"not settled: {sorted(pending)}"
            for name, version in list(pending.items()):
                if await m.call(name, "onVersion") == version:
                    del pending[name]
            await asyncio.sleep(0.1)
        counts = {n: len(m.records[n].workers) for n in names}
        assert set(counts.values()) == {1}, counts  # no plugin double-loaded
        # Retired old versions drain, run onUnload and exit in the background: wait for them.
        await until(lambda: len(m.pool.live) == 20 + len(m.pool.spares))  # no leaked worker
        # ...and no other process: the host's children are its workers and the template.
        template = 1 if m.pool.start_method_stats.get("template_pid") else 0
        await until(lambda: children() - before == len(m.pool.live) + template)
