"""Sending USB events to the plugins that may see them.

Only plugins whose ``usb`` permission matches the device's ids and that declare the hook
(``onUSBAttach``/``onUSBDetach``) are called, lazily loaded if dormant, with bounded
concurrency. One plugin's failure never blocks the others. Events for the same device are
handled one after another, so a detach never overtakes its attach; different devices proceed
in parallel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from autoweave_plugins.broadcast import BroadcastResult, fan_out
from autoweave_plugins.errors import AutoweaveError
from autoweave_plugins.tasks import TaskSet
from autoweave_plugins.usb.device import USBEvent

if TYPE_CHECKING:
    from autoweave_plugins.manager import PluginManager

__all__ = ["USBDispatcher", "USBSource"]

log = logging.getLogger(__name__)

HOOKS = {"attach": "onUSBAttach", "detach": "onUSBDetach"}


class USBSource(Protocol):
    name: str

    def events(self) -> AsyncIterator[USBEvent]: ...


class USBDispatcher:
    def __init__(
        self, manager: PluginManager, concurrency: int = 8, hook_timeout: float | None = None
    ) -> None:
        self.manager = manager
        self.hook_timeout = hook_timeout
        self._limit = asyncio.Semaphore(concurrency)
        self._device_locks: dict[tuple[object, ...], asyncio.Lock] = {}
        self._tasks = TaskSet("USB dispatch")
        self.events_seen = 0
        self.deliveries = 0
        self.failures = 0

    def targets(self, event: USBEvent) -> list[str]:
        hook = HOOKS[event.action]
        return sorted(
            name
            for name, record in self.manager.records.items()
            if hook in record.plugin.manifest.hooks
            and record.plugin.manifest.permissions.usb.matches(event.vendor_id, event.product_id)
        )

    async def dispatch(self, event: USBEvent) -> dict[str, BroadcastResult]:
        """Deliver one event to every matching plugin; returns each plugin's result or error."""
        self.events_seen += 1
        lock = self._device_locks.setdefault(event.device_key, asyncio.Lock())
        async with lock:  # FIFO: this device's events keep their order
            hook = HOOKS[event.action]
            argument = event.to_hook_argument()
            results = await fan_out(
                lambda name: self._deliver(name, hook, argument), self.targets(event), self._limit
            )
        if event.action == "detach" and not lock.locked():
            self._device_locks.pop(event.device_key, None)
        return results

    async def _deliver(self, name: str, hook: str, argument: object) -> object:
        try:
            value = await self.manager.call(name, hook, argument, timeout=self.hook_timeout)
        except AutoweaveError as exc:
            self.failures += 1
            log.warning("%s of %s failed: %s", hook, name, exc)
            raise
        self.deliveries += 1
        return value

    def submit(self, event: USBEvent) -> asyncio.Task[dict[str, BroadcastResult]]:
        """Dispatch in the background, in arrival order per device."""
        return self._tasks.spawn(self.dispatch(event))

    async def run(self, source: USBSource) -> None:
        """Feed events from ``source`` until cancelled."""
        async for event in source.events():
            self.submit(event)
