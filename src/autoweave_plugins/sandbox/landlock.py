"""The worker's Landlock ruleset: which files it may touch, no TCP, no signals or abstract
sockets outside itself.

Rules: read-only on the interpreter, stdlib, site-packages and system libraries; read on the
plugin's own folder; each declared path with exactly its mode. Every filesystem right the
kernel knows is handled, so anything not granted is denied. TCP bind and connect are handled
with no port rule, so both are denied. Rights that only make sense on directories are masked
off for files, as the kernel requires.
"""

from __future__ import annotations

import logging
import os

import landlockpy
from landlockpy import AccessFS, AccessNet, Ruleset, Scope

__all__ = ["READ", "WRITE", "apply_landlock", "landlock_abi"]

log = logging.getLogger(__name__)

READ = AccessFS.READ_FILE | AccessFS.READ_DIR
WRITE = (
    AccessFS.WRITE_FILE
    | AccessFS.TRUNCATE
    | AccessFS.MAKE_REG
    | AccessFS.MAKE_DIR
    | AccessFS.REMOVE_FILE
    | AccessFS.REMOVE_DIR
)
# Rights the kernel accepts on a non-directory.
FILE_RIGHTS = (
    AccessFS.EXECUTE
    | AccessFS.WRITE_FILE
    | AccessFS.READ_FILE
    | AccessFS.TRUNCATE
    | AccessFS.IOCTL_DEV
)
MODE_RIGHTS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE}


def landlock_abi() -> int:
    return int(landlockpy.abi_version())


def apply_landlock(
    read_only: list[str],
    declared: list[tuple[str, str]],
    *,
    extra: list[tuple[str, AccessFS]] = (),  # type: ignore[assignment]
) -> dict[str, object]:
    """Restrict this process (and threads it starts later). Returns what was applied.

    Must run before any thread is started: Landlock on ABI < 8 binds only the calling thread
    and the threads it creates afterwards.
    """
    abi = landlock_abi()
    if abi < 1:
        raise OSError("Landlock is not supported by this kernel")
    handled_fs = landlockpy.fs_for_abi(abi)
    handled_net = landlockpy.net_for_abi(abi) & (AccessNet.BIND_TCP | AccessNet.CONNECT_TCP)
    scoped = landlockpy.scope_for_abi(abi) & (Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL)
    skipped: list[str] = []
    symlinked: list[str] = []
    with Ruleset(
        handled_fs=handled_fs, handled_net=handled_net, scoped=scoped, best_effort=True
    ) as ruleset:
        grants = [(path, READ) for path in read_only]
        for path, mode in declared:
            # A declared path that has become a symlink (a plugin with write access to its
            # parent could plant one for its next run) is not followed: nothing is granted.
            if os.path.realpath(path) != path and os.path.lexists(path):
                symlinked.append(path)
            else:
                grants.append((path, MODE_RIGHTS[mode]))
        grants += list(extra)
        for path, rights in grants:
            try:
                is_dir = os.path.isdir(path)
                ruleset.allow_path(path, rights if is_dir else rights & FILE_RIGHTS)
            except FileNotFoundError:
                skipped.append(path)
        ruleset.restrict()
    if skipped:
        log.warning("declared paths that do not exist were not granted: %s", ", ".join(skipped))
    if symlinked:
        log.warning("declared paths that are symlinks were not granted: %s", ", ".join(symlinked))
    return {
        "abi": abi,
        "tcp_denied": bool(handled_net & AccessNet.CONNECT_TCP),
        "scoped_signals": bool(scoped & Scope.SIGNAL),
        "scoped_abstract_unix": bool(scoped & Scope.ABSTRACT_UNIX_SOCKET),
        "missing_paths": skipped,
        "symlinked_paths": symlinked,
    }
