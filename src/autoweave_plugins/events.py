"""Manager events: named notifications to sync or async listeners, and an async stream.

A listener that raises is logged and never breaks the manager or other listeners. Async
listeners run as tasks. ``stream()`` subscribers get a bounded queue each; a subscriber that
falls behind loses its oldest events (counted in ``dropped``) rather than growing memory.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autoweave_plugins.errors import UnknownEvent
from autoweave_plugins.manifest.model import Manifest
from autoweave_plugins.tasks import TaskSet

__all__ = ["EVENT_NAMES", "Event", "EventBus", "PluginView"]

log = logging.getLogger(__name__)

EVENT_NAMES = frozenset(
    {
        "plugin:discovered", "plugin:prepared", "plugin:loaded", "plugin:unloaded",
        "plugin:reloaded", "plugin:error", "plugin:failed", "worker:created", "worker:terminated",
        "manager:started", "manager:stopped",
        # emitted by the Redis job consumer (autoweave_plugins.jobs) on the manager's bus
        "job:started", "job:done", "job:failed", "job:dead",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PluginView:
    """A snapshot of a plugin, as events carry it."""

    name: str
    manifest: Manifest
    folder: str
    state: str


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    plugin: PluginView | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


Listener = Callable[[Event], Any]


class _Subscription:
    def __init__(self, maxsize: int) -> None:
        self.queue: deque[Event | None] = deque(maxlen=maxsize)
        self.wakeup = asyncio.Event()
        self.dropped = 0

    def put(self, event: Event | None) -> None:
        if event is not None and len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(event)
        self.wakeup.set()


class EventBus:
    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}
        self._subscriptions: set[_Subscription] = set()
        self._tasks = TaskSet("async event listener")

    @staticmethod
    def _check(name: str) -> None:
        if name != "*" and name not in EVENT_NAMES:
            raise UnknownEvent(
                f"unknown event {name!r}; events are: {', '.join(sorted(EVENT_NAMES))} (or '*')"
            )

    def on(self, name: str, listener: Listener) -> None:
        """Call ``listener(event)`` for every ``name`` event ('*' for all). Sync or async."""
        self._check(name)
        self._listeners.setdefault(name, []).append(listener)

    def off(self, name: str, listener: Listener) -> None:
        self._check(name)
        listeners = self._listeners.get(name, [])
        if listener in listeners:
            listeners.remove(listener)

    def emit(self, name: str, plugin: PluginView | None = None, **data: Any) -> Event:
        event = Event(name, plugin, data)
        for listener in [*self._listeners.get(name, ()), *self._listeners.get("*", ())]:
            try:
                result = listener(event)
                if inspect.iscoroutine(result):
                    self._tasks.spawn(result)
                elif inspect.isawaitable(result):
                    self._tasks.spawn(_awaited(result))
            except Exception:
                log.exception("listener for %s raised; ignored", name)
        for subscription in self._subscriptions:
            subscription.put(event)
        return event

    async def stream(self, maxsize: int = 1024) -> AsyncIterator[Event]:
        """Every event from now on, until the bus is closed."""
        subscription = _Subscription(maxsize)
        self._subscriptions.add(subscription)
        try:
            while True:
                while subscription.queue:
                    event = subscription.queue.popleft()
                    if event is None:
                        return
                    yield event
                subscription.wakeup.clear()
                await subscription.wakeup.wait()
        finally:
            self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every stream (after the events already queued)."""
        for subscription in self._subscriptions:
            subscription.put(None)

    async def drain(self) -> None:
        """Wait for async listeners still running (one that raises is logged and ignored)."""
        await self._tasks.wait()


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
