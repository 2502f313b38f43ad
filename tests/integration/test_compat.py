"""Ordinary plugin code in a real sandboxed worker: what works, and what fails clearly.

One plugin, and one worker, per snippet of ``compat_cases``. The host's side of the evidence
(files on disk, the worker's threads, the temp folder) is checked here, not taken from the
plugin's word.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import ssl
import stat
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.errors import HookError
from autoweave_plugins.loader import build_spec
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.roots import worker_tmp_base
from autoweave_plugins.sandbox.world import NAMESPACES, WorldOptions
from tests.helpers.workers import write_plugin
from tests.integration.compat_cases import REFUSED, WORKS, Case
from tests.worlds import write_grant

VENDORED = "sortedcontainers"


def _plugin(tmp_path: Path, case: Case, mode: str) -> tuple[DiscoveredPlugin, Path, Path]:
    # A root host's workers are uid 65534 in their world, and root without one.
    grant, readonly = tmp_path / "grant", tmp_path / "readonly"
    if mode == "world":
        write_grant(grant)
    else:
        grant.mkdir()
    readonly.mkdir()
    permissions: dict[str, Any] = {
        "filesystem": [
            {"path": str(grant), "mode": "readwrite"},
            {"path": str(readonly), "mode": "read"},
        ]
    }
    if case.memory:
        permissions["memory"] = case.memory
    name = case.name.replace("_", "-")[:60]
    plugin = write_plugin(
        tmp_path / "plugins", name, case.code, hooks={"onRun": "run"}, permissions=permissions
    )
    folder = Path(plugin.folder)
    for relative, text in case.files.items():
        (folder / relative).write_text(text)
    if VENDORED in case.code:  # a real pure-Python library, vendored two folders deep
        source = Path(str(__import__(VENDORED).__file__)).parent
        shutil.copytree(source, folder / "_vendor" / "lib" / VENDORED)
    return plugin, grant, readonly


MODES = ["world", "fallback"]
WORLDS = {"world": WorldOptions(), "fallback": WorldOptions(disabled=frozenset(NAMESPACES))}


async def _run(tmp_path: Path, case: Case, mode: str) -> tuple[Any, WorkerProcess, Path]:
    plugin, grant, readonly = _plugin(tmp_path, case, mode)
    worker = await WorkerProcess.spawn(world=WORLDS[mode])
    try:
        spec = build_spec(
            plugin, extra_imports=case.extra_imports, denied_imports=case.denied_imports
        )
        await worker.assign(spec, timeout=30)
        try:
            result: Any = await worker.call("onRun", str(grant), str(readonly), timeout=30)
        except HookError as exc:
            result = exc
        if case.name.startswith("numpy"):
            assert worker.plugin_pid is not None
            result = [*result, psutil.Process(worker.plugin_pid).num_threads()]
    finally:
        await worker.stop()
    return result, worker, grant


def _check_disk(case: Case, grant: Path) -> None:
    """Evidence read by the host for the cases that leave something on disk."""
    if case.name.startswith("shutil"):
        src = (grant / "src.txt").stat()
        assert stat.S_IMODE((grant / "elsewhere/moved.txt").stat().st_mode) == 0o640  # copymode
        copy2 = (grant / "copy2.txt").stat()
        assert copy2.st_mtime == src.st_mtime == 1_000_000_000  # copystat
        tree = grant / "elsewhere/tree3"
        assert (tree / "sub/file.txt").read_text() == "payload"
        assert (tree / "sub/file.txt").stat().st_mtime == 1_000_000_000
        assert not (grant / "tree2").exists() and not (grant / "copy.txt").exists()
    if case.name.startswith("sqlite3"):
        with sqlite3.connect(grant / "app.db") as db:  # the host reads what the plugin wrote
            assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 100


def _expected(case: Case) -> Any:
    if case.expected == "HOST_TZ":
        return [time.localtime(0).tm_zone, time.strftime("%Z")]
    if case.expected == "HOST_CAS":
        return ssl.create_default_context().cert_store_stats()["x509_ca"]
    return case.expected


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", WORKS, ids=[c.name for c in WORKS])
async def test_ordinary_code_works(tmp_path: Path, case: Case, mode: str) -> None:
    if case.name.startswith("numpy"):
        pytest.importorskip("numpy")
    result, worker, grant = await _run(tmp_path, case, mode)
    assert not isinstance(result, HookError), f"{result}\n{result.traceback}"
    if case.expected == "TMP" and mode == "world":
        tmp, gettempdir, *made, content = result
        assert tmp == gettempdir == "/tmp", result  # its own tmpfs, in its own view
        assert all(path.startswith(tmp + "/") for path in made) and content == "data"
        assert not os.listdir(worker_tmp_base()) or not any(
            entry.startswith(f"{worker.pid}-") for entry in os.listdir(worker_tmp_base())
        )
    elif case.expected == "TMP":
        tmp, gettempdir, *made, content = result
        assert tmp == gettempdir and os.path.dirname(tmp) == worker_tmp_base(), result
        assert all(path.startswith(tmp + "/") for path in made) and content == "data"
        assert not os.path.exists(tmp), "the private tmp outlived its worker"
    elif case.expected == "RECENT":
        assert time.time() - 300 < result == (grant / "touched").stat().st_mtime
    elif case.name.startswith("numpy"):
        *answer, threads = result
        assert answer == case.expected
        assert threads == 1, f"OpenBLAS started threads: {threads}"  # seen by the host
    else:
        assert result == _expected(case)
        _check_disk(case, grant)
    assert worker.returncode == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
async def test_what_cannot_work_says_why(tmp_path: Path, case: Case, mode: str) -> None:
    result, _worker, grant = await _run(tmp_path, case, mode)
    assert isinstance(result, HookError), result
    in_world = mode == "world"
    error = case.world_error if in_world and case.world_error else case.error
    says = case.world_says if in_world and case.world_says is not None else case.says
    assert result.error_type == error, (result.error_type, result.error_message)
    said = result.error_message + result.traceback
    missing = [fragment for fragment in says if fragment not in said]
    assert not missing, f"{missing} not in:\n{result.error_message}"
    if case.name.startswith("chmod_setuid"):
        assert not (grant / "tool").stat().st_mode & (stat.S_ISUID | stat.S_ISGID)
