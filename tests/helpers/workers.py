"""Starting real sandboxed workers for tests: a plugin folder, discovery, spawn, assign."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from autoweave_plugins.discovery import DiscoveredPlugin, check_plugin_folder
from autoweave_plugins.loader import build_spec
from autoweave_plugins.manifest import ManifestCache
from autoweave_plugins.process import WorkerProcess
from tests.helpers.plugins import write_plugin_folder


def write_plugin(root: Path, name: str, code: str, **manifest: Any) -> DiscoveredPlugin:
    """Create a plugin folder under ``root`` and return it validated."""
    folder = write_plugin_folder(root, name, code, **manifest)
    found = check_plugin_folder(str(folder), ManifestCache())
    assert isinstance(found, DiscoveredPlugin), found
    return found


@asynccontextmanager
async def running(
    plugin: DiscoveredPlugin,
    *,
    http: httpx.AsyncClient | None = None,
    strict: bool = False,
    extra_imports: tuple[str, ...] = (),
    config: dict[str, Any] | None = None,
    load_timeout: float = 30.0,
) -> AsyncIterator[WorkerProcess]:
    """A worker with ``plugin`` loaded; stopped (and reaped) on exit."""
    worker = await WorkerProcess.spawn()
    try:
        spec = build_spec(plugin, strict=strict, extra_imports=extra_imports, config=config)
        await worker.assign(spec, timeout=load_timeout, http=http)
        yield worker
    finally:
        await worker.stop()
