"""Attack classes 1 and 2: reading and writing outside the paths a plugin declared.

Layout under ``tmp_path``: ``granted/`` is declared readwrite, ``secret.txt`` sits beside it and
is declared nowhere, and the plugin folder is under ``plugins/``. Every route is tried twice:
with plain ``open``/``os`` calls (only the kernel, Landlock, can stop these) and through the
SDK (the userland path check refuses first). The verdict is read from the disk.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.process import WorkerProcess
from tests.helpers.workers import grant_folder, in_world, running, write_plugin
from tests.security._support import CALL_TIMEOUT, LOAD_TIMEOUT, PRELUDE, assert_responsive

pytestmark = pytest.mark.asyncio(loop_scope="module")

FS_CODE = (
    PRELUDE
    + '''
import autoweave


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def write(path, data=b"written by a hostile plugin"):
    with open(path, "wb") as handle:
        return handle.write(data)


def symlink_then_write(target, link):
    os.symlink(target, link)
    return write(link)


async def sdk(coro):
    try:
        value = await coro
    except BaseException as exc:
        return {"ok": False, "error": type(exc).__name__, "detail": str(exc)[:300]}
    return {"ok": True, "value": value if isinstance(value, (bytes, str, int)) else repr(value)}


async def read_outside(route, secret, granted):
    """Try to read ``secret`` by one route; report what each attempt gave."""
    if route == "direct":
        path = secret
    elif route == "dotdot":
        path = granted + "/../" + os.path.basename(secret)
    elif route == "symlink":
        path = granted + "/link-to-secret"  # planted by the test
    elif route == "proc_self_root":
        path = "/proc/self/root" + secret
    elif route == "hardlink":
        path = granted + "/hardlink-to-secret"
        made = attempt(os.link, secret, path)
        return {"link": made, "kernel": attempt(read, path), "sdk": await sdk(autoweave.read_file(path, encoding=None))}
    else:
        raise ValueError(route)
    return {"kernel": attempt(read, path), "sdk": await sdk(autoweave.read_file(path, encoding=None))}


async def write_outside(route, outside, granted):
    """Try to create or change a file outside the granted folder by one route."""
    if route == "direct":
        return {"kernel": attempt(write, outside), "sdk": await sdk(autoweave.write_file(outside, b"x"))}
    if route == "rename":
        return {"kernel": attempt(os.rename, granted + "/mine.txt", outside)}
    if route == "symlink":
        link = granted + "/escape"
        return {"kernel": attempt(symlink_then_write, outside, link)}
    if route == "planted_symlink":
        link = granted + "/link-to-outside"  # planted by the test, points at an existing file
        return {"kernel": attempt(write, link), "sdk": await sdk(autoweave.write_file(link, b"x"))}
    raise ValueError(route)


def through_readonly_fd(target, change):
    fd = os.open(target, os.O_RDONLY)  # reading is granted; changing is not
    try:
        return change(fd)
    finally:
        os.close(fd)


def change_metadata(route, target):
    """Metadata changes to a file the plugin may not write: by path, or by a read-only fd."""
    routes = {
        "chmod": lambda: os.chmod(target, 0o777),
        "utime": lambda: os.utime(target, (0, 0)),
        "setxattr": lambda: os.setxattr(target, "user.autoweave", b"hostile"),
        "fchmod": lambda: through_readonly_fd(target, lambda fd: os.fchmod(fd, 0o777)),
        "futimens": lambda: through_readonly_fd(target, lambda fd: os.utime(fd, (0, 0))),
        "fsetxattr": lambda: through_readonly_fd(target, lambda fd: os.setxattr(fd, "user.autoweave", b"x")),
    }
    return attempt(routes[route])


def control(granted):
    """Benign: the granted folder really is writable and readable (the test is not vacuous)."""
    write(granted + "/control.txt", b"control")
    return read(granted + "/control.txt")


WATCHES = []


def watch(directory):
    """Ask the kernel to report what happens in a directory outside every granted path."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1 refused")
    WATCHES.append(fd)
    if libc.inotify_add_watch(fd, directory.encode(), 0xFFF) < 0:
        raise OSError(ctypes.get_errno(), "inotify_add_watch refused")
    return fd


def start_watch(directory):
    return attempt(watch, directory)


def collect_events():
    seen = b""
    for fd in WATCHES:
        try:
            seen += os.read(fd, 65536)
        except BlockingIOError:
            pass
    return seen
'''
)
HOOKS = {
    "onRead": "read_outside",
    "onWrite": "write_outside",
    "onMeta": "change_metadata",
    "onControl": "control",
    "onWatch": "start_watch",
    "onEvents": "collect_events",
}


def _layout(tmp_path: Path) -> tuple[Path, Path, str]:
    granted = grant_folder(tmp_path / "granted")
    secret_text = "TOP-SECRET-" + secrets.token_hex(16)
    secret = tmp_path / "secret.txt"
    secret.write_text(secret_text)
    return granted, secret, secret_text


def _plugin(tmp_path: Path, granted: Path) -> DiscoveredPlugin:
    return write_plugin(
        tmp_path / "plugins",
        "fs-attacker",
        FS_CODE,
        hooks=HOOKS,
        permissions={"filesystem": [{"path": str(granted), "mode": "readwrite"}]},
    )


async def _control(worker: WorkerProcess, granted: Path) -> None:
    assert await worker.call("onControl", str(granted), timeout=CALL_TIMEOUT) == b"control"
    assert (granted / "control.txt").read_bytes() == b"control"


@pytest.mark.parametrize("route", ["direct", "dotdot", "symlink", "hardlink", "proc_self_root"])
async def test_read_outside_declared_paths(
    tmp_path: Path, sibling: WorkerProcess, route: str
) -> None:
    granted, secret, secret_text = _layout(tmp_path)
    (granted / "link-to-secret").symlink_to(secret)
    plugin = _plugin(tmp_path, granted)
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        await _control(worker, granted)
        report = await worker.call("onRead", route, str(secret), str(granted), timeout=CALL_TIMEOUT)
        assert worker.alive
        # In its own view the secret does not exist at all; without one, Landlock refuses it.
        world = in_world(worker)
        refusal = "FileNotFoundError" if world else "PermissionError"
    # Evidence: the secret never reached the host through anything the plugin returned ...
    assert secret_text not in repr(report), report
    # ... every attempt failed ...
    for step, outcome in report.items():
        assert outcome["ok"] is False, (step, report)
    if route == "hardlink":
        # The link itself is refused: in its own view the secret does not exist (ENOENT);
        # without one, Landlock refuses it (EXDEV: no REFER outside a grant).
        expected = ("FileNotFoundError",) if world else ("PermissionError", "OSError")
        assert report["link"]["error"] in expected, report
    else:
        assert report["kernel"]["error"] == refusal, report
        assert report["sdk"]["error"] == "PermissionDenied", report
    # ... no hard link to the secret was left in the granted folder, and the secret is intact.
    assert not (granted / "hardlink-to-secret").exists()
    assert secret.read_text() == secret_text
    await assert_responsive(sibling)


@pytest.mark.parametrize("route", ["direct", "rename", "symlink", "planted_symlink"])
async def test_write_outside_declared_paths(
    tmp_path: Path, sibling: WorkerProcess, route: str
) -> None:
    granted, secret, secret_text = _layout(tmp_path)
    (granted / "mine.txt").write_text("the plugin's own file")
    (granted / "link-to-outside").symlink_to(secret)
    outside = tmp_path / f"outside-{route}"
    plugin = _plugin(tmp_path, granted)
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        await _control(worker, granted)
        report = await worker.call(
            "onWrite", route, str(outside), str(granted), timeout=CALL_TIMEOUT
        )
        assert worker.alive
    for step, outcome in report.items():
        assert outcome["ok"] is False, (step, report)
    # Evidence on disk: nothing was created outside, the granted file did not move out, no
    # symlink was planted by the plugin, and the file outside is unchanged.
    assert not outside.exists() and not outside.is_symlink()
    assert (granted / "mine.txt").read_text() == "the plugin's own file"
    assert not (granted / "escape").is_symlink()
    assert secret.read_text() == secret_text
    await assert_responsive(sibling)


@pytest.mark.parametrize(
    ("route", "where"),
    [
        ("chmod", "outside"),
        ("utime", "outside"),
        ("setxattr", "outside"),
        ("chmod", "read_only"),
        ("fchmod", "read_only"),
        ("futimens", "read_only"),
        ("fsetxattr", "read_only"),
    ],
)
async def test_metadata_of_files_it_may_not_write_is_untouchable(
    tmp_path: Path, sibling: WorkerProcess, route: str, where: str
) -> None:
    """Landlock (ABI <= 7) does not govern inode metadata; seccomp has to refuse it."""
    granted, _secret, _text = _layout(tmp_path)
    plugin = _plugin(tmp_path, granted)
    if where == "outside":  # declared nowhere
        target = tmp_path / "outside-metadata.txt"
        target.write_text("host-owned file")
    else:  # readable by the plugin (its own folder is read-only), so it can hold an fd on it
        target = Path(plugin.folder) / "autoweave.plugin.json"
    target.chmod(0o600)
    before = target.stat()
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        report = await worker.call("onMeta", route, str(target), timeout=CALL_TIMEOUT)
    await assert_responsive(sibling)
    after = target.stat()
    # Evidence on disk first (these fail if the attack worked), then the plugin's own report.
    assert stat.S_IMODE(after.st_mode) == 0o600, oct(after.st_mode)
    assert after.st_mtime_ns == before.st_mtime_ns
    assert os.listxattr(target) == []
    assert report["ok"] is False, report


async def test_cannot_watch_directories_outside(tmp_path: Path, sibling: WorkerProcess) -> None:
    """inotify is not a file open, so Landlock (ABI <= 7) does not check it; seccomp must."""
    granted, _secret, _text = _layout(tmp_path)
    outside = tmp_path / "outside-watched"
    outside.mkdir()
    secret_name = "SECRET-NAME-" + secrets.token_hex(8)
    plugin = _plugin(tmp_path, granted)
    async with running(plugin, extra_imports=("ctypes",), load_timeout=LOAD_TIMEOUT) as worker:
        report = await worker.call("onWatch", str(outside), timeout=CALL_TIMEOUT)
        # The host does its business outside the plugin's paths ...
        (outside / secret_name).write_text("host data")
        (outside / secret_name).read_text()
        events = await worker.call("onEvents", timeout=CALL_TIMEOUT)
    await assert_responsive(sibling)
    # ... and none of it, not even a file name, reaches the plugin.
    assert secret_name.encode() not in events, events
    assert report["ok"] is False, report
