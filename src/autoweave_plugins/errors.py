"""Every exception the library raises, in one tree.

Catch ``AutoweaveError`` to handle anything autoweave-plugins raises on purpose. The tree::

    AutoweaveError
    ├── ConfigError                 a host config key is unknown, mistyped or out of range
    ├── ManifestError               a manifest failed to parse or validate (carries every issue)
    ├── DiscoveryError              a plugin folder could not be used (duplicate name, escape)
    ├── InvalidPath                 a filesystem path given at runtime is malformed
    ├── InvalidURL                  a URL or URL pattern is malformed or refused before matching
    ├── PermissionDenied            a plugin asked for something its manifest does not grant
    └── PolicyRefused               a manifest asks for more than the host's grant policy allows

``ManifestError.issues`` holds ``ManifestIssue`` records, each with a JSON path in the form
``$.permissions.filesystem[0].mode``; parse errors add a line and a column.

Errors that are also a built-in category derive from it too (``InvalidURL`` is a
``ValueError``, ``PermissionDenied`` a ``PermissionError``), so callers that only know the
built-ins still catch them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AutoweaveError",
    "ConfigError",
    "DiscoveryError",
    "InvalidPath",
    "InvalidURL",
    "ManifestError",
    "ManifestIssue",
    "PermissionDenied",
    "PolicyRefused",
]


class AutoweaveError(Exception):
    """Root of every error raised by autoweave-plugins."""


class ConfigError(AutoweaveError, ValueError):
    """A host configuration value is wrong. ``key`` names it, dotted (``worker_pool.min_workers``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config {key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class ManifestIssue:
    """One problem in a manifest: where it is (a JSON path) and what to do about it."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line}, column {self.column})" if self.line is not None else ""
        return f"{self.path}: {self.message}{where}"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
            out["column"] = self.column
        return out


class ManifestError(AutoweaveError):
    """A manifest is not valid. ``issues`` lists every problem found, not only the first."""

    def __init__(self, source: str | Path | None, issues: tuple[ManifestIssue, ...]) -> None:
        self.source = str(source) if source is not None else None
        self.issues = issues
        head = f"invalid manifest {self.source}" if self.source else "invalid manifest"
        super().__init__(head + "".join(f"\n  {issue}" for issue in issues))


class DiscoveryError(AutoweaveError):
    """A plugin folder could not be used: ``path`` is the folder, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class InvalidPath(AutoweaveError, ValueError):
    """A filesystem path is malformed: relative, not normalised, NUL, ``..`` or ``/proc``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"invalid path {path!r}: {reason}")
        self.path = path
        self.reason = reason


class InvalidURL(AutoweaveError, ValueError):
    """A URL or URL pattern is malformed, or is refused before any matching is tried."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"invalid URL {url!r}: {reason}")
        self.url = url
        self.reason = reason


class PermissionDenied(AutoweaveError, PermissionError):
    """A plugin tried something its manifest does not grant. ``permission`` names which."""

    def __init__(self, permission: str, message: str) -> None:
        super().__init__(f"{permission}: {message}")
        self.permission = permission
        self.message = message


class PolicyRefused(AutoweaveError):
    """A manifest asks for more than the host's grant policy allows.

    ``permission`` is the JSON path of the refused request (``$.permissions.memory.max_heap_mb``).
    """

    def __init__(self, plugin: str, permission: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r}: {permission}: {message}")
        self.plugin = plugin
        self.permission = permission
        self.message = message
