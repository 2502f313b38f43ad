"""Where a worker enters the namespace layer: the one seam both start methods go through.

A blank worker, spawned or forked from the template, reports READY first and then opens its
namespaces (``open_world``), while the host gets its assignment ready: the two forks and the
base of the view stay off the load path as far as they can. At ASSIGN it completes the view
with the plugin's own part (``enter``), before rlimits, Landlock, seccomp and any plugin code.

The host says how at start, in one argument (``WorldOptions.to_arg``): ``off`` (the layer is
not used), ``-`` (every namespace the kernel allows), or a comma list of namespaces to treat
as refused by the kernel (``worker_pool.disabled_namespaces``, which is also how tests
simulate a kernel without them). Where the kernel refuses what a world needs, the worker
goes on with the other layers and says what it lost; ``strict`` refuses instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from autoweave_plugins.errors import AutoweaveError
from autoweave_plugins.rpc import WorkerSpec
from autoweave_plugins.sandbox.cloned import adopt
from autoweave_plugins.sandbox.namespaces import (
    Namespaces,
    WorldReport,
    enter_world,
    open_namespaces,
)
from autoweave_plugins.sandbox.world import BasePlan, WorldOptions, WorldSpec, plan_base

__all__ = ["PRIVATE_TMP", "Opener", "WorldOptions", "adopt_world", "enter", "open_world"]

PRIVATE_TMP = "/tmp"
"""The worker's own tmpfs in its view: its TMPDIR once it has a world."""


def plan(options: WorldOptions) -> BasePlan | None:
    """The plugin-independent plan (a template makes it once for all its children)."""
    return plan_base(options.base()) if options.enabled else None


Opened = Namespaces | AutoweaveError | None
Opener = Callable[[], Opened]
"""How a blank worker gets its namespaces after READY: ``open_world`` or ``adopt_world``."""


def _opened(open_: Callable[[], Namespaces]) -> Opened:
    """``open_()``, or the failure the worker must refuse its assignment with."""
    try:
        return open_()
    except AutoweaveError as exc:
        return exc
    except OSError as exc:
        return AutoweaveError(f"world: {exc}")


def open_world(options: WorldOptions, base: BasePlan | None) -> Opened:
    """Open the namespaces and the base of the view; returns in the process that serves.

    None when the layer is off; the ``WorldError`` (or any failure of the setup) when the
    world could not be built: the worker must then refuse its assignment with it and run no
    plugin code. A kernel that refuses the namespaces is not a failure: the result then has
    every namespace in ``lost``.
    """
    if not options.enabled:
        return None
    return _opened(lambda: open_namespaces(base or plan_base(options.base())))


def adopt_world(base: BasePlan, host_ids: tuple[int, int]) -> Opened:
    """``open_world`` for the worker a template's child forked right after its clone into
    its own PID namespace (``sandbox/cloned.py``)."""
    return _opened(lambda: adopt(base, host_ids))


def enter(spec: WorkerSpec, namespaces: Namespaces) -> tuple[WorkerSpec, WorldReport]:
    """The plugin's part of its view; returns the spec as it holds inside the view.

    Raises ``SandboxUnavailable`` (strict, a namespace missing) or ``WorldError``.
    """
    world = WorldSpec(
        folder=spec.folder,
        grants=tuple((path, mode) for path, mode in spec.filesystem),
        extra_read=tuple(spec.environment_roots),
        tmp_bytes=spec.tmp_bytes,
        max_threads=spec.max_threads + 1,  # RLIMIT_NPROC counts the main thread too
        strict=spec.strict,
    )
    report = enter_world(world, namespaces)
    if "mount" in report.active:
        # The host's folder for TMPDIR is not in this view; the tmpfs at /tmp replaces it.
        spec = dataclasses.replace(spec, tmp_dir=PRIVATE_TMP, own_view=True)
    return spec, report
