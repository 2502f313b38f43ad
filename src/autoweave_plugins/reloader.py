"""Keeping the records in step with the plugin directory: discovery, hot reload, removal.

``rescan`` finds plugins that appeared. ``reload`` (explicit, or from the watcher) checks the
plugin's folder again and, when its fingerprint changed, starts the new version in a new worker
beside the running one. Calls move to the new version only once it has loaded (blue/green); the
old workers then drain their calls in flight and are retired. A new version that fails to load
leaves the old one serving. A folder that is gone unloads and forgets its plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from autoweave_plugins.broker.inbound import close_all
from autoweave_plugins.discovery import (
    DiscoveredPlugin,
    DiscoveryProblem,
    check_plugin_folder,
    discover,
)
from autoweave_plugins.errors import AutoweaveError, ConfigError, DiscoveryError, LoadError
from autoweave_plugins.events import EventBus
from autoweave_plugins.loader import Loader
from autoweave_plugins.manifest.cache import ManifestCache
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.recovery import CircuitBreaker, ExitReason
from autoweave_plugins.registry import PluginRecord, PluginState, Registry
from autoweave_plugins.settings import ManagerConfig, Priority
from autoweave_plugins.tasks import TaskSet
from autoweave_plugins.watcher import PluginWatcher, fingerprint_folder

__all__ = ["Reloader"]


class Reloader:
    def __init__(
        self,
        config: ManagerConfig,
        registry: Registry,
        loader: Loader,
        cache: ManifestCache,
        bus: EventBus,
    ) -> None:
        self.config = config
        self.registry = registry
        self.loader = loader
        self.cache = cache
        self.bus = bus
        self.tasks = TaskSet("reloader")
        self.watcher: PluginWatcher | None = None
        self._reported: set[tuple[str, tuple[Any, ...]]] = set()

    def start(self) -> None:
        """Watch the plugin directory, if the watcher is enabled."""
        if self.config.watcher.enabled:
            self.watcher = PluginWatcher(
                str(self.config.plugin_directory),
                self.config.watcher,
                self.registry.folders,
                self.files_changed,
            )
            self.tasks.spawn(self.watcher.run())

    async def stop(self) -> None:
        """Stop watching, and cancel drains still running."""
        await self.tasks.cancel_all()

    # --- discovery -----------------------------------------------------------------------

    def rescan(self) -> list[str]:
        """Discover plugins again; returns the names of newly found ones."""
        watcher = self.config.watcher
        try:
            found = discover(
                self.config.plugin_directory,
                max_depth=watcher.max_depth,
                ignore=watcher.ignore_patterns,
                cache=self.cache,
            )
        except DiscoveryError as exc:
            raise ConfigError("plugin_directory", exc.reason) from None
        for problem in found.problems:
            if (problem.folder, problem.issues) not in self._reported:
                # each problem once, not on every rescan
                self.bus.emit("plugin:error", None, folder=problem.folder, error=problem.as_error())
        self._reported = {(p.folder, p.issues) for p in found.problems}
        loader, pool = self.config.loader, self.config.worker_pool
        new = []
        for name, plugin in found.plugins.items():
            if name in self.registry:
                continue
            priority = loader.priority_map.get(name, Priority.NORMAL)
            pinned = name in loader.preload_queue or priority <= Priority.HIGH
            breaker = CircuitBreaker(pool.breaker_threshold, pool.breaker_window)
            record = PluginRecord(plugin, priority, pinned, breaker)
            record.fingerprint = self.fingerprint(plugin)
            self.registry.add(record)
            new.append(name)
            self.bus.emit("plugin:discovered", record.view())
        return new

    def fingerprint(self, plugin: DiscoveredPlugin) -> bytes:
        watcher = self.config.watcher
        return fingerprint_folder(
            plugin.folder,
            self.cache.check(plugin.manifest_path).content_hash,
            manifest_only=watcher.manifest_only,
            max_depth=watcher.max_depth,
            ignore=watcher.ignore_patterns,
        )

    # --- reload --------------------------------------------------------------------------

    async def reload(self, record: PluginRecord) -> None:
        """Load the plugin's current files in a new worker; swap only if it starts."""
        async with record.lock:
            found = self.check_folder(record)
            if found is None:
                raise LoadError("its folder no longer holds a manifest", record.name)
            await self.swap(record, found)
        if not record.assignments:  # it was not running: an explicit reload loads it now
            await self.loader.request_load(record)

    def check_folder(self, record: PluginRecord) -> DiscoveredPlugin | None:
        """The plugin's folder as it is now: None if gone; raises (and emits) if invalid."""
        if not os.path.isdir(record.plugin.folder):
            return None
        found = check_plugin_folder(record.plugin.folder, self.cache)
        if found is None:
            return None
        if isinstance(found, DiscoveryProblem):
            error = found.as_error()
            self.loader.report_error(record, error)
            raise error
        if found.name != record.name:
            renamed = LoadError(
                f"the manifest now names {found.name!r}; a rename is a remove plus an add",
                record.name,
            )
            self.loader.report_error(record, renamed)
            raise renamed
        return found

    async def swap(self, record: PluginRecord, found: DiscoveredPlugin) -> None:
        """Start ``found`` beside the running version; route calls to it only once it loaded."""
        # Taken before the new worker reads the files: one that changes while it starts then
        # differs from this, so the next change event reloads again. Taken after, it could
        # describe newer files than the worker loaded and hide them for good.
        fingerprint = self.fingerprint(found)
        scheduler = self.loader.scheduler
        if not record.assignments and scheduler.in_progress(record.name):
            # A load of the old version is under way: let it finish, then swap over it.
            with contextlib.suppress(AutoweaveError):
                await scheduler.request(record.name, record.priority)
        if not record.assignments:
            record.adopt(found, fingerprint)  # the next call loads the new version
            record.move_to(PluginState.DISCOVERED)
            return
        deadline = time.monotonic() + self.config.loader.load_timeout
        try:
            worker = await self.loader.start_worker(record, found, deadline)
        except AutoweaveError as exc:
            self.loader.report_error(record, exc)
            raise
        old = record.workers
        for previous in old:
            record.detach(previous)  # new calls go to the new version from here on
        record.adopt(found, fingerprint)
        self.loader.attach(record, worker)
        record.loaded_at = time.time()
        record.move_to(PluginState.IDLE)
        self.bus.emit("plugin:reloaded", record.view(), pid=worker.pid)
        self.tasks.spawn(self._drain_and_retire(record, old))

    async def _drain_and_retire(self, record: PluginRecord, workers: list[WorkerProcess]) -> None:
        """Let calls in flight on the old version finish, then onUnload and stop it."""
        timeout = self.config.worker_pool.call_timeout
        await asyncio.gather(*(w.drain(timeout) for w in workers))
        await self.loader.retire_workers(record, workers, ExitReason.RELOAD)

    # --- the watcher's callback ----------------------------------------------------------

    async def files_changed(self, folders: set[str], structure: bool) -> None:
        """Refresh plugins whose files changed; on structure changes, all of them."""
        if structure:
            self.rescan()
            folders = folders | set(self.registry.folders())
        by_folder = self.registry.by_folder()
        limit = asyncio.Semaphore(self.config.loader.max_concurrent_loads)

        async def refresh(record: PluginRecord) -> None:
            async with limit, record.lock:
                try:
                    found = self.check_folder(record)
                except AutoweaveError:
                    return  # reported; the running version keeps serving
                if found is None:
                    await self.remove(record)
                elif self.fingerprint(found) != record.fingerprint:
                    with contextlib.suppress(AutoweaveError):  # reported by swap
                        await self.swap(record, found)

        await asyncio.gather(*(refresh(by_folder[f]) for f in folders if f in by_folder))
        if structure:
            self.rescan()  # a name freed by a removal may now belong to another folder

    async def remove(self, record: PluginRecord) -> None:
        """The plugin's folder is gone: unload it and forget it."""
        await self.loader.unload(record, ExitReason.IDLE, PluginState.DORMANT)
        self.registry.remove(record)
        close_all(record.inbound)
        self.bus.emit("plugin:unloaded", record.view(), reason="removed")
