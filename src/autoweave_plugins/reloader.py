"""Keeping the records in step with the plugin directory: discovery, hot reload, removal.

``rescan`` finds plugins that appeared, and has those with requirements or dependencies
prepared (``preparer``). ``reload`` (explicit, or from the watcher) checks the
plugin's folder again and, when its fingerprint changed, starts the new version in a new worker
beside the running one, once its dependencies are checked and its environment built. Calls
move to the new version only once it has loaded (blue/green); the old workers then drain their
calls in flight and are retired. A new version that fails to build or load leaves the old one
serving. A folder that is gone unloads and forgets its plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

from autoweave_plugins.broker.inbound import close_all
from autoweave_plugins.discovery import (
    DiscoveredPlugin,
    DiscoveryProblem,
    check_plugin_folder,
    discover,
)
from autoweave_plugins.errors import (
    AutoweaveError,
    ConfigError,
    DependencyError,
    DiscoveryError,
    LoadError,
)
from autoweave_plugins.events import EventBus
from autoweave_plugins.loader import Loader
from autoweave_plugins.manifest.cache import ManifestCache
from autoweave_plugins.preparer import Preparer
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.recovery import CircuitBreaker, ExitReason
from autoweave_plugins.registry import PluginRecord, PluginState, Registry, Rejected
from autoweave_plugins.settings import ManagerConfig, Priority
from autoweave_plugins.tasks import TaskSet
from autoweave_plugins.watcher import PluginWatcher, changed_files, digest_files, folder_files

__all__ = ["Reloader"]


class Reloader:
    def __init__(
        self,
        config: ManagerConfig,
        registry: Registry,
        loader: Loader,
        cache: ManifestCache,
        bus: EventBus,
        preparer: Preparer,
    ) -> None:
        self.config = config
        self.registry = registry
        self.loader = loader
        self.preparer = preparer
        self.cache = cache
        self.bus = bus
        self.tasks = TaskSet("reloader")
        self.watcher: PluginWatcher | None = None

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
        # Each rejection is reported once, not on every rescan; the registry keeps them all.
        # A known plugin's folder that turned invalid is that plugin's failed reload, not a
        # rejected folder: its old version may well still be serving.
        known = {os.path.realpath(folder) for folder in self.registry.folders()}
        problems = [p for p in found.problems if os.path.realpath(p.folder) not in known]
        for entry in self.registry.set_rejected([_rejected(p) for p in problems]):
            error = DiscoveryError(entry.folder, "; ".join(entry.issues))
            self.bus.emit(
                "plugin:error", None, folder=entry.folder, declared=entry.name, error=error
            )
        loader, pool = self.config.loader, self.config.worker_pool
        new = []
        for name, plugin in found.plugins.items():
            if name in self.registry:
                continue
            priority = loader.priority_map.get(name, Priority.NORMAL)
            pinned = name in loader.preload_queue or priority <= Priority.HIGH
            breaker = CircuitBreaker(pool.breaker_threshold, pool.breaker_window)
            record = PluginRecord(plugin, priority, pinned, breaker)
            record.files = self.files(plugin)
            record.fingerprint = digest_files(record.files)
            self.registry.add(record)
            new.append(name)
            self.bus.emit("plugin:discovered", record.view())
        self._prepare(new)
        return new

    def _prepare(self, new: list[str]) -> None:
        """Prepare the new plugins that need it, once all of them are known (they may depend
        on each other), and again those that failed for want of a dependency."""
        for name in new:
            record = self.registry[name]
            if self.preparer.needed(record.plugin):
                self.preparer.begin(record)
        if not new:
            return
        for record in list(self.registry.values()):
            if (
                record.name not in new
                and isinstance(record.prepare_error, DependencyError)
                and record.state is PluginState.FAILED
                and not record.assignments
            ):
                self.preparer.begin(record)

    def files(self, plugin: DiscoveredPlugin) -> dict[str, str]:
        """A content hash per file of the plugin's folder as it is now (``folder_files``)."""
        watcher = self.config.watcher
        return folder_files(
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
            self._reload_failed(record, error)
            raise error
        if found.name != record.name:
            renamed = LoadError(
                f"the manifest now names {found.name!r}; a rename is a remove plus an add",
                record.name,
            )
            self._reload_failed(record, renamed)
            raise renamed
        return found

    def _reload_failed(self, record: PluginRecord, error: AutoweaveError) -> None:
        """Report a new version that could not be used, saying whether the old one serves."""
        if record.assignments:
            context = f"reload failed; {record.version} still serving"
            self.loader.report_error(
                record, error, context=context, reload_failed=True, still_serving=record.version
            )
        else:
            self.loader.report_error(record, error, context="reload failed", reload_failed=True)

    async def swap(self, record: PluginRecord, found: DiscoveredPlugin) -> None:
        """Start ``found`` beside the running version; route calls to it only once it loaded."""
        # Taken before the new worker reads the files: one that changes while it starts then
        # differs from this, so the next change event reloads again. Taken after, it could
        # describe newer files than the worker loaded and hide them for good.
        files = self.files(found)
        scheduler = self.loader.scheduler
        if not record.assignments and scheduler.in_progress(record.name):
            # A load of the old version is under way: let it finish, then swap over it.
            with contextlib.suppress(AutoweaveError):
                await scheduler.request(record.name, record.priority)
        try:
            # Its dependencies and its environment first: if either fails, nothing changes.
            lease = await self.preparer.environment_for(record, found)
        except AutoweaveError as exc:
            self._reload_failed(record, exc)
            raise
        change = {
            "old_version": record.version,
            "version": found.manifest.version,
            "changed": changed_files(record.files, files),
        }
        if not record.assignments:
            record.adopt(found, digest_files(files), files)  # the next call loads it
            self.preparer.adopt(record, lease)
            record.move_to(PluginState.DISCOVERED)
            return
        deadline = time.monotonic() + self.config.loader.load_timeout
        environment = lease.environment if lease is not None else None
        try:
            worker = await self.loader.start_worker(record, found, deadline, environment)
        except BaseException as exc:
            if lease is not None:
                lease.release()
            if isinstance(exc, AutoweaveError):
                self._reload_failed(record, exc)
            raise
        old = record.workers
        for previous in old:
            record.detach(previous)  # new calls go to the new version from here on
        record.adopt(found, digest_files(files), files)
        self.preparer.adopt(record, lease)  # the old workers hold their own leases until gone
        self.loader.attach(record, worker)
        record.loaded_at = time.time()
        record.move_to(PluginState.IDLE)
        self.bus.emit("plugin:reloaded", record.view(), pid=worker.pid, **change)
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
                elif digest_files(self.files(found)) != record.fingerprint:
                    with contextlib.suppress(AutoweaveError):  # reported by swap
                        await self.swap(record, found)

        await asyncio.gather(*(refresh(by_folder[f]) for f in folders if f in by_folder))
        if structure:
            self.rescan()  # a name freed by a removal may now belong to another folder

    async def remove(self, record: PluginRecord) -> None:
        """The plugin's folder is gone: unload it and forget it."""
        await self.loader.unload(record, ExitReason.IDLE, PluginState.DORMANT)
        self.registry.remove(record)
        self.preparer.forget(record)
        close_all(record.inbound)
        self.bus.emit("plugin:unloaded", record.view(), reason="removed")


def _rejected(problem: DiscoveryProblem) -> Rejected:
    """A rejected folder, with the name its manifest declares when that much can be read."""
    issues = tuple(str(issue) for issue in problem.issues)
    return Rejected(problem.folder, _declared_name(problem.manifest_path), issues[0], issues)


def _declared_name(manifest_path: str | None) -> str | None:
    if manifest_path is None:
        return None
    try:
        with open(manifest_path, "rb") as handle:
            document = json.loads(handle.read(1 << 20))
    except (OSError, ValueError):
        return None
    name = document.get("name") if isinstance(document, dict) else None
    return name if isinstance(name, str) and len(name) <= 64 else None
