"""What sandbox layers this machine supports: the data behind ``autoweave-plugins doctor``.

Each check is made the way the worker would use the layer (the Landlock ABI from the kernel,
libseccomp loadable and seccomp filters allowed, ...), never inferred from a version number.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from autoweave_plugins.sandbox.landlock import landlock_abi
from autoweave_plugins.sandbox.native import SONAMES, load
from autoweave_plugins.sandbox.threads import thread_cap_means

__all__ = ["REQUIRED_LAYERS", "LayerStatus", "SandboxProbe", "probe"]

REQUIRED_LAYERS = (
    "landlock",
    "landlock_net",
    "landlock_scopes",
    "seccomp",
    "rlimits",
    "thread_cap",
    "no_new_privs",
)


@dataclass(frozen=True, slots=True)
class LayerStatus:
    available: bool
    detail: str


@dataclass(frozen=True, slots=True)
class SandboxProbe:
    layers: dict[str, LayerStatus] = field(default_factory=dict)

    @property
    def missing_required(self) -> tuple[str, ...]:
        return tuple(name for name in REQUIRED_LAYERS if not self.layers[name].available)

    def to_dict(self) -> dict[str, object]:
        return {name: asdict(status) for name, status in self.layers.items()} | {
            "missing_required": list(self.missing_required)
        }


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _seccomp_mode() -> str | None:
    status = _read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("Seccomp:"):
            return line.split()[1]
    return None


LOST = {
    "user": "the per-worker thread count (RLIMIT_NPROC is then shared by the uid) and, on an "
    "unprivileged host, every other namespace",
    "pid": "workers see the host's processes, and only PDEATHSIG ends them with the host",
    "net": "network isolation by the kernel: only seccomp's socket() ban and Landlock's TCP "
    "rules remain",
    "ipc": "private System V IPC and message queues (seccomp still denies their calls)",
    "mount": "the view built from grants: workers see the host's files, limited by Landlock "
    "alone, and /tmp is not size-capped",
    "uts": "a hostname of their own",
    "world": "the whole namespace layer: workers run under Landlock, seccomp and rlimits "
    "alone (strict refuses to run them)",
}
"""What a worker loses when the host cannot give it each namespace (``doctor``)."""


def probe() -> SandboxProbe:
    layers: dict[str, LayerStatus] = {}
    try:
        abi = landlock_abi()
    except OSError as exc:
        abi, why = 0, str(exc)
    else:
        why = "not enabled in this kernel (lsm= boot parameter)" if abi == 0 else ""
    layers["landlock"] = LayerStatus(abi >= 1, f"ABI {abi}" if abi else why)
    layers["landlock_net"] = LayerStatus(
        abi >= 4, "TCP bind/connect rules" if abi >= 4 else f"needs ABI 4, have {abi}"
    )
    layers["landlock_scopes"] = LayerStatus(
        abi >= 6,
        "signals and abstract unix sockets scoped" if abi >= 6 else f"needs ABI 6, have {abi}",
    )
    layers["landlock_unix_paths"] = LayerStatus(
        abi >= 9,
        "pathname unix sockets restricted"
        if abi >= 9
        else f"needs ABI 9, have {abi}; seccomp denies socket() instead",
    )
    try:
        load("seccomp")
    except OSError:
        library = None
    else:
        library = SONAMES["seccomp"]
    mode = _seccomp_mode()
    layers["seccomp"] = LayerStatus(
        library is not None and mode is not None,
        f"{library} (loaded by soname, no ldconfig), filter mode available; denies exec, "
        "prctl outside an allow-list, MAP_GROWSDOWN and stack mremap, AIO and io_uring (ENOSYS), "
        "listmount/statmount, set*id"
        if library and mode
        else "libseccomp or kernel seccomp missing",
    )
    layers["rlimits"] = LayerStatus(
        True, "RLIMIT_DATA, STACK (8 MiB; 2 MiB for other threads), FSIZE, NOFILE, CORE"
    )
    means = thread_cap_means()
    layers["thread_cap"] = LayerStatus(
        True,
        "RLIMIT_NPROC per worker: "
        + (
            "a private real uid per worker, exact"
            if means == "private_uid"
            else "this uid's tasks now + max_threads, shared with the uid's other processes"
        ),
    )
    layers["no_new_privs"] = LayerStatus(True, "prctl(PR_SET_NO_NEW_PRIVS)")
    max_userns = _read("/proc/sys/user/max_user_namespaces")
    unpriv = _read("/proc/sys/kernel/unprivileged_userns_clone")
    userns = max_userns not in (None, "0") and unpriv != "0"
    layers["user_namespaces"] = LayerStatus(
        userns,
        f"max_user_namespaces={max_userns}"
        + (f", unprivileged_userns_clone={unpriv}" if unpriv else ""),
    )
    # Probed by trying, in throwaway children; imported here so workers never load it.
    from autoweave_plugins.sandbox.nsprobe import probe_namespaces  # noqa: PLC0415

    namespaces = probe_namespaces()
    for name, (ok, detail) in namespaces.items():
        note = f"{detail}; workers enter it" if ok else f"{detail}; lost: {LOST[name]}"
        layers["world" if name == "world" else f"namespace_{name}"] = LayerStatus(ok, note)
    if namespaces["world"][0] and namespaces["user"][0]:
        layers["thread_cap"] = LayerStatus(
            True,
            "RLIMIT_NPROC in each worker's own user namespace, exact (without it: "
            + means.replace("_", " ")
            + ")",
        )
    controllers = _read("/sys/fs/cgroup/cgroup.controllers")
    layers["cgroups_v2"] = LayerStatus(
        bool(controllers) and "memory" in (controllers or ""),
        f"controllers: {controllers}"
        if controllers
        else "no unified cgroup v2 hierarchy with controllers (optional)",
    )
    layers["running_as_root"] = LayerStatus(
        os.geteuid() == 0,
        "workers drop all capabilities; in their world they are uid 65534 on the host, "
        "without it root with a private real uid"
        if os.geteuid() == 0
        else "unprivileged host",
    )
    return SandboxProbe(layers)
