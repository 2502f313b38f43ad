"""Filesystem permission rules: which paths a plugin may read or write.

Pure logic shared by host and worker; the only I/O is ``os.path.realpath``. The kernel
(Landlock) enforces the same rules; this module exists to refuse early with a clear error.

Rules (DESIGN §4): declared paths are absolute and normalised, never ``/``, never under
``/proc``, without ``..`` or NUL. Containment is by path component, so ``/tmp/plugin-data``
never grants ``/tmp/plugin-data-secret``. Symlinks in the requested path are resolved before the
check. Several rules combine as the kernel combines them: the rights of every rule that
contains the path are added together.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from enum import Enum

from autoweave_plugins.errors import InvalidPath, PermissionDenied

__all__ = ["Access", "FileMode", "PathDecision", "PathPolicy", "PathRule", "check_declared_path"]


class Access(Enum):
    """What a plugin wants to do with a path."""

    READ = "read"
    WRITE = "write"


class FileMode(Enum):
    """What a manifest grants on a path."""

    READ = "read"
    WRITE = "write"
    READWRITE = "readwrite"

    def allows(self, access: Access) -> bool:
        if self is FileMode.READWRITE:
            return True
        return (self is FileMode.READ) == (access is Access.READ)


_FORBIDDEN_ROOTS = ("/proc",)
# Absolute, normalised (no empty, '.' or '..' component, no trailing '/'), no NUL, not /proc.
# The fast accept; ``check_declared_path`` explains any path it refuses.
DECLARABLE_PATH = re.compile(r"(?!/proc(?:/|\Z))(?:/(?!\.{1,2}(?:/|\Z))[^/\x00]+)+\Z")


def check_declared_path(path: str) -> str | None:
    """Return why ``path`` cannot be declared in a manifest, or ``None`` when it is fine."""
    if DECLARABLE_PATH.match(path):
        return None
    if "\x00" in path:
        return "must not contain a NUL byte"
    if not path.startswith("/"):
        return "must be an absolute path (start with '/')"
    if any(part == ".." for part in path.split("/")):
        return "must not contain '..'"
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal != path:
        return f"must be normalised: write {normal!r}"
    if path == "/":
        return "must not be the filesystem root"
    for root in _FORBIDDEN_ROOTS:
        if path == root or path.startswith(root + "/"):
            return f"must not be under {root}"
    return "must be a normalised absolute path such as '/tmp/plugin-data'"


def _contains(parent: str, child: str) -> bool:
    return child == parent or child.startswith(parent + "/") or parent == "/"


@dataclass(frozen=True, slots=True)
class PathRule:
    """One declared path with its mode. Build it with ``PathRule.parse`` unless already checked."""

    path: str
    mode: FileMode

    @staticmethod
    def parse(path: str, mode: str | FileMode) -> PathRule:
        """Check ``path`` and ``mode`` and build the rule; raises ``InvalidPath`` or ``ValueError``."""
        problem = check_declared_path(path)
        if problem is not None:
            raise InvalidPath(path, problem)
        return PathRule(path, FileMode(mode))


@dataclass(frozen=True, slots=True)
class PathDecision:
    """The outcome of a path check, with the rules that decided it."""

    allowed: bool
    path: str
    resolved: str
    access: Access
    rules: tuple[PathRule, ...]
    reason: str


class PathPolicy:
    """A plugin's filesystem rules, ready to answer ``check(path, access)``."""

    __slots__ = ("_resolved", "rules")

    def __init__(self, rules: tuple[PathRule, ...] | list[PathRule]) -> None:
        self.rules = tuple(rules)
        # A rule's own path may itself be (or pass through) a symlink; compare resolved forms.
        self._resolved = tuple((os.path.realpath(r.path), r) for r in self.rules)

    def check(self, path: str, access: Access) -> PathDecision:
        """Decide whether ``access`` to ``path`` is granted. Raises ``InvalidPath`` if malformed."""
        if not isinstance(path, str) or not path:
            raise InvalidPath(repr(path), "must be a non-empty string")
        if "\x00" in path:
            raise InvalidPath(path, "must not contain a NUL byte")
        if not path.startswith("/"):
            raise InvalidPath(path, "must be an absolute path")
        resolved = os.path.realpath(path)
        # Refuse /proc whether it is asked for directly (its magic links, such as
        # /proc/self/root or /proc/self/fd/N, resolve to somewhere else) or reached by a symlink.
        lexical = "/" + posixpath.normpath(path).lstrip("/")
        if _contains("/proc", lexical) or _contains("/proc", resolved):
            return PathDecision(False, path, resolved, access, (), "paths under /proc are refused")
        containing = tuple(rule for root, rule in self._resolved if _contains(root, resolved))
        granting = tuple(rule for rule in containing if rule.mode.allows(access))
        if granting:
            return PathDecision(True, path, resolved, access, granting, "granted")
        if containing:
            modes = ", ".join(f"{r.path} ({r.mode.value})" for r in containing)
            reason = f"{access.value} is not granted; the path is declared only as {modes}"
        else:
            reason = "no filesystem permission covers this path"
        return PathDecision(False, path, resolved, access, containing, reason)

    def require(self, path: str, access: Access) -> str:
        """Return the resolved path if granted, else raise ``PermissionDenied``."""
        decision = self.check(path, access)
        if not decision.allowed:
            shown = (
                path if decision.resolved == path else f"{path} (resolves to {decision.resolved})"
            )
            raise PermissionDenied("filesystem", f"{access.value} {shown}: {decision.reason}")
        return decision.resolved
