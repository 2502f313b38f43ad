"""Hot reload with the real file watcher and real workers."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

from autoweave_plugins import PluginManager
from tests.helpers.events import EventLog
from tests.helpers.plugins import write_plugin_folder
from tests.helpers.processes import descendants
from tests.helpers.waiting import hooks_running, stays_true, wait_until

CODE = """
import asyncio
VERSION = {version!r}

async def version(delay=0.0):
    await asyncio.sleep(delay)
    return VERSION
"""


def write(root: Path, name: str, version: str = "v1", **manifest: Any) -> Path:
    hooks = {"onVersion": "version"}
    return write_plugin_folder(root, name, CODE.format(version=version), hooks=hooks, **manifest)


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


async def test_code_change_reloads_blue_green(tmp_path: Path) -> None:
    folder = write(tmp_path, "hot")
    async with manager(tmp_path) as m:
        events = EventLog(m)
        assert await m.call("hot", "onVersion") == "v1"
        slow = asyncio.ensure_future(m.call("hot", "onVersion", delay=0.5))  # in flight on v1
        await hooks_running(m.records["hot"].workers[0], 1)
        atomic_write(folder / "main.py", CODE.format(version="v2"))
        await events.wait("plugin:reloaded", "hot")
        assert await m.call("hot", "onVersion") == "v2"
        assert await slow == "v1"  # the call in flight completed on the old version
        await events.wait("worker:terminated", reason="reload")


async def test_touch_and_identical_resave_do_nothing(tmp_path: Path) -> None:
    folder = write(tmp_path, "calm")
    async with manager(tmp_path) as m:
        await m.call("calm", "onVersion")
        events = EventLog(m)
        os.utime(folder / "main.py")
        (folder / "autoweave.plugin.json").write_text(
            (folder / "autoweave.plugin.json").read_text()
        )
        # Nothing marks "the watcher looked and did nothing", so the claim is a quiet window
        # ten debounces long.
        await stays_true(
            lambda: [n for n in events.names() if n.startswith("plugin:")] == [],
            "no plugin event",
            seconds=0.5,
        )
        assert m.get_manager_stats()["loader"]["loads_ok"] == 1


async def test_invalid_manifest_keeps_the_old_version_serving(tmp_path: Path) -> None:
    folder = write(tmp_path, "careful")
    async with manager(tmp_path, manifest_only=True) as m:
        events = EventLog(m)
        assert await m.call("careful", "onVersion") == "v1"
        (folder / "autoweave.plugin.json").write_text('{"name": "careful", "vers')  # half-written
        await events.wait("plugin:error")
        assert await m.call("careful", "onVersion") == "v1"
        (folder / "main.py").write_text(CODE.format(version="v3"))
        doc = {
            "name": "careful",
            "version": "1.0.1",
            "entry": "main.py",
            "hooks": {"onVersion": "version"},
        }
        (folder / "autoweave.plugin.json").write_text(json.dumps(doc))
        await events.wait("plugin:reloaded", "careful")
        assert m.records["careful"].plugin.manifest.version == "1.0.1"
        assert await m.call("careful", "onVersion") == "v3"


async def test_failing_new_version_leaves_the_old_one(tmp_path: Path) -> None:
    folder = write(tmp_path, "stable")
    async with manager(tmp_path) as m:
        events = EventLog(m, "plugin:error")
        assert await m.call("stable", "onVersion") == "v1"
        (folder / "main.py").write_text("raise RuntimeError('broken v2')\n")
        [error] = await events.wait("plugin:error")
        assert "broken v2" in str(error.data["error"])
        assert await m.call("stable", "onVersion") == "v1"


async def test_new_and_removed_folders(tmp_path: Path) -> None:
    write(tmp_path, "first")
    async with manager(tmp_path) as m:
        events = EventLog(m)
        await m.call("first", "onVersion")
        write(tmp_path, "second", "s1")
        await events.wait("plugin:discovered", "second")
        assert await m.call("second", "onVersion") == "s1"
        shutil.rmtree(tmp_path / "first")
        await events.wait("plugin:unloaded", "first", reason="removed")
        assert "first" not in m.records
        await wait_until(  # retiring first's worker and topping up the spares run on their own
            lambda: len(m.pool.live) == 2,
            "only second's worker and one spare are live",
            detail=lambda: f"{len(m.pool.live)} live",
        )


async def test_storm_of_writes_settles_on_the_final_files(tmp_path: Path) -> None:
    names = [f"storm{i:02d}" for i in range(20)]
    folders = {n: write(tmp_path, n) for n in names}
    before = descendants()
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
        pending = dict(final)

        async def settled() -> bool:
            for name, version in list(pending.items()):
                if await m.call(name, "onVersion") == version:
                    del pending[name]
            return not pending

        await wait_until(
            settled,
            "every plugin serves its final files",
            timeout=60,
            interval=0.1,
            detail=lambda: f"not settled: {sorted(pending)}",
        )
        # Retired old versions drain, run onUnload and exit in the background: wait for them,
        # and for no other process to be left: the host's children are its workers (each with
        # the processes of its world below it) and the template (when workers are forked).
        template = m.pool.start_method_stats.get("template_pid")

        def expected() -> set[int]:
            pids = {w.pid for w in m.pool.live if w.pid is not None}
            pids.update(*(descendants(pid) for pid in set(pids)))
            return pids | ({template} if isinstance(template, int) else set())

        await wait_until(
            lambda: (
                len(m.pool.live) == 20 + len(m.pool.spares) and descendants() - before == expected()
            ),
            "the retired old versions have exited",
            detail=lambda: (
                f"{len(m.pool.live)} live, {len(m.pool.spares)} spare, template {template},"
                f" {len(descendants() - before)} processes, {len(expected())} expected"
            ),
        )
        counts = {n: len(m.records[n].workers) for n in names}
        assert set(counts.values()) == {1}, counts  # no plugin double-loaded
