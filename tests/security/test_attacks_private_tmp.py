"""The private temp folder: one worker's alone, gone with it, each file capped.

In its own world a worker's ``TMPDIR`` is ``/tmp``, a tmpfs that exists only in its mount
namespace, size-capped by ``WorkerSpec.tmp_bytes``; another worker's ``/tmp`` is not in its
view at all. Without the namespace layer (``FALLBACK``) it is a folder the host makes under
its data root (``tmpdirs``), kept from other workers by Landlock. Either way RLIMIT_FSIZE caps
each file. Evidence: what a second plugin can reach of the first one's files, read by the host
(in a world, through the worker's root as the host's ``/proc`` shows it), the folder's mode
and existence, the tmpfs devices, and file sizes.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

import pytest

from autoweave_plugins.loader import build_spec
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.roots import worker_tmp_base
from tests.helpers.processes import descendants, process_exists
from tests.helpers.waiting import wait_until
from tests.helpers.workers import FALLBACK, WORLD, in_world, running, write_plugin
from tests.security._support import CALL_TIMEOUT, LOAD_TIMEOUT, PRELUDE, assert_responsive

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = (
    PRELUDE
    + """
import tempfile


def stash(secret):
    with tempfile.NamedTemporaryFile("w", delete=False) as handle:
        handle.write(secret)
    return handle.name


def snoop(path):
    folder = os.path.dirname(path)
    return {
        "read": attempt(lambda: open(path).read()),
        "list_folder": attempt(os.listdir, folder),
        "list_base": attempt(os.listdir, os.path.dirname(folder)),
        "write_beside": attempt(lambda: open(os.path.join(folder, "planted"), "w").write("x")),
        "remove": attempt(os.remove, path),
    }


def grow(size):
    with tempfile.NamedTemporaryFile(delete=False) as handle:
        name = handle.name
    return {"name": name, "truncate": attempt(os.truncate, name, size)}


def fill(chunk, count):
    written, error = 0, None
    block = b"x" * (1 << 20)
    for index in range(count):
        try:
            with open(os.path.join(tempfile.gettempdir(), f"fill-{index}"), "wb") as handle:
                for _ in range(chunk >> 20):
                    written += handle.write(block)
        except OSError as exc:
            error = exc.errno
            break
    return {"written": written, "errno": error}
"""
)
HOOKS = {"onStash": "stash", "onSnoop": "snoop", "onGrow": "grow", "onFill": "fill"}
MODES = {"world": WORLD, "fallback": FALLBACK}


def seen_by_host(worker: WorkerProcess, path: str) -> Path:
    """Where the host finds a path of the worker's: in a world, under its root."""
    if in_world(worker):
        return Path(f"/proc/{worker.plugin_pid}/root{path}")
    return Path(path)


def processes_of(worker: WorkerProcess) -> list[int]:
    """Every process a worker is on the host: in a world, the whole tree of its namespaces."""
    assert worker.pid is not None
    return [worker.pid, *descendants(worker.pid)]


@pytest.mark.parametrize("mode", MODES)
async def test_a_worker_never_reaches_another_workers_tmp(
    tmp_path: Path, sibling: WorkerProcess, mode: str
) -> None:
    secret = "TMP-SECRET-" + secrets.token_hex(12)
    owner = write_plugin(tmp_path / "plugins", "tmp-owner", CODE, hooks=HOOKS)
    thief = write_plugin(tmp_path / "plugins", "tmp-thief", CODE, hooks=HOOKS)
    async with (
        running(owner, load_timeout=LOAD_TIMEOUT, world=MODES[mode]) as first,
        running(thief, load_timeout=LOAD_TIMEOUT, world=MODES[mode]) as second,
    ):
        world = in_world(first)
        assert world == in_world(second) and (world or mode == "fallback")
        path = await first.call("onStash", secret, timeout=CALL_TIMEOUT)
        stashed = seen_by_host(first, path)
        report = await second.call("onSnoop", path, timeout=CALL_TIMEOUT)
        assert stashed.read_text() == secret  # the file is there, and intact
        host_tmp = [p.provisions.tmp.path for p in (first, second) if p.provisions]
        assert len(host_tmp) == 2
        if world:
            # Each /tmp is a tmpfs of its own: two devices, neither the host's /tmp.
            devices = {os.stat(seen_by_host(w, "/tmp")).st_dev for w in (first, second)}
            own_folder = seen_by_host(first, os.path.dirname(path))
            listed = set(os.listdir(own_folder))
            thiefs_plant = seen_by_host(second, os.path.join(os.path.dirname(path), "planted"))
            planted_there = thiefs_plant.exists()
            processes = processes_of(first) + processes_of(second)
        else:
            info = os.stat(os.path.dirname(path))  # as the host sees it, while its worker runs
    assert secret not in repr(report), report
    if world:
        assert os.path.dirname(path) == "/tmp"
        assert len(devices) == 2 and os.stat("/tmp").st_dev not in devices, devices
        # The first's file is not in the second's view: reading or removing it finds nothing.
        assert report["read"]["error"] == "FileNotFoundError", report
        assert report["remove"]["error"] == "FileNotFoundError", report
        # What it lists and writes as "/tmp" is its own: the first's /tmp holds no trace of it.
        assert os.path.basename(path) not in repr(report["list_folder"]), report
        assert "planted" not in listed and planted_there, (listed, report)
        # Its tmpfs lives only in its mount namespace, which is gone with its processes.
        await wait_until(
            lambda: not any(process_exists(pid) for pid in processes),
            f"the processes of both worlds end: {processes}",
        )
    else:
        assert os.path.dirname(os.path.dirname(path)) == worker_tmp_base()
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
        assert all(outcome["ok"] is False for outcome in report.values()), report
        assert not os.path.exists(os.path.dirname(path)), "the private tmp outlived its worker"
    # The folder the host makes for each worker goes with it, world or not.
    assert not any(os.path.exists(folder) for folder in host_tmp), host_tmp
    await assert_responsive(sibling)


@pytest.mark.parametrize("mode", MODES)
async def test_each_tmp_file_is_capped(tmp_path: Path, sibling: WorkerProcess, mode: str) -> None:
    """RLIMIT_FSIZE bounds every file, in a world's tmpfs as in the host's folder."""
    plugin = write_plugin(tmp_path / "plugins", "tmp-grower", CODE, hooks=HOOKS)
    async with running(plugin, load_timeout=LOAD_TIMEOUT, world=MODES[mode]) as worker:
        assert in_world(worker) or mode == "fallback"
        report = await worker.call("onGrow", (256 << 20) + 1, timeout=CALL_TIMEOUT)
        size = seen_by_host(worker, report["name"]).stat().st_size
    assert report["truncate"]["ok"] is False and report["truncate"]["errno"] == 27, report  # EFBIG
    assert size == 0
    await assert_responsive(sibling)


async def test_a_worlds_tmp_holds_at_most_its_size(tmp_path: Path, sibling: WorkerProcess) -> None:
    """The aggregate cap the host's folder lacks: files each under RLIMIT_FSIZE, together
    over ``tmp_bytes``, fill the tmpfs and no more."""
    plugin = write_plugin(tmp_path / "plugins", "tmp-filler", CODE, hooks=HOOKS)
    cap = build_spec(plugin).tmp_bytes  # as running() builds it
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        if not in_world(worker):
            pytest.skip("no namespace layer on this machine: no tmpfs to fill")
        report = await worker.call("onFill", 16 << 20, (cap >> 20) // 16 + 2, timeout=60)
        tmp = seen_by_host(worker, "/tmp")
        held = {entry.name: entry.stat().st_blocks * 512 for entry in tmp.iterdir()}
        usage = os.statvfs(tmp)
    assert report["errno"] == errno.ENOSPC, report
    # What the tmpfs holds, as allocated on it (the plugin's count includes buffered bytes
    # its last close could not write), reaches the cap and stays within it.
    assert cap - (1 << 20) <= sum(held.values()) <= cap, held
    assert usage.f_blocks * usage.f_frsize <= cap
    await assert_responsive(sibling)
