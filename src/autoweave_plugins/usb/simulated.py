"""A USB event source driven by code or by ``autoweave-plugins usb attach``: tests and demos."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from autoweave_plugins.usb.device import USBEvent

__all__ = ["SimulatedSource"]


class SimulatedSource:
    name = "simulated"

    def __init__(self) -> None:
        self._queue: asyncio.Queue[USBEvent] = asyncio.Queue(maxsize=1024)

    def inject(self, event: USBEvent) -> None:
        """Queue an event; raises asyncio.QueueFull when 1024 are already waiting."""
        self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[USBEvent]:
        while True:
            yield await self._queue.get()
