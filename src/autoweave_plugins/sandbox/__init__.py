"""What a worker applies to itself before any plugin code runs, and the capability probe.

The namespace layer (``namespaces.py``) comes first, entered by the worker itself
(``worker/world_entry.py``); what it did is passed in as ``world``. Then, order matters: rlimits, the thread cap (it changes the real uid, which needs CAP_SETUID) and
privilege dropping first (they need prctl/setrlimit/setresuid, which the seccomp filter later
denies), then Landlock (before any thread exists, see landlock.py), then
seccomp (last, because it forbids what the earlier steps used). The import guard is installed
by the runtime just before the plugin's entry is imported.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import time
from collections.abc import Iterable
from dataclasses import dataclass

from autoweave_plugins.errors import SandboxUnavailable
from autoweave_plugins.rpc import WorkerSpec
from autoweave_plugins.sandbox.landlock import READ_FILE, Landlock
from autoweave_plugins.sandbox.namespaces import NAMESPACES, WorldReport
from autoweave_plugins.sandbox.native import sandbox_complete
from autoweave_plugins.sandbox.privileges import drop_privileges
from autoweave_plugins.sandbox.probe import REQUIRED_LAYERS, probe
from autoweave_plugins.sandbox.rlimits import apply_rlimits, size_thread_stacks
from autoweave_plugins.sandbox.seccomp import Program, build_filter
from autoweave_plugins.sandbox.system_data import system_data_paths
from autoweave_plugins.sandbox.threads import cap_threads

__all__ = ["Prepared", "apply_sandbox", "prepare", "probe", "runtime_read_paths"]

log = logging.getLogger(__name__)

SYSTEM_LIBRARIES = ("/usr/lib", "/lib", "/lib64", "/usr/lib64")


def runtime_read_paths() -> list[str]:
    """Everything the interpreter may still need to read: stdlib, site-packages, system libs."""
    candidates = {
        sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    candidates.update(path for path in sys.path if path)
    candidates.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this package
    candidates.update(SYSTEM_LIBRARIES)
    candidates.update(system_data_paths())
    return _outermost(os.path.realpath(path) for path in candidates if os.path.exists(path))


def _outermost(paths: Iterable[str]) -> list[str]:
    """``paths`` without those inside another: a Landlock rule on a folder covers everything
    below it, so a nested rule with the same rights only costs the worker time at load."""
    kept: list[str] = []
    for path in sorted(set(paths), key=lambda path: path.split("/")):
        if not kept or not (path == kept[-1] or path.startswith(kept[-1].rstrip("/") + "/")):
            kept.append(path)
    return kept


@dataclass(frozen=True, slots=True)
class Prepared:
    """Plugin-independent work done by a blank worker before it is assigned (pre-warm)."""

    read_paths: tuple[str, ...]
    # The compiled filter and its report, or why there is none.
    seccomp: tuple[Program, dict[str, object]] | str
    landlock: Landlock | OSError  # its plugin-independent part, or why there is none
    pid: int  # the pid the filter lets the worker signal: only valid in a process with it


def prepare(pid: int | None = None) -> Prepared:
    """Everything that does not depend on the plugin: done before READY, off the load path.

    ``pid`` is the process that will use it (default: this one); a template prepares once
    for pid 1, which each of its workers is in its own PID namespace. Also the part of the
    Landlock ruleset that does not depend on the plugin, which has landlockpy open its libc
    handle now (by soname, see native.py), before the filesystem is closed.
    """
    try:
        landlock: Landlock | OSError = Landlock()
    except OSError as exc:
        landlock = exc
    pid = os.getpid() if pid is None else pid
    try:
        flt, described = build_filter(pid)
        seccomp: tuple[Program, dict[str, object]] | str = (Program(flt), described)
    except (OSError, RuntimeError) as exc:
        seccomp = f"unavailable: {exc}"
    # System data this machine lacks (no /etc/timezone, say) is left out here, once, rather
    # than skipped, and logged, by every worker's Landlock step.
    present = tuple(path for path in runtime_read_paths() if os.path.exists(path))
    return Prepared(present, seccomp, landlock, pid)


def _threads(spec: WorkerSpec, world: WorldReport | None) -> dict[str, object]:
    if world is not None and world.max_threads is not None:
        # Already capped, and exactly: RLIMIT_NPROC in the worker's own user namespace.
        return {
            "means": "user_namespace",
            "limit": world.max_threads,
            "max_threads": spec.max_threads,
        }
    return cap_threads(spec.max_threads)  # needs CAP_SETUID: before privileges are dropped


def apply_sandbox(
    spec: WorkerSpec, prepared: Prepared | None = None, world: WorldReport | None = None
) -> dict[str, object]:
    """Apply every layer this machine supports; in strict mode, refuse if one is missing.

    ``world`` is what the namespace layer did (None: it is off), already entered: its lost
    namespaces count as missing layers.
    """
    prepared = prepared or prepare()
    report: dict[str, object] = {}
    missing: list[str] = []
    if world is not None:
        report["world"] = world.to_dict()
        missing += [f"{name}_namespace" for name in NAMESPACES if name in world.lost]
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round((now - clock) * 1000, 3)
        clock = now

    limits = apply_rlimits(
        max_heap_mb=spec.max_heap_mb,
        max_file_bytes=spec.max_file_bytes,
        max_open_files=spec.max_open_files,
    )
    limits["c_thread_stacks"] = int(size_thread_stacks())
    report["rlimits"] = limits
    threads = _threads(spec, world)
    report["threads"] = threads
    if threads["means"] == "none":
        missing.append("thread_cap")
    lap("rlimits_ms")
    privileges = drop_privileges()
    report["privileges"] = privileges
    lap("privileges_ms")
    if not privileges["no_new_privs"]:
        missing.append("no_new_privs")
    statm = f"/proc/{os.getpid()}/statm"  # lets the worker report its own RSS in pongs
    try:
        if isinstance(prepared.landlock, OSError):
            raise prepared.landlock
        private_tmp = [(spec.tmp_dir, "readwrite")] if spec.tmp_dir else []
        report["landlock"] = prepared.landlock.restrict(
            # Its own environment, read-only like its folder; never another plugin's.
            [*prepared.read_paths, spec.folder, *spec.environment_roots],
            [*spec.filesystem, *private_tmp],
            extra=[(statm, READ_FILE)],
        )
    except OSError as exc:
        report["landlock"] = f"unavailable: {exc}"
        missing.extend(("landlock", "landlock_net", "landlock_scopes"))
    else:
        applied = report["landlock"]
        assert isinstance(applied, dict)
        if not applied["tcp_denied"]:
            missing.append("landlock_net")
        if not applied["scoped_signals"]:
            missing.append("landlock_scopes")
    lap("landlock_ms")
    if spec.strict and missing:
        # Checked before seccomp: exit cleanly with a reason rather than half-sandboxed.
        raise SandboxUnavailable(tuple(missing))
    if isinstance(prepared.seccomp, str):
        report["seccomp"] = prepared.seccomp
        missing.append("seccomp")
    else:
        try:
            prepared.seccomp[0].install()
            report["seccomp"] = prepared.seccomp[1]
            sandbox_complete()  # exec and fork are now the kernel's to refuse
        except OSError as exc:
            report["seccomp"] = f"unavailable: {exc}"
            missing.append("seccomp")
    lap("seccomp_ms")
    report["timings"] = timings
    if missing:
        if spec.strict:
            raise SandboxUnavailable(tuple(missing))
        log.warning("plugin %s runs without sandbox layers: %s", spec.plugin, ", ".join(missing))
    report["missing"] = missing
    report["required"] = list(REQUIRED_LAYERS)
    return report
