"""The ASSIGN payload: what a worker is told about its plugin, built from the manifest and the
host's choices (imports, limits, its own environment). Declared paths that do not exist yet are
made here, under the grant policy, before any worker is taken.
"""

from __future__ import annotations

from typing import Any

from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.environments.model import Environment
from autoweave_plugins.policy import GrantPolicy, ensure_declared_paths
from autoweave_plugins.rpc import DEFAULT_MAX_FRAME, ServeLimits, WorkerSpec

__all__ = ["build_spec"]


def build_spec(
    plugin: DiscoveredPlugin,
    *,
    strict: bool = False,
    extra_imports: tuple[str, ...] = (),
    denied_imports: tuple[str, ...] = (),
    blas_threads: int = 1,
    policy: GrantPolicy | None = None,
    config: dict[str, Any] | None = None,
    serve_limits: ServeLimits | None = None,
    environment: Environment | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    tmp_bytes: int = 64 << 20,
    grant_owner: tuple[int, int] | None = None,
) -> WorkerSpec:
    """The ASSIGN payload for a discovered, validated plugin (and its own environment).

    With ``policy``, declared paths that do not exist yet are made first (or refused with
    ``PolicyRefused``): see ``policy.ensure_declared_paths``; they go to ``grant_owner``.
    """
    manifest = plugin.manifest
    if policy is not None:
        ensure_declared_paths(manifest, policy, grant_owner)
    return WorkerSpec(
        plugin=manifest.name,
        folder=plugin.folder,
        entry=manifest.entry,
        hooks=dict(manifest.hooks),
        manifest=dict(manifest.document),
        filesystem=[(rule.path, rule.mode.value) for rule in manifest.permissions.filesystem],
        max_heap_mb=manifest.permissions.max_heap_mb,
        max_threads=manifest.permissions.max_threads,
        config=dict(config or {}),
        strict=strict,
        extra_imports=list(extra_imports),
        denied_imports=list(denied_imports),
        blas_threads=blas_threads,
        serve_limits=(serve_limits or ServeLimits()).to_wire(),
        environment_paths=[str(environment.path)] if environment else [],
        environment_roots=[str(environment.root)] if environment else [],
        max_frame=max_frame,
        tmp_bytes=tmp_bytes,
    )
