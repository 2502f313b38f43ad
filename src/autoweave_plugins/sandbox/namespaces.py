"""Layer 1 of the sandbox: a worker in its own user, PID, network, IPC, mount and UTS
namespaces, inside a filesystem view built from its grants (``world.py``).

Two calls, both made by the worker on itself, so that a worker started with ``python -I``
and one forked from a template enter the same way:

- ``open_namespaces()`` when the process starts, before it reports READY. It creates the
  namespaces and the processes that hold them; it returns in the process that goes on as
  the worker. It depends on no plugin, so its cost stays off the load path.
- ``enter_world(spec, namespaces)`` once a plugin is assigned, before rlimits, Landlock,
  seccomp and any plugin code: it builds the plugin's filesystem view, takes the worker's
  final identity and caps its threads, in this very process (no fork on the load path).

The processes::

    host ── W   the process the host started and supervises; runs no plugin code
             ├── C   pid 1 of the new PID namespace: holds it and reaps orphans, nothing else
             └── G   pid 2: open_namespaces() returns here; the worker and the plugin run here

``unshare(CLONE_NEWPID)`` puts only the caller's *next children* in the new namespace, so W
itself can never be inside. pid 1 runs no plugin code because the kernel kills a whole PID
namespace, threads included, when its pid 1 dies: C has PDEATHSIG tied to W, W to the host,
and a plugin can reset its own PDEATHSIG but not C's. Killing the host, even with SIGKILL,
takes everything in the namespace with it. W and C keep none of the worker's descriptors,
so the channel's only holder is G and the host sees EOF the moment the worker dies. W waits
for G, forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to it, and ends as G
ended: the same exit code, or death by the same signal.

Identity. A root host creates the namespaces as root (owned by the initial user namespace)
and builds the world with root's file access; then the worker drops to ``outside_uid`` and
only then creates a user namespace mapping 0 to that uid. It holds no capability over any
namespace it lives in: it cannot mount, unmount, remount, set the hostname or bring ``lo``
up; what it creates on the host belongs to the unprivileged uid (a setuid bit it sets is
nobody's); its euid is not the host's root, which ``/proc/sys`` would otherwise honour. The
price: what it reads must be readable by that uid, and grants it writes writable by it. An
unprivileged host must create the user namespace first, mapping 0 to itself (the only
mapping allowed without newuidmap); the worker builds the world as root of that namespace,
then enters a nested user namespace so that here too it has no capability over its world.

Threads: RLIMIT_NPROC is set after the last user namespace exists. Since Linux 5.14 the
kernel counts tasks per (user namespace, uid), and only the worker lives in its last user
namespace, so the limit caps this worker's threads alone.

For the host: the pid it started is W's; the plugin's memory and CPU are G's, whose pid on
the host ``worker_pid()`` finds. Both calls need a single-threaded caller (unshare of a
user namespace and a clean fork both do), and raise ``WorldError`` otherwise.
"""

from __future__ import annotations

import errno
import os
import resource
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from autoweave_plugins.errors import SandboxUnavailable, WorldError
from autoweave_plugins.sandbox import kernel, native
from autoweave_plugins.sandbox.holders import hold, relay
from autoweave_plugins.sandbox.mounts import OLD_ROOT, Scaffold, build_base, finish_world
from autoweave_plugins.sandbox.privileges import EXIT_ORPHANED
from autoweave_plugins.sandbox.world import (
    NAMESPACES,
    BasePlan,
    WorldSpec,
    plan_base,
    plan_plugin,
)

__all__ = [
    "NAMESPACES",
    "Namespaces",
    "WorldReport",
    "enter_world",
    "open_namespaces",
    "outer_pid",
    "privileged",
    "with_base",
    "worker_pid",
]

FLAGS = {
    "user": kernel.CLONE_NEWUSER,
    "pid": kernel.CLONE_NEWPID,
    "net": kernel.CLONE_NEWNET,
    "ipc": kernel.CLONE_NEWIPC,
    "mount": kernel.CLONE_NEWNS,
    "uts": kernel.CLONE_NEWUTS,
}
_OPTIONAL = ("net", "ipc", "uts")
_CAP_SETGID, _CAP_SETUID, _CAP_SYS_ADMIN = 6, 7, 21


@dataclass(frozen=True, slots=True)
class Namespaces:
    """What ``open_namespaces`` made; ``created`` is empty when the kernel refused them."""

    created: tuple[str, ...]
    lost: dict[str, str]
    privileged: bool  # created by root: the user namespace comes last, in enter_world
    host_uid: int
    plan: BasePlan
    scaffold: Scaffold | None = None  # the base world, built; None without namespaces
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorldReport:
    """What the worker got. ``lost`` maps each namespace it does not have to the reason."""

    active: tuple[str, ...]
    lost: dict[str, str]
    outside_uid: int  # who the worker is on the host
    max_threads: int | None  # the per-worker thread cap in force, if any
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1e3, 3)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def privileged() -> bool:
    """Root with the capabilities to build the world before taking a user namespace."""
    if os.geteuid() != 0:
        return False
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                needed = (1 << _CAP_SYS_ADMIN) | (1 << _CAP_SETUID) | (1 << _CAP_SETGID)
                return int(line.split()[1], 16) & needed == needed
    return False


def _require_one_thread(step: str) -> None:
    """unshare(CLONE_NEWUSER) refuses a multi-threaded caller, and a fork copies one thread
    out of many: say so plainly instead of losing a namespace to a bare EINVAL."""
    with open("/proc/self/status") as status:
        threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    if threads != 1:
        raise WorldError(step, "/proc/self/status", f"the worker has {threads} threads; needs 1")


def unshare(names: Iterable[str], disabled: frozenset[str] = frozenset()) -> None:
    """``unshare(2)`` by namespace name; a ``disabled`` one fails as the kernel would."""
    names = tuple(names)
    refused = [name for name in names if name in disabled]
    if refused:
        raise OSError(errno.EPERM, f"{', '.join(refused)} namespace disabled by the host")
    flags = 0
    for name in names:
        flags |= FLAGS[name]
    kernel.unshare(flags)


def _create(required: tuple[str, ...], disabled: frozenset[str]) -> dict[str, str]:
    """Unshare ``required`` (or raise) and as many optional namespaces as the kernel allows."""
    try:
        unshare(required + _OPTIONAL, disabled)
        return {}
    except OSError:
        pass
    unshare(required, disabled)
    lost: dict[str, str] = {}
    for name in _OPTIONAL:
        try:
            unshare((name,), disabled)
        except OSError as exc:
            lost[name] = _why(exc)
    return lost


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _map_to(uid: int, gid: int) -> None:
    """Map 0 inside this (new) user namespace to ``uid``/``gid`` of the parent namespace."""
    _write("/proc/self/setgroups", "deny")  # required before an unprivileged gid_map
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")


def open_namespaces(plan: BasePlan | None = None) -> Namespaces:
    """Create the namespaces, their holders and the base world; returns in the worker (G).

    ``plan`` is ``plan_base()``'s result, made here if not given (a template makes it once
    for all its children). If the kernel refuses the namespaces a world needs (user, where
    the host is not root; mount; pid), nothing changes and the caller goes on as the worker,
    with every namespace in ``lost``; ``plan.spec.disabled`` ones count as refused. Raises
    ``WorldError`` (the caller must then report it and exit, running no plugin code).

    Call it as early as possible in the worker's life: its two forks copy the process, and
    a process that has not imported much yet is cheaper to copy.
    """
    started = time.perf_counter()
    plan = plan or plan_base()  # everything that can be checked, before anything irreversible
    base = plan.spec
    _require_one_thread("namespaces")
    root = privileged()
    uid, gid = os.geteuid(), os.getegid()
    required = ("mount", "pid") if root else ("user", "mount", "pid")
    try:
        missing = kernel.missing_syscall()
        if missing is not None:
            raise OSError(errno.ENOSYS, missing)
        lost = _create(required, base.disabled)
    except OSError as exc:
        lost = dict.fromkeys(NAMESPACES, _why(exc))
        return Namespaces((), lost, root, uid, plan, None, {"open": _ms(started)})
    if not root:
        try:
            _map_to(uid, gid)
        except OSError as exc:
            raise WorldError("namespaces", "/proc/self/uid_map", _why(exc)) from exc
    if root and "user" in base.disabled:
        lost["user"] = "user namespace disabled by the host"
    me = os.pidfd_open(os.getpid())
    os.chdir("/")  # no process may pin the host's tree once the world detaches it
    # W and C must never return into the caller's code, whatever goes wrong in them.
    with native.own_forks():
        if os.fork() == 0:
            try:
                hold(me)
            finally:
                os._exit(EXIT_ORPHANED)
        worker = os.fork()
    if worker:
        try:
            relay(worker)
        finally:
            os._exit(1)  # C dies with W, and the namespace with C
    os.close(me)
    return with_base(plan, required, lost, root, uid, started)


def with_base(
    plan: BasePlan,
    required: tuple[str, ...],
    lost: dict[str, str],
    root: bool,
    host_uid: int,
    started: float,
) -> Namespaces:
    """In the worker, its namespaces made (``required`` and whichever optional ones are not
    ``lost``): name the host, build the base of the view, and say what it has."""
    opened = _ms(started)
    made = required + _OPTIONAL
    created = tuple(name for name in NAMESPACES if name in made and name not in lost)
    if "uts" not in lost:
        try:
            kernel.sethostname(plan.spec.hostname)
        except OSError as exc:
            raise WorldError("namespaces", "hostname", _why(exc)) from exc
    final_uid = plan.spec.outside_uid if root else host_uid
    scaffold = build_base(plan, cover_proc=final_uid == 0)
    timings = {"open": opened, "base": round(_ms(started) - opened, 3)}
    return Namespaces(created, lost, root, host_uid, plan, scaffold, timings)


def _settle_identity(namespaces: Namespaces, lost: dict[str, str]) -> int:
    """Become who the worker is for good; returns its uid on the host."""
    if namespaces.privileged:
        uid, gid = namespaces.plan.spec.outside_uid, namespaces.plan.spec.outside_gid
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            kernel.set_dumpable(True)  # a uid change clears it; /proc/self/*_map needs it
        except OSError as exc:
            raise WorldError("identity", f"uid {uid}", _why(exc)) from exc
        if "user" not in lost:
            try:
                unshare(("user",))
            except OSError as exc:
                lost["user"] = _why(exc)
            else:
                try:
                    _map_to(uid, gid)
                except OSError as exc:
                    raise WorldError("identity", "/proc/self/uid_map", _why(exc)) from exc
        return uid
    try:  # nested: the namespaces of the world belong to the outer one
        unshare(("user",))
        _map_to(0, 0)
    except OSError as exc:
        raise WorldError("identity", "nested user namespace", _why(exc)) from exc
    return namespaces.host_uid


def _cap_threads(limit: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def _refuse_if_strict(spec: WorldSpec, lost: dict[str, str]) -> None:
    if spec.strict and lost:
        names = tuple(f"{name}_namespace" for name in NAMESPACES if name in lost)
        raise SandboxUnavailable(names, "; ".join(sorted(set(lost.values()))))


def enter_world(spec: WorldSpec, namespaces: Namespaces | None = None) -> WorldReport:
    """Complete the plugin's world around this process and take the worker's final identity.

    ``namespaces`` is what ``open_namespaces`` returned at start; without it both steps run
    now. With no namespaces the world is not built and every namespace is in ``lost`` (the
    other sandbox layers then stand alone). Raises ``SandboxUnavailable`` if ``spec.strict``
    and a namespace is missing, ``WorldError`` or ``InvalidPath`` if the world cannot be
    built: the caller must report the failure and exit, running no plugin code.
    """
    started = time.perf_counter()
    if namespaces is None:
        namespaces = open_namespaces()
    built = namespaces.scaffold is not None
    base = namespaces.plan.spec
    worker = (base.outside_uid, base.outside_gid) if namespaces.privileged and built else None
    # Checked before anything irreversible; read from the host's tree under the old root.
    steps = plan_plugin(spec, namespaces.plan, OLD_ROOT if built else "", worker)
    lost = dict(namespaces.lost)
    _refuse_if_strict(spec, lost)
    timings = dict(namespaces.timings_ms)
    if namespaces.scaffold is None:
        return WorldReport((), lost, os.geteuid(), None, timings | {"world": _ms(started)})
    _require_one_thread("identity")
    finish_world(namespaces.scaffold, steps, spec.folder)
    outside = _settle_identity(namespaces, lost)
    _refuse_if_strict(spec, lost)
    threads = None
    if spec.max_threads is not None and "user" not in lost:
        _cap_threads(spec.max_threads)
        threads = spec.max_threads
    active = tuple(name for name in NAMESPACES if name not in lost)
    return WorldReport(active, lost, outside, threads, timings | {"world": _ms(started)})


def outer_pid() -> int:
    """This process's pid in the PID namespace of the ``/proc`` it sees (the host's, until
    the world is built): what ``/proc/self`` points to, one readlink."""
    try:
        return int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        return os.getpid()


def worker_pid(outer_pid: int) -> int:
    """Host side: the pid, as the host sees it, of the process that runs the plugin.

    After ``open_namespaces`` that is the child of the process the host started that is
    pid 2 in its own namespace (pid 1 is the holder); a template's worker, and a worker
    without namespaces, is that process itself. The host should measure RSS and CPU there.
    """
    try:
        with open(f"/proc/{outer_pid}/task/{outer_pid}/children") as children:
            found = children.read().split()
        for child in found:
            with open(f"/proc/{child}/status") as status:
                for line in status:
                    if line.startswith("NSpid:") and line.split()[-1] == "2":
                        return int(child)
    except OSError:
        pass
    return outer_pid
