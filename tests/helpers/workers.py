"""Starting real sandboxed workers for tests: a plugin folder, discovery, start, assign.

Workers start the way ``AUTOWEAVE_START_METHOD`` says: ``template`` (the default, as in the
manager) forks them from one template shared by the whole test session; ``spawn`` starts a
fresh interpreter for each. ``make test`` runs the suite on the template and its second pass
(``make spawn-pass``) the process-level tests on spawn, so both methods are held to the same
tests.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from autoweave_plugins.discovery import DiscoveredPlugin, check_plugin_folder
from autoweave_plugins.forked import fork_from
from autoweave_plugins.loader import build_spec
from autoweave_plugins.manifest import ManifestCache
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.sandbox.world import NAMESPACES, WORKER_IDENTITY, WorldOptions
from autoweave_plugins.template import Template
from tests.helpers.plugins import write_plugin_folder

START_METHOD = os.environ.get("AUTOWEAVE_START_METHOD", "template")
assert START_METHOD in ("template", "spawn"), START_METHOD
WORLD = WorldOptions()
FALLBACK = WorldOptions(disabled=frozenset(NAMESPACES))
"""Workers without the namespace layer, as on a kernel that refuses namespaces: the other
layers alone. Tests whose property a world enforces by another layer run here too."""
_shared: dict[WorldOptions, Template] = {}


async def shared_template(world: WorldOptions = WORLD) -> Template:
    """The session's template for ``world``, started again if a test killed it."""
    template = _shared.get(world)
    if template is not None and template.running():
        return template
    if template is not None:
        del _shared[world]
        await template.close()
    template = Template(world=world)
    await template.start()
    _shared[world] = template
    return template


async def close_shared_template() -> None:
    while _shared:
        await _shared.popitem()[1].close()


async def start_worker(
    method: str | None = None, *, world: WorldOptions = WORLD, **options: Any
) -> WorkerProcess:
    """A blank worker, started by ``method`` (default: ``AUTOWEAVE_START_METHOD``), with
    ``world`` (``FALLBACK``: no namespace layer)."""
    if (method or START_METHOD) == "spawn":
        return await WorkerProcess.spawn(world=world, **options)
    template = await shared_template(world)
    return await WorkerProcess.start(functools.partial(fork_from, template), **options)


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
    world: WorldOptions = WORLD,
) -> AsyncIterator[WorkerProcess]:
    """A worker with ``plugin`` loaded; stopped (and reaped) on exit."""
    worker = await start_worker(world=world)
    try:
        spec = build_spec(plugin, strict=strict, extra_imports=extra_imports, config=config)
        await worker.assign(spec, timeout=load_timeout, http=http)
        yield worker
    finally:
        await worker.stop()


def in_world(worker: WorkerProcess) -> bool:
    """The worker runs its plugin in its own namespaces: what the plugin sees of files and
    processes is its world's. Asked of the kernel, through the host's ``/proc``, so only
    while the worker lives."""
    pid = worker.plugin_pid
    assert pid is not None and worker.alive, "ask whether a worker has a world while it lives"
    return os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")


def grant_folder(path: Path) -> Path:
    """Make ``path`` as a folder a worker may write, as the host makes declared ones: a root
    host's workers are uid 65534 in their world."""
    path.mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(path, *WORKER_IDENTITY)
    return path
