"""Kernel resources a plugin must not reach: memory RLIMIT_DATA does not count, machine-wide AIO,
the mount table, and syscalls newer than the filter's names.

The plugin gets ``ctypes``, so the import list is out of the way and only the kernel layers stop
it. Evidence is read outside the plugin: the worker's RSS as psutil sees it from this (host)
process, ``/proc/sys/fs/aio-nr``, the host's own mount table, and a file's xattrs on disk.
"""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

import psutil
import pytest

from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.errors import PluginCrashed
from autoweave_plugins.process import WorkerProcess
from tests.helpers.workers import running, write_plugin
from tests.security._support import CALL_TIMEOUT, LOAD_TIMEOUT, PRELUDE, assert_responsive

pytestmark = pytest.mark.asyncio(loop_scope="module")

MB = 1 << 20
MAX_HEAP_MB = 64
GRAB_MB = 1536

KERNEL_CODE = (
    PRELUDE
    + '''
import ctypes

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p)
libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
MAP_FAILED = ctypes.c_void_p(-1).value
PAGE = 4096
PROT_RW, MAP_PRIVATE_ANON, MAP_GROWSDOWN, MREMAP_MAYMOVE = 3, 0x22, 0x100, 1
HOLD = []
X86 = os.uname().machine == "x86_64"
NR = {  # the numbers are the same on x86_64 and aarch64 from 424 on
    "io_setup": 206 if X86 else 0, "io_destroy": 207 if X86 else 1,
    "io_submit": 209 if X86 else 2, "io_cancel": 210 if X86 else 3,
    "io_getevents": 208 if X86 else 4, "io_pgetevents": 333 if X86 else 292,
    "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459, "lsm_set_self_attr": 460,
    "lsm_list_modules": 461, "setxattrat": 463, "removexattrat": 466, "open_tree_attr": 467,
    "file_setattr": 469, "quotactl_fd": 443, "io_uring_setup": 425,
}


def fail():
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err))


def checked(value):
    if value is None or value == MAP_FAILED or (isinstance(value, int) and value < 0):
        fail()
    return value


def mapped(address):
    vec = ctypes.create_string_buffer(1)
    return libc.mincore(address, PAGE, vec) == 0


def stack_low():
    """The lowest page of the main thread's stack, found from below its top with mincore
    (/proc/self/maps is not readable in the sandbox)."""
    top = ctypes.c_void_p.in_dll(libc, "__libc_stack_end").value & ~(PAGE - 1)
    while mapped(top - PAGE):
        top -= PAGE
    return top


def growsdown(size):
    return checked(libc.mmap(None, size, PROT_RW, MAP_PRIVATE_ANON | MAP_GROWSDOWN, -1, 0))


def mremap_stack(size):
    """Split a page off the main stack's mapping and grow it: it keeps the stack's accounting."""
    return checked(libc.mremap(stack_low(), PAGE, size, MREMAP_MAYMOVE, None))


def grow_stack(size):
    """Touch far below the stack: the kernel grows it, bounded only by RLIMIT_STACK."""
    low = stack_low() - size
    ctypes.memset(low, 1, size)
    return low


def grab(route, mb):
    size = mb << 20
    if route == "grow_stack":
        attempt(grow_stack, size)  # a refused growth is SIGSEGV: the worker dies
        return {"held": True}
    outcome = attempt({"growsdown": growsdown, "mremap_stack": mremap_stack}[route], size)
    if outcome["ok"]:
        ctypes.memset(outcome["value"], 1, size)
        HOLD.append(outcome["value"])
    return outcome


def aio(events):
    ctx = ctypes.c_ulong(0)
    out = {"io_setup": attempt(lambda: checked(libc.syscall(NR["io_setup"], events, ctypes.byref(ctx))))}
    HOLD.append(ctx)
    for name in ("io_submit", "io_cancel", "io_getevents", "io_pgetevents", "io_destroy", "io_uring_setup"):
        out[name] = attempt(lambda: checked(libc.syscall(NR[name], ctx.value, 0, 0, 0, 0, 0)))
    return out


def mount_table():
    """listmount from the root of the mount tree, then statmount of each id for its path.

    struct mnt_id_req (version 0, 24 bytes): u32 size, u32 spare, u64 mnt_id, u64 param.
    """
    listing = (ctypes.c_uint64 * 3)(24, (1 << 64) - 1, 0)  # LSMT_ROOT, after id 0
    ids = (ctypes.c_uint64 * 512)()
    found = {"listmount": attempt(lambda: checked(libc.syscall(NR["listmount"], listing, ids, 512, 0)))}
    count = found["listmount"]["value"] if found["listmount"]["ok"] else 0
    texts = []
    for mnt_id in list(ids[:count]) or [1]:
        one = (ctypes.c_uint64 * 3)(24, mnt_id, 0x10)  # STATMOUNT_MNT_POINT
        buf = ctypes.create_string_buffer(4096)
        found["statmount"] = attempt(lambda: checked(libc.syscall(NR["statmount"], one, buf, 4096, 0)))
        texts += [part for part in buf.raw.split(b"\\0") if part]
    found["texts"] = b" ".join(texts)
    return found


def new_syscalls(target):
    """Syscalls libseccomp may not know by name; a few arguments that would do something."""
    name = target.encode()
    value = b"hostile"
    args = {
        "setxattrat": (-100, name, 0, b"user.autoweave", 0, 0),
        "removexattrat": (-100, name, 0, b"user.host"),
        "file_setattr": (-100, name, 0, 0, 0),
        "open_tree_attr": (-100, b"/", 1, 0, 0),
        "lsm_set_self_attr": (100, 0, 0, 0),
        "lsm_get_self_attr": (100, 0, 0, 0),
        "lsm_list_modules": (0, 0, 0),
        "quotactl_fd": (0, 0, 0, 0),
    }
    buffer = ctypes.create_string_buffer(value)
    attr = (ctypes.c_uint64 * 2)(ctypes.addressof(buffer), len(value))  # struct xattr_args
    out = {}
    for call, argv in args.items():
        if call == "setxattrat":
            argv = (-100, name, 0, b"user.autoweave", ctypes.byref(attr), 16)
        out[call] = attempt(lambda: checked(libc.syscall(NR[call], *argv)))
    return out


def release():
    HOLD.clear()
'''
)
HOOKS = {"onGrab": "grab", "onAio": "aio", "onMounts": "mount_table", "onNew": "new_syscalls"}


def _plugin(root: Path) -> DiscoveredPlugin:
    return write_plugin(
        root,
        "kernel-attacker",
        KERNEL_CODE,
        hooks=HOOKS,
        permissions={"memory": {"max_heap_mb": MAX_HEAP_MB}},
    )


@pytest.mark.parametrize("route", ["growsdown", "mremap_stack", "grow_stack"])
async def test_memory_that_rlimit_data_does_not_count_is_refused(
    plugin_root: Path, sibling: WorkerProcess, route: str
) -> None:
    """Stack-like mappings are not data: RLIMIT_DATA never sees them. 1.5 GiB at 64 MB."""
    plugin = _plugin(plugin_root)
    # A host with an unlimited stack rlimit: the worker inherits it, unless it sets its own.
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if route == "grow_stack":
        resource.setrlimit(resource.RLIMIT_STACK, (hard, hard))
    try:
        worker_cm = running(plugin, extra_imports=("ctypes",), load_timeout=LOAD_TIMEOUT)
        worker = await worker_cm.__aenter__()
    finally:
        resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))
    try:
        assert worker.pid is not None
        try:
            report = await worker.call("onGrab", route, GRAB_MB, timeout=CALL_TIMEOUT)
        except PluginCrashed:
            report = {"ok": False, "error": "killed"}  # a refused stack growth is a SIGSEGV
        rss = psutil.Process(worker.pid).memory_info().rss if worker.alive else 0
    finally:
        await worker_cm.__aexit__(None, None, None)
    # Evidence: the worker's resident memory, measured by the host, never came near 1.5 GiB.
    assert rss < 2 * MAX_HEAP_MB * MB + 64 * MB, f"worker RSS {rss / MB:.0f} MB ({report})"
    assert report.get("ok") is False, report
    await assert_responsive(sibling)


def _aio_nr() -> int:
    return int(Path("/proc/sys/fs/aio-nr").read_text())


async def test_kernel_aio_cannot_exhaust_the_machine(
    plugin_root: Path, sibling: WorkerProcess
) -> None:
    plugin = _plugin(plugin_root)
    before = _aio_nr()
    async with running(plugin, extra_imports=("ctypes",), load_timeout=LOAD_TIMEOUT) as worker:
        report = await worker.call("onAio", 32768, timeout=CALL_TIMEOUT)
        during = _aio_nr()  # the plugin still holds whatever it got
    # Evidence: the machine-wide count of AIO events did not move.
    assert during == before, f"aio-nr went from {before} to {during}: {report}"
    assert _aio_nr() == before
    for call, outcome in report.items():
        assert outcome["ok"] is False and outcome["errno"] == errno.ENOSYS, (call, outcome)
    await assert_responsive(sibling)


def _host_mount_points() -> list[str]:
    """Mount points of this host that say something about it (not just "/")."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if len(point) > 4:
            points.append(point)
    return points


async def test_the_mount_table_is_not_readable(plugin_root: Path, sibling: WorkerProcess) -> None:
    points = _host_mount_points()
    assert points, "this host has no mount points to recognise"
    plugin = _plugin(plugin_root)
    async with running(plugin, extra_imports=("ctypes",), load_timeout=LOAD_TIMEOUT) as worker:
        report = await worker.call("onMounts", timeout=CALL_TIMEOUT)
    leaked = [p for p in points if p.encode() in report["texts"]]
    assert leaked == [], leaked
    assert report["listmount"]["ok"] is False, report["listmount"]
    assert report["statmount"]["ok"] is False, report["statmount"]
    await assert_responsive(sibling)


async def test_syscalls_newer_than_libseccomp_are_denied(
    plugin_root: Path, sibling: WorkerProcess
) -> None:
    plugin = _plugin(plugin_root)
    target = Path(plugin.folder) / "autoweave.plugin.json"  # readable: it may hold an fd on it
    target.chmod(0o600)
    os.setxattr(target, "user.host", b"the host's")
    async with running(plugin, extra_imports=("ctypes",), load_timeout=LOAD_TIMEOUT) as worker:
        report = await worker.call("onNew", str(target), timeout=CALL_TIMEOUT)
    # Evidence on disk first: the plugin could neither add nor remove an xattr on a file it
    # may only read.
    assert os.listxattr(target) == ["user.host"]
    for call, outcome in report.items():
        assert outcome["ok"] is False, (call, outcome)
        assert outcome["errno"] in (errno.EPERM, errno.ENOSYS), (call, outcome)
    await assert_responsive(sibling)
