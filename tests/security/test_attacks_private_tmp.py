"""The private temp folder: one worker's alone, gone with it, each file capped.

Until the namespace layer mounts a tmpfs at /tmp, a worker's ``TMPDIR`` is a folder the host
makes under its data root (``tmpdirs``). Evidence: what a second plugin can reach of the first
one's folder, the folder's mode and existence as the host sees them, and file sizes on disk.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.roots import worker_tmp_base
from tests.helpers.workers import running, write_plugin
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
"""
)
HOOKS = {"onStash": "stash", "onSnoop": "snoop", "onGrow": "grow"}


async def test_a_worker_never_reaches_another_workers_tmp(
    tmp_path: Path, sibling: WorkerProcess
) -> None:
    secret = "TMP-SECRET-" + secrets.token_hex(12)
    owner = write_plugin(tmp_path / "plugins", "tmp-owner", CODE, hooks=HOOKS)
    thief = write_plugin(tmp_path / "plugins", "tmp-thief", CODE, hooks=HOOKS)
    async with (
        running(owner, load_timeout=LOAD_TIMEOUT) as first,
        running(thief, load_timeout=LOAD_TIMEOUT) as second,
    ):
        path = await first.call("onStash", secret, timeout=CALL_TIMEOUT)
        folder = os.path.dirname(path)
        info = os.stat(folder)  # as the host sees it, while its worker runs
        report = await second.call("onSnoop", path, timeout=CALL_TIMEOUT)
        assert Path(path).read_text() == secret  # the file is there, and intact
    assert os.path.dirname(folder) == worker_tmp_base()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
    assert secret not in repr(report), report
    assert all(outcome["ok"] is False for outcome in report.values()), report
    assert not os.path.exists(folder), "the private tmp outlived its worker"
    await assert_responsive(sibling)


async def test_each_tmp_file_is_capped(tmp_path: Path, sibling: WorkerProcess) -> None:
    """No aggregate quota without the tmpfs, but RLIMIT_FSIZE bounds every file."""
    plugin = write_plugin(tmp_path / "plugins", "tmp-grower", CODE, hooks=HOOKS)
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        report = await worker.call("onGrow", (256 << 20) + 1, timeout=CALL_TIMEOUT)
        size = os.stat(report["name"]).st_size
    assert report["truncate"]["ok"] is False and report["truncate"]["errno"] == 27, report  # EFBIG
    assert size == 0
    await assert_responsive(sibling)
