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

landlockpy tells the kernel's ABI and which rights it handles; ``Landlock`` turns that into
plain integers and the encoded ruleset attributes once (the template does it for all its
children), and each worker then makes its ruleset with the three Landlock syscalls through
ctypes. Through landlockpy's ``Ruleset`` the same rules cost a worker forked from the
template ~740 KB of copied pages and about a millisecond, nearly all of it in ``enum.Flag``
arithmetic on objects the template shares; this way they cost ~220 KB.
"""

from __future__ import annotations

import logging
import os
import stat
import struct

import landlockpy
from landlockpy import AccessFS, AccessNet, Scope

from autoweave_plugins.sandbox import kernel
from autoweave_plugins.sandbox.native import sonames_only

__all__ = ["READ", "READ_FILE", "WRITE", "Landlock", "landlock_abi"]

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
READ_FILE = int(AccessFS.READ_FILE)
# The Landlock syscalls have these numbers on every architecture that has them.
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
RULE_PATH_BENEATH = 1
PATH_BENEATH = struct.Struct("<Qi")  # struct landlock_path_beneath_attr, packed
RULESET_ATTR = struct.Struct("<QQQ")  # handled_access_fs, handled_access_net, scoped


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


class _LeftOut:
    """Paths a ruleset grants nothing on, and why. A path that cannot be opened or ruled on
    (EACCES on a folder the plugin left unsearchable above its own grant, say) costs that
    grant alone: the ruleset is still enforced, so no error a plugin can provoke for its next
    worker switches the whole layer off."""

    def __init__(self) -> None:
        self.missing: list[str] = []
        self.symlinked: list[str] = []
        self.unreachable: list[str] = []

    def add(self, path: str, exc: OSError) -> None:
        if isinstance(exc, FileNotFoundError):
            self.missing.append(path)
        else:
            self.unreachable.append(f"{path}: {exc.strerror or exc}")

    def log(self) -> None:
        for paths, why in (
            (self.missing, "do not exist"),
            (self.symlinked, "are symlinks"),
            (self.unreachable, "cannot be reached"),
        ):
            if paths:
                log.warning("paths that %s were not granted: %s", why, ", ".join(paths))


class Landlock:
    """The part of every worker's ruleset that does not depend on its plugin, as integers.

    Raises OSError if the kernel has no Landlock."""

    def __init__(self) -> None:
        self.abi = landlock_abi()
        if self.abi < 1:
            raise OSError("Landlock is not supported by this kernel")
        handled_fs, handled_net, scoped = _handled(self.abi)
        self.handled_fs = int(handled_fs)
        self.tcp_denied = bool(handled_net & AccessNet.CONNECT_TCP)
        self.scoped_signals = bool(scoped & Scope.SIGNAL)
        self.scoped_abstract_unix = bool(scoped & Scope.ABSTRACT_UNIX_SOCKET)
        self._attr = RULESET_ATTR.pack(self.handled_fs, int(handled_net), int(scoped))
        self._read = int(READ) & self.handled_fs
        self._file_rights = int(FILE_RIGHTS)
        self._modes = {mode: int(rights) & self.handled_fs for mode, rights in MODE_RIGHTS.items()}

    def _allow(self, ruleset: int, fd: int, rights: int) -> None:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= self._file_rights
        rule = PATH_BENEATH.pack(rights, fd)
        kernel.syscall("landlock_add_rule", SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, rule, 0)

    def _allow_path(self, ruleset: int, path: str, rights: int, left_out: _LeftOut) -> None:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError as exc:
            left_out.add(path, exc)
            return
        self._allow_pinned(ruleset, path, fd, rights, left_out)

    def _allow_pinned(
        self, ruleset: int, path: str, fd: int, rights: int, left_out: _LeftOut
    ) -> None:
        try:
            self._allow(ruleset, fd, rights)
        except OSError as exc:
            left_out.add(path, exc)
        finally:
            os.close(fd)

    def restrict(
        self,
        read_only: list[str],
        declared: list[tuple[str, str]],
        extra: list[tuple[str, int]],
    ) -> dict[str, object]:
        """Restrict this process (and threads it starts later). Returns what was applied.

        Must run before any thread is started: Landlock on ABI < 8 binds only the calling
        thread and the threads it creates afterwards. Needs no_new_privs (set by
        ``drop_privileges`` before) or CAP_SYS_ADMIN, as the kernel requires. A path that
        cannot be granted is left out (``_LeftOut``); OSError means the kernel refused the
        ruleset itself, and the layer is missing.
        """
        left_out = _LeftOut()
        ruleset = kernel.syscall(
            "landlock_create_ruleset", SYS_CREATE_RULESET, self._attr, len(self._attr), 0
        )
        try:
            for path in read_only:
                self._allow_path(ruleset, path, self._read, left_out)
            for path, rights in extra:
                self._allow_path(ruleset, path, rights & self.handled_fs, left_out)
            for path, mode in declared:
                try:
                    fd = _pin(path)
                except OSError as exc:
                    left_out.add(path, exc)
                    continue
                if fd is None:
                    left_out.symlinked.append(path)
                    continue
                self._allow_pinned(ruleset, path, fd, self._modes[mode], left_out)
            kernel.syscall("landlock_restrict_self", SYS_RESTRICT_SELF, ruleset, 0)
        finally:
            os.close(ruleset)
        left_out.log()
        return {
            "abi": self.abi,
            "tcp_denied": self.tcp_denied,
            "scoped_signals": self.scoped_signals,
            "scoped_abstract_unix": self.scoped_abstract_unix,
            "missing_paths": left_out.missing,
            "symlinked_paths": left_out.symlinked,
            "unreachable_paths": left_out.unreachable,
        }
