"""The worker's Landlock ruleset: which files it may touch, no TCP, no signals or abstract
sockets outside itself.

Rules: read-only on the interpreter, stdlib, site-packages, system libraries and system data
(``system_data.py``); read on the plugin's own folder; each declared path, and the worker's
private tmp, with exactly its mode. Every filesystem right the kernel knows is handled, so
anything not granted is denied.

A writable folder also gets REFER, so ``os.rename``/``os.replace`` between folders inside it
work (without REFER the kernel answers EXDEV to any rename that changes directory). Landlock
allows such a move only when the file gains no right by it: never out of a grant, never into a
read-only one or anywhere else; between two writable grants of the same mode it is allowed,
which is no more than copying and deleting there. TCP bind and connect are handled
with no port rule, so both are denied. Rights that only make sense on directories are masked
off for files, as the kernel requires.
"""

from __future__ import annotations

import logging
import os
import stat

import landlockpy
from landlockpy import AccessFS, AccessNet, Ruleset, Scope

from autoweave_plugins.sandbox.native import sonames_only

__all__ = ["READ", "WRITE", "apply_landlock", "landlock_abi", "rehearse"]

log = logging.getLogger(__name__)

READ = AccessFS.READ_FILE | AccessFS.READ_DIR
WRITE = (
    AccessFS.WRITE_FILE
    | AccessFS.TRUNCATE
    | AccessFS.MAKE_REG
    | AccessFS.MAKE_DIR
    | AccessFS.REMOVE_FILE
    | AccessFS.REMOVE_DIR
    | AccessFS.REFER
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
    """The kernel's Landlock ABI. The first call also opens landlockpy's libc handle, by
    soname: landlockpy would otherwise run ldconfig to find it."""
    with sonames_only():
        return int(landlockpy.abi_version())


def _pin(path: str) -> int | None:
    """An O_PATH descriptor on exactly ``path``, or None if any component of it is a symlink.

    A declared path that has become a symlink (a plugin with write access to its parent could
    plant one for its next run, or swap one in while another of its workers starts) is not
    followed: nothing is granted. The rule is then added through the descriptor, so the inode
    checked is the inode granted, whatever is renamed in between.
    """
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        exact = (
            not stat.S_ISLNK(os.fstat(fd).st_mode) and os.readlink(f"/proc/self/fd/{fd}") == path
        )
    except OSError:
        exact = False  # no /proc to verify with: refuse rather than guess
    if not exact:
        os.close(fd)
        return None
    return fd


def _handled(abi: int) -> tuple[AccessFS, AccessNet, Scope]:
    handled_net = landlockpy.net_for_abi(abi) & (AccessNet.BIND_TCP | AccessNet.CONNECT_TCP)
    scoped = landlockpy.scope_for_abi(abi) & (Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL)
    return landlockpy.fs_for_abi(abi), handled_net, scoped


def _allow_read(ruleset: Ruleset, grants: list[tuple[str, AccessFS]], skipped: list[str]) -> None:
    for path, rights in grants:
        try:
            is_dir = os.path.isdir(path)
            ruleset.allow_path(path, rights if is_dir else rights & FILE_RIGHTS)
        except FileNotFoundError:
            skipped.append(path)


def rehearse(read_only: list[str]) -> None:
    """Build (and throw away, never enforced) the ruleset of the runtime's read rules, so a
    template's children find landlockpy's code specialised and its flag values made: this
    takes 0.4 ms and ~130 KB of copied pages off each worker's Landlock step."""
    abi = landlock_abi()
    if abi < 1:
        return
    handled_fs, handled_net, scoped = _handled(abi)
    with Ruleset(
        handled_fs=handled_fs, handled_net=handled_net, scoped=scoped, best_effort=True
    ) as ruleset:
        _allow_read(ruleset, [(path, READ) for path in read_only], [])
        for rights in MODE_RIGHTS.values():
            ruleset.allow_path("/", rights)


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
    handled_fs, handled_net, scoped = _handled(abi)
    skipped: list[str] = []
    symlinked: list[str] = []
    with Ruleset(
        handled_fs=handled_fs, handled_net=handled_net, scoped=scoped, best_effort=True
    ) as ruleset:
        _allow_read(ruleset, [(path, READ) for path in read_only] + list(extra), skipped)
        for path, mode in declared:
            try:
                fd = _pin(path)
            except FileNotFoundError:
                skipped.append(path)
                continue
            if fd is None:
                symlinked.append(path)
                continue
            try:
                rights = MODE_RIGHTS[mode]
                is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
                ruleset.allow_path(
                    f"/proc/self/fd/{fd}", rights if is_dir else rights & FILE_RIGHTS
                )
            finally:
                os.close(fd)
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
