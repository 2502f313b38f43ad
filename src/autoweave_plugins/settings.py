"""The manager's configuration: plain dataclasses with the seed's defaults, in seconds.

Build them from mappings or a TOML file with ``ManagerConfig.from_mapping`` /
``ManagerConfig.from_toml``; every unknown or mistyped key raises ``ConfigError`` naming it.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoweave_plugins.config import from_mapping, load_toml, require
from autoweave_plugins.discovery import DEFAULT_IGNORE
from autoweave_plugins.errors import ConfigError
from autoweave_plugins.policy import GrantPolicy

__all__ = [
    "LoaderConfig",
    "ManagerConfig",
    "PluginHostConfig",
    "Priority",
    "WatcherConfig",
    "WorkerPoolConfig",
]


class Priority(enum.IntEnum):
    """Load priority. CRITICAL and HIGH plugins load at start; lower values load first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3
    BACKGROUND = 4


@dataclass(frozen=True, slots=True)
class WorkerPoolConfig:
    min_workers: int = 2
    """Blank workers kept pre-warmed for fast loads."""
    max_workers: int = 10
    """Cap on live worker processes, spares included."""
    worker_idle_timeout: float = 300.0
    """A plugin with no calls for this long is unloaded (dormant) unless pinned."""
    health_check_interval: float = 60.0
    health_check_timeout: float = 5.0
    rss_allowance_mb: int = 64
    """RSS a worker may use beyond its manifest's max_heap_mb (the interpreter itself) before
    the health check kills it with reason ``memory``. Measured by the host."""
    call_timeout: float = 30.0
    """Default per-call timeout; ``call(timeout=...)`` overrides it."""
    restart_backoff_base: float = 0.01
    restart_backoff_cap: float = 30.0
    healthy_period: float = 60.0
    """A worker up this long resets its plugin's restart count."""
    breaker_threshold: int = 5
    """This many crashes within ``breaker_window`` opens the breaker: the plugin is failed."""
    breaker_window: float = 60.0
    scale_out_queue: int = 2
    """Calls in flight per worker before another worker is started (up to memory.max_workers)."""
    scale_in_idle: float = 30.0
    """An extra worker of a plugin with no calls for this long is stopped."""
    unload_timeout: float = 2.0
    """Time allowed for onUnload at reclaim and shutdown."""
    extra_imports: tuple[str, ...] = ()
    """Module prefixes plugin code may import although the sandbox refuses them by default
    (the process-spawning modules; see sandbox/imports.py). Everything else is allowed."""
    denied_imports: tuple[str, ...] = ()
    """Module prefixes plugin code may not import, for every plugin."""
    blas_threads: int = 1
    """OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS... in every worker: OpenBLAS
    sizes its buffers by thread count, which would otherwise be the host's CPU count."""

    def validate(self, prefix: str) -> None:
        require(self.min_workers >= 0, f"{prefix}.min_workers", "must be >= 0")
        require(self.max_workers >= 1, f"{prefix}.max_workers", "must be >= 1")
        require(
            self.min_workers <= self.max_workers,
            f"{prefix}.min_workers",
            "must not exceed max_workers",
        )
        for name in (
            "worker_idle_timeout",
            "health_check_interval",
            "health_check_timeout",
            "call_timeout",
            "healthy_period",
            "breaker_window",
            "scale_in_idle",
            "unload_timeout",
        ):
            require(getattr(self, name) > 0, f"{prefix}.{name}", "must be > 0 seconds")
        require(
            0 <= self.restart_backoff_base <= self.restart_backoff_cap,
            f"{prefix}.restart_backoff_base",
            "must be >= 0 and <= restart_backoff_cap",
        )
        require(self.rss_allowance_mb >= 0, f"{prefix}.rss_allowance_mb", "must be >= 0")
        require(self.breaker_threshold >= 1, f"{prefix}.breaker_threshold", "must be >= 1")
        require(self.scale_out_queue >= 1, f"{prefix}.scale_out_queue", "must be >= 1")
        require(1 <= self.blas_threads <= 1024, f"{prefix}.blas_threads", "must be from 1 to 1024")
        _check_modules(self.extra_imports, f"{prefix}.extra_imports")
        _check_modules(self.denied_imports, f"{prefix}.denied_imports")


def _check_modules(names: tuple[str, ...], key: str) -> None:
    for index, name in enumerate(names):
        require(
            all(part.isidentifier() for part in name.split(".")),
            f"{key}[{index}]",
            f"{name!r} is not a dotted module name",
        )


@dataclass(frozen=True, slots=True)
class PluginHostConfig:
    """Host settings for one plugin: the ``[plugins.NAME]`` table, next to the global ones."""

    extra_imports: tuple[str, ...] = ()
    """Module prefixes this plugin may import although refused by default or globally."""
    denied_imports: tuple[str, ...] = ()
    """Module prefixes this plugin may not import."""

    def validate(self, prefix: str) -> None:
        _check_modules(self.extra_imports, f"{prefix}.extra_imports")
        _check_modules(self.denied_imports, f"{prefix}.denied_imports")


@dataclass(frozen=True, slots=True)
class LoaderConfig:
    preload_queue: tuple[str, ...] = ()
    """Plugins loaded at start (in priority order, then in this order), and pinned."""
    priority_map: Mapping[str, Priority] = field(default_factory=dict)
    max_concurrent_loads: int = 3
    load_timeout: float = 30.0
    load_retries: int = 2
    """Retries of a failed load (transient errors only), with the restart backoff."""

    def validate(self, prefix: str) -> None:
        require(self.max_concurrent_loads >= 1, f"{prefix}.max_concurrent_loads", "must be >= 1")
        require(self.load_timeout > 0, f"{prefix}.load_timeout", "must be > 0 seconds")
        require(self.load_retries >= 0, f"{prefix}.load_retries", "must be >= 0")


@dataclass(frozen=True, slots=True)
class WatcherConfig:
    enabled: bool = True
    debounce: float = 0.5
    max_depth: int = 2
    manifest_only: bool = True
    ignore_patterns: tuple[str, ...] = DEFAULT_IGNORE

    def validate(self, prefix: str) -> None:
        require(self.debounce >= 0, f"{prefix}.debounce", "must be >= 0 seconds")
        require(1 <= self.max_depth <= 16, f"{prefix}.max_depth", "must be from 1 to 16")


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    plugin_directory: Path = Path("./plugins")
    worker_pool: WorkerPoolConfig = field(default_factory=WorkerPoolConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)
    policy: GrantPolicy = field(default_factory=GrantPolicy)
    strict: bool = False
    """Refuse to run plugins when a required sandbox layer is missing."""
    plugin_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-plugin settings, visible to the plugin as ``autoweave.config``."""
    broadcast_concurrency: int = 16
    plugins: Mapping[str, PluginHostConfig] = field(default_factory=dict)
    """Host settings per plugin name (``[plugins.NAME]``); never visible to the plugin."""

    def worker_options(self, plugin: str) -> dict[str, Any]:
        """``build_spec`` keywords for ``plugin``: imports merged, BLAS threads, the policy.

        For a module prefix named in several places, ``[plugins.NAME]`` decides over
        ``[worker_pool]``, and a denial over a grant in the same place; the worker then
        applies the most specific prefix (sandbox/imports.py).
        """
        own = self.plugins.get(plugin, PluginHostConfig())
        pool = self.worker_pool
        rules = {
            **dict.fromkeys(pool.extra_imports, True),
            **dict.fromkeys(pool.denied_imports, False),
        }
        rules |= {
            **dict.fromkeys(own.extra_imports, True),
            **dict.fromkeys(own.denied_imports, False),
        }
        return {
            "extra_imports": tuple(name for name, allowed in rules.items() if allowed),
            "denied_imports": tuple(name for name, allowed in rules.items() if not allowed),
            "blas_threads": pool.blas_threads,
            "policy": self.policy,
        }

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ManagerConfig:
        sections = {
            "worker_pool": WorkerPoolConfig,
            "loader": LoaderConfig,
            "watcher": WatcherConfig,
            "policy": GrantPolicy,
        }
        values = dict(mapping)
        built: dict[str, Any] = {}
        for key, section in sections.items():
            if key in values:
                built[key] = from_mapping(section, values.pop(key), key)
        config = from_mapping(cls, values, "config")
        merged = ManagerConfig(
            **{**{f: getattr(config, f) for f in cls.__dataclass_fields__}, **built}
        )
        merged.policy.check_host_paths("policy", plugin_directory=str(merged.plugin_directory))
        return merged

    @classmethod
    def from_toml(cls, path: str | Path) -> ManagerConfig:
        """Read ``path``; the file itself is then denied to every grant (it holds every
        plugin's plugin_config)."""
        document = load_toml(path)
        try:
            config = cls.from_mapping(document)
            config.policy.check_host_paths("policy", config_file=str(path))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.key}", exc.message) from None
        own = os.path.realpath(path)
        policy = dataclasses.replace(config.policy, denied_paths=(*config.policy.denied_paths, own))
        return dataclasses.replace(config, policy=policy)

    def validate(self, prefix: str) -> None:
        require(self.broadcast_concurrency >= 1, f"{prefix}.broadcast_concurrency", "must be >= 1")
