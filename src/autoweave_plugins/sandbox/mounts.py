"""Carrying out a world's plans (``world.py``) inside a fresh mount namespace.

The order is bubblewrap's. Everything is made private, so nothing propagates back to the
host. A tmpfs becomes the root by ``pivot_root``, with the old root under it at
``/.oldroot``; the view is assembled from ``/.oldroot/...``. ``/proc`` for the new PID
namespace is mounted while the host's one is still there, because the kernel lets a user
namespace mount procfs only when an unobstructed one is already in its mount namespace.
Last, the old root is detached and the root and ``/dev`` made read-only: nothing of the host
remains reachable.

``build_base`` runs when the worker starts; ``finish_world`` at assignment adds the plugin's
mounts and detaches the old root. Both must run in the new PID and mount namespaces; a
failure raises ``WorldError`` naming the step, and leaves a half-built view in which the
worker must not go on.
"""

from __future__ import annotations

import contextlib
import os

from autoweave_plugins.errors import WorldError
from autoweave_plugins.sandbox import kernel
from autoweave_plugins.sandbox.world import READ_ONLY, BasePlan, Step

__all__ = ["OLD_ROOT", "Scaffold", "build_base", "finish_world"]

OLD_ROOT = "/.oldroot"
STAGE = "/tmp"  # any host directory: the root tmpfs is mounted here, then moved to / by pivot
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus")
_TMPFS_FLAGS = kernel.MS_NOSUID | kernel.MS_NODEV
_ROOT_TMPFS = "mode=0755,size=1m,nr_inodes=4096"


class Scaffold:
    """A world under construction: runs steps, remembering which paths exist already."""

    def __init__(self) -> None:
        self.binds: set[str] = set()
        self.made: set[str] = {"/"}

    def provided(self, path: str) -> bool:
        """A bind mount at ``path`` or above it holds it (walks up: O(depth), not O(binds))."""
        while path not in self.binds:
            if path in ("/", ""):
                return False
            path = os.path.dirname(path)
        return True

    def makedirs(self, path: str) -> None:
        if path in self.made or self.provided(path):
            return
        self.makedirs(os.path.dirname(path))
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
        self.made.add(path)

    def mount_point(self, target: str, directory: bool) -> None:
        if self.provided(target):
            return  # a bind mount above holds the same host tree, so the path exists
        if directory:
            self.makedirs(target)
        else:
            self.makedirs(os.path.dirname(target))
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))

    def covered(self, target: str) -> None:
        """A mount at ``target`` hides what was below it: forget those paths."""
        inside = target + "/"
        self.binds = {b for b in self.binds if not b.startswith(inside)}
        self.made = {m for m in self.made if not m.startswith(inside)}

    def run(self, step: Step, cover_proc: bool) -> None:
        if step.kind in ("bind", "tmpfs"):
            self.covered(step.target)
        if step.kind == "bind":
            self.mount_point(step.target, step.directory)
            kernel.mount(OLD_ROOT + step.source, step.target, None, kernel.MS_BIND | kernel.MS_REC)
            if step.attrs:
                kernel.mount_setattr(step.target, step.attrs, recursive=True)
            self.binds.add(step.target)
        elif step.kind == "tmpfs":
            self.mount_point(step.target, True)
            flags = _TMPFS_FLAGS | (kernel.MS_NOEXEC if step.target == "/tmp" else 0)
            kernel.mount("tmpfs", step.target, "tmpfs", flags, step.options)
        elif step.kind == "proc":
            self.mount_point(step.target, True)
            kernel.mount("proc", step.target, "proc", _TMPFS_FLAGS | kernel.MS_NOEXEC)
            for name in PROC_READ_ONLY if cover_proc else ():
                path = f"{step.target}/{name}"
                if os.path.lexists(path):
                    kernel.mount(path, path, None, kernel.MS_BIND | kernel.MS_REC)
                    kernel.mount_setattr(path, READ_ONLY, recursive=True)
        elif step.kind == "symlink":
            if not self.provided(step.target):
                self.makedirs(os.path.dirname(step.target))
                os.symlink(step.source, step.target)
        elif step.kind == "file":
            if not self.provided(step.target):
                self.makedirs(os.path.dirname(step.target))
                flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC
                fd = os.open(step.target, flags, 0o644)
                try:
                    os.write(fd, step.source.encode())
                finally:
                    os.close(fd)
        else:
            raise WorldError("build", step.target, f"unknown step {step.kind!r}")


def _failed(current: str, exc: OSError) -> WorldError:
    return WorldError("build", exc.filename or current, f"{current}: {exc.strerror}")


def build_base(plan: BasePlan, *, cover_proc: bool) -> Scaffold:
    """Pivot into a fresh root and place the plugin-independent part of the world.

    ``cover_proc`` makes ``/proc/sys`` and friends read-only: needed when the worker's uid
    on the host is 0, which sysctl permission checks honour whatever the namespace.
    """
    current = "prepare"
    scaffold = Scaffold()
    try:
        kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
        kernel.mount("tmpfs", STAGE, "tmpfs", _TMPFS_FLAGS, _ROOT_TMPFS)
        os.chdir(STAGE)
        os.mkdir(OLD_ROOT.lstrip("/"), 0o700)
        kernel.pivot_root(".", OLD_ROOT.lstrip("/"))
        os.chdir("/")
        for step in plan.steps:
            current = f"{step.kind} {step.target}"
            scaffold.run(step, cover_proc)
    except OSError as exc:
        raise _failed(current, exc) from exc
    return scaffold


def finish_world(scaffold: Scaffold, steps: list[Step], cwd: str) -> None:
    """Place the plugin's part, detach the host's root, seal the view, enter ``cwd``."""
    current = "plugin"
    try:
        for step in steps:
            current = f"{step.kind} {step.target}"
            scaffold.run(step, False)
        current = "detach the host's root"
        kernel.umount2(OLD_ROOT, kernel.MNT_DETACH)
        os.rmdir(OLD_ROOT)
        current = "seal"
        kernel.mount_setattr("/dev", READ_ONLY, recursive=False)
        kernel.mount_setattr("/", READ_ONLY, recursive=False)
        os.chdir(cwd)
    except OSError as exc:
        raise _failed(current, exc) from exc
