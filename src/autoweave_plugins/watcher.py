"""Hot reload: watch the plugin directory and hand changed plugins to the manager.

Built on ``watchfiles.awatch`` with ``recursive=False`` over an explicit set of directories:
the root, the folders between it and the plugins (to see new plugins), and each plugin folder
(with its subfolders to ``max_depth`` unless ``manifest_only``). Ignored folders are never
watched, so they cost no inotify watch. When the folder structure changes, the watch is
rebuilt. Our ``debounce`` is a quiet period over whole bursts, enforced here on top of a short
watchfiles ``step``: a burst of saves is handled once, ``debounce`` after it settles.

What counts as a change is decided by content, not by events: the manager compares each
plugin's fingerprint (a hash of every file in its folder by default, or of its manifest alone
with ``manifest_only``), so a touch or an identical re-save does nothing, and a reload can say
which files changed. A periodic rescan, also run after a watcher error, catches
events the kernel dropped.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterable

import watchfiles

from autoweave_plugins.manifest.model import MANIFEST_FILENAME
from autoweave_plugins.settings import WatcherConfig

__all__ = ["PluginWatcher", "changed_files", "digest_files", "fingerprint_folder", "folder_files"]

log = logging.getLogger(__name__)

MAX_GROUPING_MS = 2000

Batch = set[tuple[watchfiles.Change, str]] | BaseException
RESCAN_INTERVAL = 30.0


def _ignored(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _subfolders(folder: str, depth: int, ignore: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    if depth <= 0:
        return found
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and not _ignored(entry.name, ignore):
                    found.append(entry.path)
                    found += _subfolders(entry.path, depth - 1, ignore)
    except OSError:
        pass
    return found


def folder_files(
    folder: str,
    manifest_hash: bytes,
    *,
    manifest_only: bool,
    max_depth: int,
    ignore: tuple[str, ...],
) -> dict[str, str]:
    """What a plugin's version is made of: a content hash per file (relative path), the
    manifest always, every other file unless ``manifest_only``. Two versions differ in the
    files whose hashes differ: a reload reports them."""
    files = {MANIFEST_FILENAME: manifest_hash.hex()}
    if manifest_only:
        return files
    for directory in [folder, *_subfolders(folder, max_depth, ignore)]:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            if (
                _ignored(name, ignore)
                or name == MANIFEST_FILENAME
                or not os.path.isfile(path)
                or name.endswith(".pyc")
            ):
                continue
            try:
                with open(path, "rb") as handle:
                    digest = hashlib.blake2b(handle.read(), digest_size=16).hexdigest()
            except OSError:
                digest = "unreadable"
            files[os.path.relpath(path, folder)] = digest
    return files


def digest_files(files: dict[str, str]) -> bytes:
    """One fingerprint for ``folder_files``' map: equal maps, equal fingerprints."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return digest.digest()


def changed_files(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The paths added, removed or modified between two versions, sorted."""
    return sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))


def fingerprint_folder(
    folder: str,
    manifest_hash: bytes,
    *,
    manifest_only: bool,
    max_depth: int,
    ignore: tuple[str, ...],
) -> bytes:
    """The digest of ``folder_files``: what the watcher compares to decide on a reload."""
    return digest_files(
        folder_files(
            folder, manifest_hash, manifest_only=manifest_only, max_depth=max_depth, ignore=ignore
        )
    )


class PluginWatcher:
    """Runs until cancelled. ``on_changes(folders, structure_changed)`` does the work."""

    def __init__(
        self,
        root: str,
        config: WatcherConfig,
        plugin_folders: Callable[[], list[str]],
        on_changes: Callable[[set[str], bool], Awaitable[None]],
        rescan_interval: float = RESCAN_INTERVAL,
    ) -> None:
        self.root = os.path.realpath(root)
        self.config = config
        self._plugin_folders = plugin_folders
        self._on_changes = on_changes
        self.rescan_interval = rescan_interval
        self.errors = 0

    def watched_paths(self) -> list[str]:
        config = self.config
        paths = {self.root}
        plugins = {os.path.realpath(f) for f in self._plugin_folders()}
        # Folders between the root and the plugins, where new plugins can appear.
        paths.update(
            p
            for p in _subfolders(self.root, config.max_depth - 1, config.ignore_patterns)
            if p not in plugins
        )
        for folder in plugins:
            paths.add(folder)
            if not config.manifest_only:
                paths.update(_subfolders(folder, config.max_depth, config.ignore_patterns))
        return sorted(p for p in paths if os.path.isdir(p))

    def _filter(self, change: watchfiles.Change, path: str) -> bool:
        name = os.path.basename(path)
        if _ignored(name, self.config.ignore_patterns) or name.endswith((".pyc", ".swp", "~")):
            return False
        if not self.config.manifest_only:
            return True
        # Manifests, plus anything appearing or vanishing at folder level (a new plugin).
        return name == MANIFEST_FILENAME or change != watchfiles.Change.modified

    def _owner(self, path: str, folders: list[str]) -> str | None:
        best = None
        for folder in folders:
            if (path == folder or path.startswith(folder + os.sep)) and (
                best is None or len(folder) > len(best)
            ):
                best = folder
        return best

    async def _produce(
        self, paths: list[str], stop: asyncio.Event, queue: asyncio.Queue[Batch]
    ) -> None:
        try:
            async for changes in watchfiles.awatch(
                *paths,
                watch_filter=self._filter,
                debounce=MAX_GROUPING_MS,
                step=self._step_ms(),
                recursive=False,
                stop_event=stop,
                rust_timeout=int(self.rescan_interval * 1000),
                yield_on_timeout=True,
                ignore_permission_denied=True,
            ):
                queue.put_nowait(changes)
        except Exception as exc:  # handed to the consumer, which restarts the watch
            queue.put_nowait(exc)

    def _step_ms(self) -> int:
        # watchfiles yields after `step` ms without new events; a short step keeps its latency
        # small, and the quiet period is enforced below, over whole bursts.
        return max(5, min(50, int(self.config.debounce * 1000 / 5)))

    async def _next_burst(self, queue: asyncio.Queue[Batch]) -> set[tuple[watchfiles.Change, str]]:
        """Changes until ``debounce`` seconds pass without another one."""
        loop = asyncio.get_running_loop()
        first = await queue.get()
        if isinstance(first, BaseException):
            raise first
        changes = set(first)
        deadline = loop.time() + self.config.debounce
        while (remaining := deadline - loop.time()) > 0:
            try:
                more = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                break
            if isinstance(more, BaseException):
                raise more
            if more:
                changes |= more
                deadline = loop.time() + self.config.debounce
        return changes

    async def run(self) -> None:
        while True:
            paths = self.watched_paths()
            folders = sorted({os.path.realpath(f) for f in self._plugin_folders()})
            stop = asyncio.Event()
            queue: asyncio.Queue[Batch] = asyncio.Queue()
            producer = asyncio.ensure_future(self._produce(paths, stop, queue))
            try:
                while True:
                    changes = await self._next_burst(queue)
                    touched: set[str] = set()
                    structure = not changes  # a timeout: the periodic rescan
                    for change, path in changes:
                        owner = self._owner(path, folders)
                        if owner is None or (
                            path == owner and change != watchfiles.Change.modified
                        ):
                            structure = True
                        if owner is not None:
                            touched.add(owner)
                        if change == watchfiles.Change.added and os.path.isdir(path):
                            structure = True
                    await self._on_changes(touched, structure)
                    if structure and self.watched_paths() != paths:
                        break  # rebuild the watch over the new set of folders
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watcher must never take the manager down
                self.errors += 1
                log.error("file watcher failed (%s); rescanning and restarting it", exc)
                try:
                    await self._on_changes(set(), True)
                except Exception:
                    log.exception("rescan after a watcher error failed")
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(self.errors, 6)))
            finally:
                stop.set()
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
