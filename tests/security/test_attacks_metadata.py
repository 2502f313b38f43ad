"""Attacks on what issue 10 opened: the chmod/utime broker, and renames between folders (REFER).

The worker may now change modes and times inside its write grants, through the host, and move
files between folders of one grant. Neither may reach anything else. Layout under ``tmp_path``:
``rw/`` declared readwrite, ``wo/`` declared write only, ``ro/`` declared read, and host files
beside them declared nowhere. Evidence is the disk as the host sees it: modes, times, link
counts and where files are, before and after.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.sandbox.world import WORKER_IDENTITY
from tests.helpers.workers import FALLBACK, WORLD, grant_folder, in_world, running, write_plugin
from tests.security._support import CALL_TIMEOUT, LOAD_TIMEOUT, PRELUDE, assert_responsive

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = (
    PRELUDE
    + '''
import ctypes
import msgpack
import socket
import time

AT_FDCWD = -100


def broker_socket():
    """The broker's socket, found as a hostile plugin would: by scanning descriptors."""
    for fd in range(3, 256):
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        if sock.type == socket.SOCK_SEQPACKET:
            sock.settimeout(5)  # the runtime's own copy shares its file status flags
            return sock
        sock.close()
    raise LookupError("no broker socket")


def raw_request(op, fds, payload=None):
    sock = broker_socket()
    try:
        socket.send_fds(sock, [payload if payload is not None else msgpack.packb(op)], fds)
        return msgpack.unpackb(sock.recv(1024))
    finally:
        sock.close()


def with_fd(path, flags, use):
    fd = os.open(path, flags)
    try:
        return use(fd)
    finally:
        os.close(fd)


def change(route, target, rw, ro):
    routes = {
        # through the broker, as ordinary code does
        "chmod": lambda: os.chmod(target, 0o777),
        "utime": lambda: os.utime(target, (0, 0)),
        "fchmod_readonly_fd": lambda: with_fd(target, os.O_RDONLY, lambda fd: os.fchmod(fd, 0o777)),
        "dir_fd_escape": lambda: with_fd(rw, os.O_RDONLY, lambda fd: os.chmod(
            os.path.relpath(target, rw), 0o777, dir_fd=fd)),
        # the broker's socket, spoken to directly
        "raw_o_path": lambda: with_fd(target, os.O_PATH, lambda fd: raw_request(["chmod", 0o777], [fd])),
        "raw_two_fds": lambda: with_fd(os.path.join(rw, "mine"), os.O_PATH, lambda mine: with_fd(
            target, os.O_PATH, lambda fd: raw_request(["chmod", 0o777], [mine, fd]))),
        "raw_utime": lambda: with_fd(target, os.O_PATH, lambda fd: raw_request(["utime", [0, 0]], [fd])),
        # the kernel itself: seccomp still refuses every metadata call the worker makes
        "sys_chmod": lambda: libc_call("chmod", target.encode(), 0o777),
        "sys_utimensat": lambda: libc_call("utimensat", AT_FDCWD, target.encode(), None, 0),
        "sys_fchmod_rw": lambda: with_fd(os.path.join(rw, "mine"), os.O_RDWR, lambda fd: libc_call("fchmod", fd, 0o777)),
    }
    return attempt(routes[route])


def libc_call(name, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        raise OSError(ctypes.get_errno(), name + " refused")
    return 0


def setuid_in_grant(rw):
    path = os.path.join(rw, "tool")
    with open(path, "w") as f:
        f.write("#!/bin/sh\\n")
    return {
        "chmod": attempt(os.chmod, path, 0o4755),
        "raw": with_fd(path, os.O_PATH, lambda fd: attempt(raw_request, ["chmod", 0o6777], [fd])),
    }


def move(route, rw, wo, ro):
    routes = {
        "write_only_to_readwrite": lambda: os.rename(os.path.join(wo, "w"), os.path.join(rw, "w")),
        "link_read_only_into_readwrite": lambda: os.link(os.path.join(ro, "r"), os.path.join(rw, "r")),
        "link_then_chmod": lambda: (os.link(os.path.join(rw, "mine"), os.path.join(rw, "twin")),
                                    os.chmod(os.path.join(rw, "twin"), 0o777)),
    }
    return attempt(routes[route])


def in_own_tmp():
    """Ordinary temp-file code: a mode, a time, copy2, then a setuid bit (never granted)."""
    import shutil
    import tempfile

    fd, path = tempfile.mkstemp()
    os.close(fd)
    return {
        "path": path,
        "chmod": attempt(os.chmod, path, 0o640),
        "utime": attempt(os.utime, path, ns=(5_000_000_000, 7_000_000_000)),
        "copy2": attempt(shutil.copy2, path, path + ".copy"),
        "setuid": attempt(os.chmod, path + ".copy", 0o4755),
    }


def flood(rw, count):
    path = os.path.join(rw, "mine")
    started = time.monotonic()
    for _ in range(count):
        os.utime(path, None)
    return time.monotonic() - started
'''
)
HOOKS = {
    "onChange": "change",
    "onSetuid": "setuid_in_grant",
    "onMove": "move",
    "onFlood": "flood",
    "onOwnTmp": "in_own_tmp",
}


def _layout(tmp_path: Path) -> dict[str, Path]:
    """The grants, and in each a file; what the plugin may write is the worker's own (on a
    root host, uid 65534), so only the layers under test, not the file's owner, stop it."""
    paths = {name: tmp_path / name for name in ("rw", "wo", "ro")}
    grant_folder(paths["rw"])
    grant_folder(paths["wo"])
    paths["ro"].mkdir()
    for path, text in (
        (paths["rw"] / "mine", "the plugin's own file"),
        (paths["wo"] / "w", "write-only data"),
        (paths["ro"] / "r", "read-only data"),
    ):
        path.write_text(text)
        if path.parent != paths["ro"] and os.geteuid() == 0:
            os.chown(path, *WORKER_IDENTITY)
    return paths


def _plugin(tmp_path: Path, paths: dict[str, Path]) -> DiscoveredPlugin:
    modes = {"rw": "readwrite", "wo": "write", "ro": "read"}
    return write_plugin(
        tmp_path / "plugins",
        "meta-attacker",
        CODE,
        hooks=HOOKS,
        permissions={"filesystem": [{"path": str(p), "mode": modes[n]} for n, p in paths.items()]},
    )


CHANGES = [
    ("chmod", "outside"),
    ("utime", "outside"),
    ("chmod", "read_only_grant"),
    ("chmod", "plugin_folder"),
    ("chmod", "grant_itself"),
    ("fchmod_readonly_fd", "read_only_grant"),
    ("fchmod_readonly_fd", "plugin_folder"),
    ("dir_fd_escape", "outside"),
    ("raw_o_path", "outside"),
    ("raw_o_path", "plugin_folder"),
    ("raw_two_fds", "outside"),
    ("raw_utime", "outside"),
    ("sys_chmod", "outside"),
    ("sys_utimensat", "outside"),
    ("sys_chmod", "inside"),
    ("sys_fchmod_rw", "inside"),
]
# A file outside every grant does not exist in a worker's own world, so there the mount layer
# stops these routes before the broker or seccomp sees them; the same routes run once more
# without the namespace layer, where only the broker and seccomp stand in the way.
WORLD_CHANGES = [(*case, "world") for case in CHANGES]
FALLBACK_CHANGES = [(route, where, "fallback") for route, where in CHANGES if where == "outside"]


@pytest.mark.parametrize(("route", "where", "world"), WORLD_CHANGES + FALLBACK_CHANGES)
async def test_modes_and_times_change_only_inside_write_grants(
    tmp_path: Path, sibling: WorkerProcess, route: str, where: str, world: str
) -> None:
    paths = _layout(tmp_path)
    plugin = _plugin(tmp_path, paths)
    target = {
        "outside": tmp_path / "host-file",
        "read_only_grant": paths["ro"] / "r",
        "plugin_folder": Path(plugin.folder) / "autoweave.plugin.json",
        "grant_itself": paths["rw"],
        "inside": paths["rw"] / "mine",
    }[where]
    if where == "outside":
        target.write_text("host-owned")
    target.chmod(0o700 if target.is_dir() else 0o600)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    before = target.stat()
    options = FALLBACK if world == "fallback" else WORLD
    async with running(plugin, load_timeout=LOAD_TIMEOUT, world=options) as worker:
        report = await worker.call(
            "onChange", route, str(target), str(paths["rw"]), str(paths["ro"]), timeout=CALL_TIMEOUT
        )
        assert world == "world" or not in_world(worker)
        # seccomp refuses the raw calls before the kernel looks the path up, world or not.
        hidden = where == "outside" and in_world(worker) and not route.startswith("sys_")
    after = target.stat()
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode), (report, oct(after.st_mode))
    assert after.st_mtime_ns == before.st_mtime_ns and after.st_atime_ns == before.st_atime_ns
    if hidden:  # not in its view: nothing to open, so nothing reaches the broker
        assert report["ok"] is False and report["error"] == "FileNotFoundError", report
    elif route.startswith("raw"):  # the broker answered with a refusal, not a crash
        assert report["ok"] is True and report["value"] != "[0]", report
    else:
        assert report["ok"] is False and report["error"] in ("PermissionError", "OSError"), report
    await assert_responsive(sibling)


async def test_setuid_bits_are_never_set(tmp_path: Path, sibling: WorkerProcess) -> None:
    paths = _layout(tmp_path)
    async with running(_plugin(tmp_path, paths), load_timeout=LOAD_TIMEOUT) as worker:
        report = await worker.call("onSetuid", str(paths["rw"]), timeout=CALL_TIMEOUT)
    assert stat.S_IMODE((paths["rw"] / "tool").stat().st_mode) & 0o6000 == 0, report
    assert report["chmod"]["ok"] is False and report["raw"]["value"] != "[0]", report
    await assert_responsive(sibling)


@pytest.mark.parametrize("mode", ["world", "fallback"])
async def test_modes_and_times_change_in_the_workers_own_tmp(
    tmp_path: Path, sibling: WorkerProcess, mode: str
) -> None:
    """In a world the private /tmp is a tmpfs the host's paths cannot name: the broker knows
    it by its device. Evidence: the files as the host sees them (in a world, through the
    worker's root in the host's /proc)."""
    paths = _layout(tmp_path)
    options = FALLBACK if mode == "fallback" else WORLD
    async with running(_plugin(tmp_path, paths), load_timeout=LOAD_TIMEOUT, world=options) as w:
        assert mode == "world" or not in_world(w)
        report = await w.call("onOwnTmp", timeout=CALL_TIMEOUT)
        root = f"/proc/{w.plugin_pid}/root" if in_world(w) else ""
        made = os.stat(root + report["path"])
        copy = os.stat(root + report["path"] + ".copy")
    assert all(report[step]["ok"] for step in ("chmod", "utime", "copy2")), report
    assert stat.S_IMODE(made.st_mode) == 0o640 and made.st_mtime_ns == 7_000_000_000, report
    assert stat.S_IMODE(copy.st_mode) == 0o640 and copy.st_mtime_ns == 7_000_000_000, report
    assert report["setuid"]["ok"] is False, report
    await assert_responsive(sibling)


@pytest.mark.parametrize(
    "route", ["write_only_to_readwrite", "link_read_only_into_readwrite", "link_then_chmod"]
)
async def test_moves_never_gain_rights(tmp_path: Path, sibling: WorkerProcess, route: str) -> None:
    """REFER inside a grant: a file may move within it, never to where it gains a right."""
    paths = _layout(tmp_path)
    mine_mode = stat.S_IMODE((paths["rw"] / "mine").stat().st_mode)
    async with running(_plugin(tmp_path, paths), load_timeout=LOAD_TIMEOUT) as worker:
        report = await worker.call(
            "onMove", route, *(str(paths[n]) for n in ("rw", "wo", "ro")), timeout=CALL_TIMEOUT
        )
    assert report["ok"] is False, report
    assert (paths["wo"] / "w").read_text() == "write-only data"  # not readable through rw/
    assert not (paths["rw"] / "w").exists() and not (paths["rw"] / "r").exists()
    assert (paths["ro"] / "r").stat().st_nlink == 1
    assert stat.S_IMODE((paths["rw"] / "mine").stat().st_mode) == mine_mode
    await assert_responsive(sibling)


async def test_a_broker_flood_is_paced_and_the_host_stays_responsive(
    tmp_path: Path, sibling: WorkerProcess
) -> None:
    paths = _layout(tmp_path)
    async with running(_plugin(tmp_path, paths), load_timeout=LOAD_TIMEOUT) as worker:
        flood = asyncio.ensure_future(worker.call("onFlood", str(paths["rw"]), 6000, timeout=60))
        await asyncio.sleep(0.2)
        await assert_responsive(sibling)  # while the flood runs
        seconds = await flood
    # 6000 requests at 2000 a second (a burst of 2000 first): at least two seconds.
    assert seconds >= 1.8, seconds
    assert (paths["rw"] / "mine").read_text() == "the plugin's own file"
    await assert_responsive(sibling)
