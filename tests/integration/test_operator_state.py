"""What the operator is told, with real workers: rejected folders, reloads, refusals, and
answers that must not mislead (timeouts, breaker, load failures, values that cannot cross)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from autoweave_plugins import PluginManager
from autoweave_plugins.errors import (
    EntryError,
    HookError,
    HookTimeout,
    PluginFailed,
    UnknownPlugin,
    UnsendableValue,
)
from autoweave_plugins.eventlog import event_line
from autoweave_plugins.events import Event
from autoweave_plugins.status import host_status

CODE = """
import os, time

def init():
    pass

def echo(*args, **kwargs):
    return [args, kwargs]

def int_keys():
    return {200: 5}

def a_set():
    return {1, 2}

def spin(seconds):
    time.sleep(seconds)

def crash():
    os._exit(9)
"""
HOOKS = {
    "onLoad": "init",
    "onEcho": "echo",
    "onIntKeys": "int_keys",
    "onSet": "a_set",
    "onSpin": "spin",
    "onCrash": "crash",
}


def make(root: Path, name: str, code: str = CODE, version: str = "1.0.0", **doc: Any) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": name, "version": version, "entry": "main.py", "hooks": HOOKS, **doc}
    (folder / "autoweave.plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(code)
    return folder


def manager(root: Path, **options: Any) -> PluginManager:
    pool = {"min_workers": 0, "max_workers": 6, **options.pop("worker_pool", {})}
    watcher = {"debounce": 0.05, **options.pop("watcher", {})}
    return PluginManager(root, worker_pool=pool, watcher=watcher, **options)


def inotify_watches() -> set[int]:
    """Inodes this process watches with inotify (its fdinfo lists them, in hex)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                for line in info:
                    if line.startswith("inotify wd:"):
                        fields = dict(f.split(":", 1) for f in line.split()[1:] if ":" in f)
                        inodes.add(int(fields["ino"], 16))
        except OSError:
            continue
    return inodes


async def watching(*folders: Path, timeout: float = 10.0) -> None:
    """Until the watcher's inotify watches on ``folders`` exist: changes before that are
    only found by the periodic rescan."""
    wanted = {f.stat().st_ino for f in folders}
    deadline = asyncio.get_running_loop().time() + timeout
    while not wanted <= inotify_watches():
        assert asyncio.get_running_loop().time() < deadline, "the watcher never started"
        await asyncio.sleep(0.02)


def collect(m: PluginManager) -> list[Event]:
    seen: list[Event] = []
    m.on("*", seen.append)
    return seen


async def wait_for_event(m: PluginManager, name: str, timeout: float = 15.0, **match: Any) -> Event:
    found: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    def listener(event: Event) -> None:
        if all(event.data.get(k) == v for k, v in match.items()) and not found.done():
            found.set_result(event)

    m.on(name, listener)
    try:
        return await asyncio.wait_for(found, timeout)
    finally:
        m.off(name, listener)


async def test_rejected_folders_are_rows_named_by_unknown_plugin_and_counted(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    make(root, "good")
    broken = root / "broken"
    broken.mkdir()
    (broken / "autoweave.plugin.json").write_text(
        json.dumps({"name": "broken", "version": "1.0.0", "entry": "missing.py"})
    )
    m = manager(root)
    events = collect(m)
    async with m:
        status = host_status(m)
        [row] = status["rejected"]
        assert row["name"] == "broken" and row["state"] == "invalid"
        assert "missing.py" in row["error"]
        assert m.get_manager_stats()["plugins"]["invalid"] == 1
        with pytest.raises(
            UnknownPlugin,
            match=r"folder .*broken has a plugin named 'broken' but was rejected: .*missing\.py",
        ):
            await m.call("broken", "onEcho")
        # Added while running: a row, and an event, without a restart.
        await watching(root)
        late = root / "late"
        late.mkdir()
        added = asyncio.ensure_future(wait_for_event(m, "plugin:error"))
        (late / "autoweave.plugin.json").write_text('{"name": "late", "version": "x"}')
        event = await added
        assert event.data["folder"].endswith("late")
        lines = [event_line(e) for e in events if e.name == "plugin:error"]
        assert any(line["kind"] == "rejected" and "late" in line["text"] for line in lines)
        assert {r["name"] for r in host_status(m)["rejected"]} == {"broken", "late"}
        assert m.get_manager_stats()["plugins"]["invalid"] == 2
        assert 'autoweave_plugins_plugins{state="invalid"} 2.0' in m.metrics_text()


async def test_code_edits_reload_by_default_saying_versions_and_files(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    folder = make(root, "alpha")
    async with manager(root) as m:
        assert m.config.watcher.manifest_only is False
        assert await m.call("alpha", "onEcho", 1) == [[1], {}]
        await watching(root, folder)
        # A failed reload: the old version keeps serving, and says so.
        failing = asyncio.ensure_future(wait_for_event(m, "plugin:error", reload_failed=True))
        (folder / "main.py").write_text(CODE + "\ndef broken(:\n")
        event = await failing
        assert event.data["still_serving"] == "1.0.0"
        line = event_line(event)
        assert line["kind"] == "reload_failed" and "1.0.0 still serving" in line["text"]
        [row] = host_status(m)["plugins"]
        assert row["last_error"] is not None and "1.0.0 still serving" in row["last_error"]
        assert await m.call("alpha", "onEcho", 2) == [[2], {}]
        # Fixing the code alone recovers it; the stale error goes away.
        reloaded = asyncio.ensure_future(wait_for_event(m, "plugin:reloaded"))
        manifest = json.loads((folder / "autoweave.plugin.json").read_text())
        (folder / "autoweave.plugin.json").write_text(json.dumps({**manifest, "version": "1.1.0"}))
        (folder / "main.py").write_text(CODE.replace("return [args, kwargs]", "return 'v2'"))
        event = await reloaded
        assert event.data["old_version"] == "1.0.0" and event.data["version"] == "1.1.0"
        assert event.data["changed"] == ["autoweave.plugin.json", "main.py"]
        assert "reloaded 1.0.0 → 1.1.0: autoweave.plugin.json, main.py" in event_line(event)["text"]
        assert await m.call("alpha", "onEcho") == "v2"
        [row] = host_status(m)["plugins"]
        assert row["last_error"] is None and row["version"] == "1.1.0"


async def test_one_timeout_is_one_error(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    make(root, "slow")
    m = manager(root)
    async with m:
        terminated = asyncio.ensure_future(wait_for_event(m, "worker:terminated", reason="timeout"))
        with pytest.raises(HookTimeout):
            await m.call("slow", "onSpin", 30, timeout=0.3)
        await terminated  # its worker was killed and reaped
        meta = m.get_plugin_metadata("slow")
        assert [e["type"] for e in meta["errors"]] == ["HookTimeout"]
        assert host_status(m)["plugins"][0]["errors"] == 1
        assert 'autoweave_plugins_errors_total{plugin="slow",type="HookTimeout"} 1.0' in (
            m.metrics_text()
        )


async def test_an_open_breaker_reads_failed_and_a_queued_load_does_not_hide_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    make(root, "fragile")
    m = manager(root, worker_pool={"breaker_threshold": 2, "restart_backoff_base": 0.5})
    async with m:
        opened = asyncio.ensure_future(wait_for_event(m, "plugin:failed"))
        for _ in range(2):
            with pytest.raises(Exception, match="exited"):
                await m.call("fragile", "onCrash")
        await opened
        assert m.get_plugin_metadata("fragile")["state"] == "failed"
        record = m.records["fragile"]
        with pytest.raises(PluginFailed):  # a load asked for now is refused, not run
            await m.loader.request_load(record)
        await asyncio.sleep(1.0)  # past the restart backoff
        assert m.get_plugin_metadata("fragile")["state"] == "failed"
        assert not record.assignments


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("def init(:\n", "SyntaxError"),
        ("def other():\n    pass\n", "does not define"),
        ("def init():\n    raise RuntimeError('no config')\n", "no config"),
    ],
)
async def test_load_failures_that_retrying_cannot_fix_are_tried_once(
    tmp_path: Path, code: str, problem: str
) -> None:
    root = tmp_path / "plugins"
    make(root, "bad", code=code, hooks={"onLoad": "init"})
    m = manager(root, loader={"load_retries": 2})
    created: list[Event] = []
    m.on("worker:created", created.append)
    async with m:
        with pytest.raises(EntryError, match=problem) as caught:
            await m.load("bad")
        assert caught.value.traceback  # the plugin's own traceback comes along
        await asyncio.sleep(0.3)  # a retry would have started by now (backoff 0.01 s)
        stats = m.get_manager_stats()
        assert len(created) == 1 and stats["loader"]["loads_failed"] == 1
        assert stats["workers"]["terminated"] == {"load_failed": 1}
        assert m.state("bad") == "failed"


async def test_values_outside_the_model_are_refused_by_the_side_that_sends_them(
    tmp_path: Path,
) -> None:
    root = tmp_path / "plugins"
    make(root, "values")
    m = manager(root, worker_pool={"breaker_threshold": 3}, limits={"max_frame": 1 << 20})
    async with m:
        assert await m.call("values", "onEcho", (1, 2), k=b"\x00") == [[[1, 2]], {"k": b"\x00"}]
        [worker] = m.records["values"].workers
        for _ in range(6):  # more than the breaker's threshold: none of it is the plugin's
            with pytest.raises(
                UnsendableValue, match=r"1048576-byte frame limit \(limits.max_frame\)"
            ):
                await m.call("values", "onEcho", b"x" * (2 << 20))
            with pytest.raises(UnsendableValue, match=r"onEcho args\[0\]: map key 200 is a int"):
                await m.call("values", "onEcho", {200: 5})
            with pytest.raises(
                HookError, match="onIntKeys returned an unsendable value: result: map key 200"
            ) as returned:
                await m.call("values", "onIntKeys")
            assert returned.value.returned
        with pytest.raises(
            HookError, match=r"returned an unsendable value: .*a set cannot be sent"
        ):
            await m.call("values", "onSet")
        assert m.records["values"].workers == [worker] and worker.alive
        meta = m.get_plugin_metadata("values")
        assert {e["type"] for e in meta["errors"]} == {"HookError"}  # not the host's refusals
        assert meta["restarts"] == 0 and m.state("values") == "idle"


async def test_a_refused_fetch_is_an_event_not_an_error_of_the_plugin(tmp_path: Path) -> None:
    root = tmp_path / "plugins"
    code = (
        "import autoweave\n"
        "async def probe():\n"
        "    try:\n"
        "        await autoweave.fetch('https://example.org/')\n"
        "    except autoweave.PermissionDenied:\n"
        "        return 'refused'\n"
    )
    make(root, "curious", code=code, hooks={"onProbe": "probe"})
    m = manager(root)
    async with m:
        refused = asyncio.ensure_future(wait_for_event(m, "plugin:error", refused=True))
        assert await m.call("curious", "onProbe") == "refused"
        line = event_line(await refused)
        assert line["kind"] == "refused" and "network.outbound" in line["text"]
        assert line["plugin"] == "curious"
        assert m.get_plugin_metadata("curious")["errors"] == []
