"""What a worker's filesystem view is made of: plans built from what it is granted.

A world is planned in two parts, so that only the plugin's own part costs time at load:

- the *base* (``BaseSpec``), the same for every plugin and built when the worker starts:
  the runtime and system data read-only, ``null``, ``zero``, ``full``, ``random`` and
  ``urandom`` in an otherwise empty ``/dev``, its own ``/proc``, a few synthetic ``/etc``
  files;
- the *plugin* part (``WorldSpec``), at assignment: the plugin folder and extra trees
  read-only, each grant at its own path with its mode, and a private size-capped ``/tmp``.

Planning is pure (it only reads the host's file types and symlinks): everything that can be
wrong is found before anything irreversible happens. Symlinked components of a path are
recreated as the same symlinks and their targets exposed, so ``/lib -> usr/lib`` and
``/etc/localtime -> ../usr/share/zoneinfo/...`` keep working. Every mount is nosuid and
nodev; grants and ``/tmp`` are also noexec. ``mounts.py`` carries the plans out.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field

from autoweave_plugins.errors import InvalidPath, ProtocolError, WorldError
from autoweave_plugins.sandbox import kernel

__all__ = [
    "DATA",
    "NAMESPACES",
    "READ_ONLY",
    "SYSTEM_DATA",
    "WORKER_IDENTITY",
    "BasePlan",
    "BaseSpec",
    "Step",
    "WorldOptions",
    "WorldSpec",
    "plan_base",
    "plan_plugin",
    "runtime_paths",
]

SYSTEM_DATA = (
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",  # shared libraries: the interpreter, its extensions, libseccomp
    "/etc/ld.so.cache",  # dlopen() by soname finds multiarch libraries through it
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust/extracted",
    "/usr/share/ca-certificates",
    "/etc/mime.types",
    "/usr/lib/locale",
    "/usr/share/locale",
)
"""System files ordinary code reads; those missing on this host are left out of the view."""

NAMESPACES = ("user", "pid", "net", "ipc", "mount", "uts")
WORKER_IDENTITY = (65534, 65534)
"""Who a root host's workers are on the host (uid, gid) once in their own user namespace."""
DEVICES = ("null", "zero", "full", "random", "urandom")
READ_ONLY = kernel.MOUNT_ATTR_RDONLY | kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV
DATA = kernel.MOUNT_ATTR_NOSUID | kernel.MOUNT_ATTR_NODEV | kernel.MOUNT_ATTR_NOEXEC
_RESERVED = ("/proc", "/dev")  # built by the world itself; /tmp too, but /tmp/x may be granted
_MODES = {"read": DATA | kernel.MOUNT_ATTR_RDONLY, "write": DATA, "readwrite": DATA}


def runtime_paths() -> tuple[str, ...]:
    """What the interpreter reads after the pivot, at the paths it already imports from: its
    import path (stdlib, extension modules, site-packages, the venv's too) and this package.

    Read from ``sys.path`` rather than ``sysconfig``, which costs a millisecond per worker.
    """
    found = {entry for entry in sys.path if entry and os.path.isabs(entry)}
    found.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return tuple(sorted(path for path in found if os.path.exists(path)))


@dataclass(frozen=True, slots=True)
class BaseSpec:
    """The part of every world that does not depend on the plugin.

    ``outside_uid``/``outside_gid`` are who workers are on the host when the host runs as
    root (ignored otherwise: an unprivileged host maps each worker to itself).
    ``disabled`` names namespaces to treat as refused by the kernel (tests, or a host that
    must not use one): the worker then falls back exactly as if the kernel had said EPERM.
    """

    runtime: tuple[str, ...] = field(default_factory=runtime_paths)
    system: tuple[str, ...] = SYSTEM_DATA
    hostname: str = "autoweave"
    outside_uid: int = WORKER_IDENTITY[0]
    outside_gid: int = WORKER_IDENTITY[1]
    disabled: frozenset[str] = frozenset()


_OFF = "off"
_ALL = "-"


@dataclass(frozen=True, slots=True)
class WorldOptions:
    """What the host asks of every worker it starts: whether it gets the namespace layer,
    and which namespaces count as refused by the kernel (``worker_pool.namespaces`` and
    ``worker_pool.disabled_namespaces``). It travels as one command-line argument
    (``to_arg``): ``off``, ``-`` (all the kernel allows), or the comma list of refused ones.
    """

    enabled: bool = True
    disabled: frozenset[str] = frozenset()

    def to_arg(self) -> str:
        if not self.enabled:
            return _OFF
        return ",".join(sorted(self.disabled)) or _ALL

    @classmethod
    def from_arg(cls, text: str) -> WorldOptions:
        if text == _OFF:
            return cls(enabled=False)
        names = frozenset(name for name in text.split(",") if name and text != _ALL)
        unknown = names - set(NAMESPACES)
        if unknown:
            raise ProtocolError(f"unknown namespaces in the world argument: {sorted(unknown)}")
        return cls(disabled=names)

    def base(self) -> BaseSpec:
        return BaseSpec(disabled=self.disabled)


@dataclass(frozen=True, slots=True)
class WorldSpec:
    """One plugin's part of its world. Paths are absolute and already resolved.

    ``grants`` are ``(path, mode)`` with mode ``read``, ``write`` or ``readwrite``.
    ``max_threads`` caps the worker's threads (RLIMIT_NPROC in its own user namespace).
    ``strict`` refuses to go on without every namespace (``SandboxUnavailable``).
    """

    folder: str
    grants: tuple[tuple[str, str], ...] = ()
    extra_read: tuple[str, ...] = ()
    tmp_bytes: int = 64 << 20
    tmp_inodes: int = 16384
    max_threads: int | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One action of a build: bind, tmpfs, proc, symlink or file."""

    kind: str
    target: str
    source: str = ""  # bind: the host path; symlink: the link text; file: the content
    attrs: int = 0  # MOUNT_ATTR_* for a bind (set recursively)
    options: str = ""  # tmpfs mount data
    directory: bool = True  # bind: a directory (else a file) is its mount point


@dataclass(frozen=True, slots=True)
class BasePlan:
    """The base's steps; computed once, it can be reused by every worker (a template's)."""

    spec: BaseSpec
    steps: tuple[Step, ...]
    binds: tuple[Step, ...]  # the base's bind mounts, re-placed above any plugin mount over them


def _check_path(path: str, what: str) -> None:
    if "\0" in path:
        raise InvalidPath(path, f"{what}: NUL byte")
    if not os.path.isabs(path) or os.path.normpath(path) != path or path.startswith("//"):
        raise InvalidPath(path, f"{what}: must be absolute and normalised")
    if path in ("/", "/tmp"):
        raise WorldError("plan", path, f"{what}: {path} cannot be shared with a worker")
    for reserved in _RESERVED:
        if _within(path, reserved):
            raise WorldError("plan", path, f"{what}: {reserved} is built by the world itself")


def _components(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


def _within(path: str, base: str) -> bool:
    return path == base or path.startswith(base + "/")


def _canonical(path: str, links: dict[str, str], root: str) -> tuple[str, bool] | None:
    """``path`` resolved, and whether it is a directory; records each symlink on the way.

    The host's tree is read under ``root`` (where it lies once the worker has pivoted).
    """
    current, parts, hops = "/", list(_components(path)), 0
    is_dir = True
    while parts:
        candidate = os.path.join(current, parts.pop(0))
        try:
            info = os.lstat(root + candidate)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if hops > 40:
                raise WorldError("plan", path, "too many levels of symbolic links")
            text = os.readlink(root + candidate)
            links.setdefault(candidate, text)
            parts = list(_components(os.path.normpath(os.path.join(current, text)))) + parts
            current = "/"
        else:
            current, is_dir = candidate, stat.S_ISDIR(info.st_mode)
    return current, is_dir


class _Planner:
    """Collects host paths with their rights; the most permissive request for a path wins."""

    def __init__(self, root: str = "") -> None:
        self.root = root
        self.wanted: dict[str, tuple[int, bool]] = {}
        self.links: dict[str, str] = {}

    def want(self, path: str, attrs: int, what: str, *, required: bool) -> str | None:
        _check_path(path, what)
        found = _canonical(path, self.links, self.root)
        if found is None:
            if required:
                raise WorldError("plan", path, f"{what} does not exist")
            return None
        real, is_dir = found
        _check_path(real, what)
        previous = self.wanted.get(real)
        self.wanted[real] = (attrs & previous[0] if previous else attrs, is_dir)
        return real

    def binds(self, covering: list[Step]) -> list[Step]:
        """Bind steps, parents first, leaving out what a covering mount already provides."""
        placed = list(covering)
        steps: list[Step] = []
        for path in sorted(self.wanted, key=_components):
            attrs, is_dir = self.wanted[path]
            nearest = next((s.attrs for s in reversed(placed) if _within(path, s.target)), None)
            if nearest is not None and nearest & ~attrs == 0:
                continue  # visible through a mount above with at least these rights
            step = Step("bind", path, path, attrs, directory=is_dir)
            placed.append(step)
            steps.append(step)
        return steps


def plan_base(spec: BaseSpec | None = None) -> BasePlan:
    """The plugin-independent steps: /proc, /dev, the runtime, system data, /etc files."""
    spec = spec or BaseSpec()
    planner = _Planner()
    for path in spec.runtime:
        planner.want(path, READ_ONLY, "runtime path", required=False)
    for path in spec.system:
        planner.want(path, READ_ONLY, "system path", required=False)
    binds = planner.binds([])
    # Device nodes keep the host's /dev mount flags: nosuid or noexec mean nothing for them.
    devices = [Step("bind", f"/dev/{name}", f"/dev/{name}", 0, directory=False)
               for name in DEVICES]  # fmt: skip
    mounts = [
        Step("proc", "/proc"),
        Step("tmpfs", "/dev", options="mode=0755,size=64k,nr_inodes=64"),
    ]
    mounts += devices + binds
    mounts.sort(key=lambda step: _components(step.target))  # a mount before what lies in it
    links = [Step("symlink", link, text) for link, text in sorted(planner.links.items())]
    links += [Step("symlink", f"/dev/{name}", text) for name, text in
              (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
               ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))]  # fmt: skip
    users = "root:x:0:0:root:/:/usr/sbin/nologin\nnobody:x:65534:65534::/:/usr/sbin/nologin\n"
    hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{spec.hostname}\n"
    files = [
        Step("file", "/etc/passwd", users),
        Step("file", "/etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        Step("file", "/etc/hostname", spec.hostname + "\n"),
        Step("file", "/etc/hosts", hosts),
    ]
    return BasePlan(spec, tuple(mounts + links + files), tuple(binds))


def _check_access(path: str, shown: str, worker: tuple[int, int], write: bool) -> None:
    """Refuse, naming the fix, a tree the worker's uid could not use (mode bits, no ACL)."""
    uid, gid = worker
    info = os.stat(path)
    if uid == 0 or "system.posix_acl_access" in os.listxattr(path):
        return
    shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
    search = stat.S_IXOTH if stat.S_ISDIR(info.st_mode) else 0
    needed = stat.S_IROTH | search | (stat.S_IWOTH if write else 0)
    if (info.st_mode >> shift) & needed != needed:
        access = "write" if write else "read"
        raise WorldError("plan", shown, f"uid {uid}, the worker on the host, cannot {access} it "
                         f"(mode {info.st_mode & 0o777:o}, owner {info.st_uid}); "
                         f"give it to uid {uid} or open it to others")  # fmt: skip


def plan_plugin(
    spec: WorldSpec, base: BasePlan, host_root: str = "", worker: tuple[int, int] | None = None
) -> list[Step]:
    """The plugin's steps, on top of ``base``; raises for anything the world cannot hold.

    ``host_root`` is where the host's tree is read from (``/.oldroot`` after the pivot);
    ``worker`` is the uid and gid the worker will have on the host, to refuse up front a
    plugin folder or a grant that it could not use (a clear error instead of EACCES later).
    """
    if spec.tmp_bytes < 4096 or spec.tmp_inodes < 16:
        raise WorldError("plan", "/tmp", "the private /tmp needs at least 4 KiB and 16 inodes")
    planner = _Planner(host_root)
    folder = planner.want(spec.folder, READ_ONLY, "plugin folder", required=True)
    if worker is not None:
        _check_access(host_root + str(folder), spec.folder, worker, write=False)
    for path in spec.extra_read:
        planner.want(path, READ_ONLY, "read-only path", required=True)
    protected = [step.target for step in base.binds] + [folder or spec.folder]
    for path, mode in spec.grants:
        if mode not in _MODES:
            raise WorldError("plan", path, f"unknown grant mode {mode!r}")
        real = planner.want(path, _MODES[mode], f"{mode} grant", required=True)
        if mode != "read" and any(_within(str(real), base) for base in protected):
            raise WorldError("plan", path, "a write grant inside the runtime or plugin folder")
        if worker is not None:
            _check_access(host_root + str(real), path, worker, write=mode != "read")
    tmp = f"mode=1777,size={spec.tmp_bytes},nr_inodes={spec.tmp_inodes}"
    steps: dict[tuple[str, str], Step] = {}
    for step in [Step("tmpfs", "/tmp", options=tmp), *planner.binds(list(base.binds))]:
        steps[step.kind, step.target] = step
        # A plugin mount over a base mount would hide it: put the base one back on top.
        for under in base.binds:
            if under.target != step.target and _within(under.target, step.target):
                steps.setdefault((under.kind, under.target), under)
    return sorted(steps.values(), key=lambda step: _components(step.target))
