"""Getting a plugin ready to load: its dependencies checked, its own environment built.

A plugin whose manifest has ``requirements`` or ``dependencies`` is ``preparing`` from its
discovery until it is ready, while every other plugin serves. The dependency check is
immediate (``manifest.dependencies``). The environment is a lookup when it was built before,
by an earlier run or by ``autoweave-plugins prepare``, and a uv build in the background
otherwise (``environments.EnvironmentBuilder``).

- Ready: the plugin is ``discovered`` again, and ``plugin:prepared`` carries its environment
  (key, path, and each package's name, version and source). A pinned plugin is loaded then;
  any other waits for its first call, as usual.
- Failed: the plugin is ``failed`` and ``plugin:error`` says why: the requirement uv could not
  meet (with uv's own explanation), or the dependency that is missing, out of range, or part of
  a cycle. Nothing else is affected.
- A call while it prepares waits, up to twice ``environments.build_timeout`` (a resolve, then
  an install). A call after a failure gets the error, unless the cause has gone: the dependency
  appeared, or ``prepare`` built the environment meanwhile.

A hot reload asks ``environment_for`` before it starts the new version, so the new environment
is built first, and a build that fails leaves the old version serving. A periodic job removes
environments no plugin uses (``environments.leases`` says what "uses" means across processes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.environments import EnvironmentBuilder, EnvironmentBuildError
from autoweave_plugins.environments.leases import Lease, Leases
from autoweave_plugins.errors import AutoweaveError, DependencyError, LoadTimeout
from autoweave_plugins.events import EventBus
from autoweave_plugins.loader import Loader
from autoweave_plugins.registry import PluginRecord, PluginState, Registry
from autoweave_plugins.settings import ManagerConfig
from autoweave_plugins.tasks import TaskSet

__all__ = ["Preparer"]

log = logging.getLogger(__name__)

LEASE_ATTEMPTS = 3


class Preparer:
    """Prepares records for the manager; owns the environment builder's background work."""

    def __init__(
        self,
        config: ManagerConfig,
        registry: Registry,
        loader: Loader,
        bus: EventBus,
        builder: EnvironmentBuilder,
        leases: Leases,
    ) -> None:
        self.config = config
        self.registry = registry
        self.loader = loader
        self.bus = bus
        self.builder = builder
        self.leases = leases
        self.tasks = TaskSet("preparer")
        self.pruned = 0
        self.lookups = 0
        """Environments found built by a lookup (the builder counts its own ``ensure`` hits)."""
        loader.await_prepared = self.wait

    @staticmethod
    def needed(plugin: DiscoveredPlugin) -> bool:
        """Whether ``plugin`` is prepared before it loads."""
        return bool(plugin.manifest.requirements or plugin.manifest.dependencies)

    def start(self) -> None:
        """Start the periodic removal of unused environments (``environments.prune_interval``)."""
        interval = self.config.environments.prune_interval
        if interval > 0:
            self.tasks.every(interval, self._prune_job)

    async def stop(self) -> None:
        """Cancel builds in flight (their uv processes are killed) and the periodic job."""
        await self.tasks.cancel_all()
        await self.builder.aclose()

    def release_all(self) -> None:
        """Let go of every environment (the workers are gone: the host is stopping)."""
        for record in self.registry.values():
            self.adopt(record, None)
        self.leases.close()

    # --- preparing -----------------------------------------------------------------------

    def begin(self, record: PluginRecord) -> None:
        """Prepare ``record`` (discovered or failed): at once when it can, else in the background."""
        plugin = record.plugin
        record.move_to(PluginState.PREPARING)
        record.prepare_error = None
        refused = self.loader.dependency_error(record.name, plugin)
        if refused is not None:
            self._failed(record, refused)
            return
        requirements = plugin.manifest.requirements
        started = time.monotonic()
        if not requirements:
            self._prepared(record, None, cached=True, started=started)
            return
        try:
            lease = self._lookup(requirements)
        except EnvironmentBuildError as exc:
            self._failed(record, exc)
            return
        if lease is not None:
            self._prepared(record, lease, cached=True, started=started)
            return
        record.preparation = self.tasks.spawn(self._build(record, plugin, started))

    async def _build(self, record: PluginRecord, plugin: DiscoveredPlugin, started: float) -> None:
        try:
            lease = await self._ensure(plugin.manifest.requirements)
        except Exception as exc:
            if not isinstance(exc, EnvironmentBuildError):
                log.exception("preparing %s failed unexpectedly", record.name)
                exc = EnvironmentBuildError(f"{type(exc).__name__}: {exc}")
            if self._current(record, plugin):
                self._failed(record, exc)
            return
        if not self._current(record, plugin):
            lease.release()  # reloaded or removed meanwhile: this environment is not wanted
            return
        self._prepared(record, lease, cached=False, started=started)
        if record.pinned and self.loader.running:
            self.loader.request_load(record)  # its outcome is reported by the loader

    def _current(self, record: PluginRecord, plugin: DiscoveredPlugin) -> bool:
        return self.registry.is_current(record) and record.plugin is plugin

    def _prepared(
        self, record: PluginRecord, lease: Lease | None, *, cached: bool, started: float
    ) -> None:
        self.adopt(record, lease)
        if record.state is PluginState.PREPARING or record.state is PluginState.FAILED:
            record.move_to(PluginState.DISCOVERED)
        environment = lease.environment.to_dict() if lease is not None else None
        seconds = round(time.monotonic() - started, 6)
        self.bus.emit(
            "plugin:prepared",
            record.view(),
            environment=environment,
            cached=cached,
            seconds=seconds,
        )

    def _failed(self, record: PluginRecord, error: AutoweaveError) -> None:
        record.preparation = None
        record.prepare_error = error
        if record.state is PluginState.PREPARING:
            record.move_to(PluginState.FAILED)
        self.loader.report_error(record, error)

    def adopt(self, record: PluginRecord, lease: Lease | None) -> None:
        """``record`` is ready with ``lease``'s environment (None: it needs none)."""
        old, record.lease = record.lease, lease
        record.preparation = None
        record.prepare_error = None
        if old is not None:
            old.release()

    def forget(self, record: PluginRecord) -> None:
        """``record`` was removed: its environment is no longer in use by it."""
        self.adopt(record, None)

    # --- waiting (a call to a plugin that is preparing) -------------------------------------

    async def wait(self, record: PluginRecord) -> None:
        """Return once ``record`` may load; raise why it may not (bounded by the build time)."""
        limit = 2 * self.config.environments.build_timeout
        deadline = time.monotonic() + limit
        while True:
            # Whatever the state says meanwhile (an unload by name while building leaves the
            # record dormant), a build under way is what a load needs.
            while record.preparing and (task := record.preparation) is not None:
                try:
                    await asyncio.wait_for(
                        asyncio.shield(task), max(0.0, deadline - time.monotonic())
                    )
                except TimeoutError:
                    raise LoadTimeout(
                        f"its environment was still being built after {limit:g} s", record.name
                    ) from None
            error = record.prepare_error
            if error is None:
                return
            if not self._retry(record):
                raise error

    def _retry(self, record: PluginRecord) -> bool:
        """After a failure: prepare again if its cause may have gone. True if it did."""
        error = record.prepare_error
        if record.state is not PluginState.FAILED:
            return False
        if isinstance(error, DependencyError):
            if self.loader.dependency_error(record.name, record.plugin) is not None:
                return False
            self.begin(record)
            return True
        if isinstance(error, EnvironmentBuildError):
            # Only a lookup: a call must not start a build that failed (``prepare`` or a
            # reload does). The operator may have run ``prepare`` since.
            try:
                lease = self._lookup(record.plugin.manifest.requirements)
            except EnvironmentBuildError:
                return False
            if lease is None:
                return False
            self._prepared(record, lease, cached=True, started=time.monotonic())
            return True
        return False

    # --- reload -----------------------------------------------------------------------------

    async def environment_for(self, record: PluginRecord, plugin: DiscoveredPlugin) -> Lease | None:
        """The environment ``plugin`` (a new version of ``record``) needs, built now.

        Raises ``DependencyError`` or ``EnvironmentBuildError``: the caller keeps the running
        version. The caller owns the lease: ``adopt`` it, or release it when the swap fails.
        """
        refused = self.loader.dependency_error(record.name, plugin)
        if refused is not None:
            raise refused
        if not plugin.manifest.requirements:
            return None
        return await self._ensure(plugin.manifest.requirements)

    # --- environments -------------------------------------------------------------------------

    def _lookup(self, requirements: Sequence[str]) -> Lease | None:
        """A lease on the built environment, or None when there is none (yet)."""
        for _ in range(LEASE_ATTEMPTS):
            environment = self.builder.lookup(requirements)
            if environment is None:
                return None
            lease = self.leases.take(environment)
            if lease is not None:
                self.lookups += 1
                return lease
        return None

    async def _ensure(self, requirements: Sequence[str]) -> Lease:
        """A lease on the environment, built first when missing."""
        for attempt in range(LEASE_ATTEMPTS):
            environment = await self.builder.ensure(requirements)
            lease = self.leases.take(environment)
            if lease is not None:
                return lease
            # Deleted between the build and the lease: a prune in another process. Again.
            await asyncio.sleep(0.05 * (attempt + 1))
        raise EnvironmentBuildError(
            "the environment was deleted (by a prune elsewhere) each time it was built",
            tuple(requirements),
        )

    async def prune_unused(self) -> tuple[str, ...]:
        """Remove environments no plugin uses and none used within ``prune_after``."""
        in_use = {r.environment.key for r in self.registry.values() if r.environment is not None}
        removed = await self.builder.prune(in_use, unused_for=self.config.environments.prune_after)
        self.pruned += len(removed)
        if removed:
            log.info("removed %d environments no plugin uses", len(removed))
        return removed

    async def _prune_job(self) -> None:
        await self.prune_unused()

    def counts(self) -> dict[str, int]:
        """For ``get_manager_stats()["environments"]``."""
        stats = self.builder.stats
        return {
            "preparing": sum(1 for r in self.registry.values() if r.state is PluginState.PREPARING),
            "in_use": len(self.leases),
            "hits": stats.hits + self.lookups,
            "resolutions": stats.resolutions,
            "builds": stats.builds,
            "failures": stats.failures,
            "uv_runs": stats.uv_runs,
            "pruned": self.pruned,
        }
