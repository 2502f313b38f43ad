"""Finding plugin folders under a directory and validating them in one batch.

A plugin folder is a directory holding ``autoweave.plugin.json``; the scan does not descend
into it. Other directories are descended into up to ``max_depth`` levels below the root.
Ignored names (globs) are skipped. A folder reached through a symlink that leaves the root is
refused: the host would otherwise load code from wherever the link points. Two folders that
declare the same plugin name are an error naming both; the first in sorted order is kept, so a
copy dropped beside a running plugin never displaces it.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from autoweave_plugins.errors import DiscoveryError, ManifestIssue
from autoweave_plugins.manifest.cache import ManifestCache
from autoweave_plugins.manifest.model import MANIFEST_FILENAME, Manifest

__all__ = [
    "DEFAULT_IGNORE",
    "DiscoveredPlugin",
    "DiscoveryProblem",
    "DiscoveryResult",
    "check_plugin_folder",
    "discover",
]

DEFAULT_IGNORE = (".*", "__pycache__", "node_modules")


@dataclass(frozen=True, slots=True)
class DiscoveredPlugin:
    """A valid plugin: its folder (resolved), manifest path and manifest."""

    folder: str
    manifest_path: str
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def entry_path(self) -> str:
        return os.path.join(self.folder, self.manifest.entry)


@dataclass(frozen=True, slots=True)
class DiscoveryProblem:
    """A folder that could not be used, with every issue found in it."""

    folder: str
    manifest_path: str | None
    issues: tuple[ManifestIssue, ...]

    def as_error(self) -> DiscoveryError:
        return DiscoveryError(self.folder, "; ".join(str(i) for i in self.issues))


@dataclass(slots=True)
class DiscoveryResult:
    plugins: dict[str, DiscoveredPlugin] = field(default_factory=dict)
    problems: list[DiscoveryProblem] = field(default_factory=list)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + "/")


def check_plugin_folder(
    folder: str, cache: ManifestCache, resolved: str | None = None
) -> DiscoveredPlugin | DiscoveryProblem | None:
    """Validate one plugin folder. None when it holds no manifest (it is not a plugin)."""
    manifest_path = os.path.join(folder, MANIFEST_FILENAME)
    result = cache.check(manifest_path, missing_ok=True)
    if result is None:
        return None
    if result.manifest is None:
        return DiscoveryProblem(folder, manifest_path, result.issues)
    real_folder = resolved or os.path.realpath(folder)
    entry = result.manifest.entry
    entry_path = os.path.join(real_folder, entry)
    try:
        st = os.lstat(entry_path)
    except OSError:
        return DiscoveryProblem(
            folder,
            manifest_path,
            (ManifestIssue("$.entry", f"{entry!r} does not exist in {folder}"),),
        )
    # A plain file directly in the folder cannot leave it; anything else is resolved first.
    if "/" in entry or stat.S_ISLNK(st.st_mode):
        real_entry = os.path.realpath(entry_path)
        if not _inside(real_folder, real_entry):
            issue = ManifestIssue(
                "$.entry", f"{entry!r} resolves to {real_entry}, outside the plugin folder"
            )
            return DiscoveryProblem(folder, manifest_path, (issue,))
        st = os.stat(real_entry)
    if not stat.S_ISREG(st.st_mode):
        return DiscoveryProblem(
            folder, manifest_path, (ManifestIssue("$.entry", f"{entry!r} is not a regular file"),)
        )
    return DiscoveredPlugin(real_folder, manifest_path, result.manifest)


def discover(
    root: str | Path,
    *,
    max_depth: int = 2,
    ignore: tuple[str, ...] = DEFAULT_IGNORE,
    cache: ManifestCache | None = None,
) -> DiscoveryResult:
    """Scan ``root`` for plugin folders and validate them. Raises DiscoveryError if root is bad."""
    root_text = os.fspath(root)
    if not os.path.isdir(root_text):
        raise DiscoveryError(root_text, "the plugin directory does not exist or is not a directory")
    cache = cache if cache is not None else ManifestCache()
    real_root = os.path.realpath(root_text)
    result = DiscoveryResult()
    owners: dict[str, str] = {}

    def visit(folder: str, real: str, depth: int) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            result.problems.append(
                DiscoveryProblem(
                    folder, None, (ManifestIssue("$", f"cannot list: {exc.strerror}"),)
                )
            )
            return
        for entry in entries:
            if any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in ignore):
                continue
            try:
                if not entry.is_dir():
                    continue
                link = entry.is_symlink()
            except OSError:
                continue
            child_real = os.path.realpath(entry.path) if link else os.path.join(real, entry.name)
            if link and not _inside(real_root, child_real):
                issue = ManifestIssue(
                    "$", f"is a symlink to {child_real}, outside the plugin directory"
                )
                result.problems.append(DiscoveryProblem(entry.path, None, (issue,)))
                continue
            found = check_plugin_folder(entry.path, cache, child_real)
            if found is None:
                if depth < max_depth:
                    visit(entry.path, child_real, depth + 1)
            elif isinstance(found, DiscoveryProblem):
                result.problems.append(found)
            elif found.name in owners:
                issue = ManifestIssue(
                    "$.name",
                    f"duplicate plugin name {found.name!r}: declared by both {owners[found.name]} and {entry.path}",
                )
                result.problems.append(DiscoveryProblem(entry.path, found.manifest_path, (issue,)))
            else:
                owners[found.name] = entry.path
                result.plugins[found.name] = found

    visit(root_text, real_root, 1)
    return result
