"""One hook call fanned out to many plugins: each answer or error, never one plugin's failure
for all. Used by ``PluginManager.broadcast`` and by USB dispatch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autoweave_plugins.errors import AutoweaveError

__all__ = ["BroadcastResult", "fan_out"]


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """One plugin's answer to a broadcast: a value, or the error it raised."""

    ok: bool
    value: Any = None
    error: AutoweaveError | None = None


async def fan_out(
    call: Callable[[str], Awaitable[Any]], names: Sequence[str], limit: asyncio.Semaphore
) -> dict[str, BroadcastResult]:
    """``call(name)`` for each name, at most ``limit`` at once; a typed error is a result."""

    async def one(name: str) -> BroadcastResult:
        async with limit:
            try:
                return BroadcastResult(True, await call(name))
            except AutoweaveError as exc:
                return BroadcastResult(False, error=exc)

    results = await asyncio.gather(*(one(n) for n in names))
    return dict(zip(names, results, strict=True))
