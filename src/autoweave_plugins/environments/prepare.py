"""Preparing many plugins at once: what ``autoweave-plugins prepare`` and ``run`` share.

Given each plugin's requirements, build every missing environment with bounded concurrency and
report each plugin's outcome as it lands, so a progress display (or the loader's
``plugin:prepared`` / ``plugin:error`` events) can follow along. One plugin's failure is its
own: the others still build. ``keys_in_use`` is the input to ``EnvironmentBuilder.prune``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from autoweave_plugins.environments.builder import EnvironmentBuilder
from autoweave_plugins.environments.errors import EnvironmentBuildError
from autoweave_plugins.environments.model import Environment

__all__ = ["Prepared", "keys_in_use", "prepare_all"]

DEFAULT_CONCURRENCY = 2


@dataclass(frozen=True, slots=True)
class Prepared:
    """One plugin's outcome: its environment, or the error that leaves it ``failed``."""

    plugin: str
    environment: Environment | None
    error: EnvironmentBuildError | None
    seconds: float
    cached: bool


async def prepare_all(
    builder: EnvironmentBuilder,
    wanted: Mapping[str, Sequence[str]],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[Prepared], None] | None = None,
) -> dict[str, Prepared]:
    """Ensure an environment for each plugin in ``wanted`` (plugin name -> requirements).

    Plugins with no requirements are skipped. ``on_done`` is called once per plugin, in the
    order they finish. Errors other than ``EnvironmentBuildError`` (bugs) propagate.
    """
    limit = asyncio.Semaphore(max(1, concurrency))
    loop = asyncio.get_running_loop()
    results: dict[str, Prepared] = {}

    async def one(plugin: str, requirements: Sequence[str]) -> None:
        async with limit:
            started = loop.time()
            environment: Environment | None = None
            error: EnvironmentBuildError | None = None
            cached = False
            try:
                environment = builder.lookup(requirements)
                cached = environment is not None
                if environment is None:
                    environment = await builder.ensure(requirements)
            except EnvironmentBuildError as exc:
                error = exc
            outcome = Prepared(plugin, environment, error, loop.time() - started, cached)
        results[plugin] = outcome
        if on_done is not None:
            on_done(outcome)

    await asyncio.gather(*(one(p, r) for p, r in wanted.items() if r))
    return results


def keys_in_use(builder: EnvironmentBuilder, wanted: Mapping[str, Sequence[str]]) -> set[str]:
    """Environment keys of the plugins in ``wanted`` that are already built (for ``prune``)."""
    keys: set[str] = set()
    for requirements in wanted.values():
        if not requirements:
            continue
        try:
            found = builder.lookup(requirements)
        except EnvironmentBuildError:
            continue  # an invalid set has no environment to keep
        if found is not None:
            keys.add(found.key)
    return keys
