"""Recording a manager's events and waiting on them: the event is the moment, not a sleep."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoweave_plugins import PluginManager
    from autoweave_plugins.events import Event

__all__ = ["EventLog"]


class EventLog:
    """Every ``name`` event (all of them for '*') the manager emits from now on, in order."""

    def __init__(self, manager: PluginManager, name: str = "*") -> None:
        self.seen: list[Event] = []
        self._arrived = asyncio.Event()
        manager.on(name, self._record)

    def _record(self, event: Event) -> None:
        self.seen.append(event)
        self._arrived.set()

    def matching(self, name: str, plugin: str | None = None, **data: Any) -> list[Event]:
        """The events so far named ``name``, of ``plugin`` if given, whose data include ``data``."""
        return [
            e
            for e in self.seen
            if e.name == name
            and (plugin is None or (e.plugin is not None and e.plugin.name == plugin))
            and all(e.data.get(key) == value for key, value in data.items())
        ]

    def names(self) -> list[str]:
        return [e.name for e in self.seen]

    async def wait(
        self,
        name: str,
        plugin: str | None = None,
        *,
        count: int = 1,
        timeout: float = 10.0,
        **data: Any,
    ) -> list[Event]:
        """Until ``count`` matching events (see ``matching``) have been emitted; returns them.

        This resumes on a later turn of the event loop than the ``emit``, so whatever the
        manager did right after emitting, up to its next ``await``, has been done too.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found := self.matching(name, plugin, **data)) < count:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                wanted = f"{count} x {name}" + (f" of {plugin}" if plugin else "") + f" {data}"
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {wanted}; seen: "
                    + ", ".join(f"{e.name}({e.plugin.name if e.plugin else ''})" for e in self.seen)
                ) from None
        return found
