"""The manager's configuration: plain dataclasses with the seed's defaults, in seconds.

Build them from mappings or a TOML file with ``ManagerConfig.from_mapping`` /
``ManagerConfig.from_toml``; every unknown or mistyped key raises ``ConfigError`` naming it.
Every default is written down here, with what it bounds (``options.py`` has the same keys as
TypedDicts, for completion when a section is passed as a dict).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoweave_plugins.broker.fetch import FetchLimits
from autoweave_plugins.config import collecting, from_mapping, load_toml, require
from autoweave_plugins.discovery import DEFAULT_IGNORE
from autoweave_plugins.environments.config import EnvironmentsConfig
from autoweave_plugins.errors import ConfigError
from autoweave_plugins.jobs_config import JobsConfig
from autoweave_plugins.output import OutputLimits
from autoweave_plugins.policy import GrantPolicy
from autoweave_plugins.rpc import DEFAULT_MAX_FRAME, ServeLimits
from autoweave_plugins.sandbox.world import NAMESPACES as NAMESPACE_NAMES
from autoweave_plugins.sandbox.world import WorldOptions

__all__ = [
    "START_METHODS",
    "EnvironmentsConfig",
    "LimitsConfig",
    "LoaderConfig",
    "ManagerConfig",
    "PluginHostConfig",
    "Priority",
    "WatcherConfig",
    "WorkerPoolConfig",
]


START_METHODS = ("template", "spawn")


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
    """Blank workers kept pre-warmed for fast loads. Forked from the template, a spare costs
    ~2.7 MB and saves a lazy load its fork and preparation (a few ms); spawned, ~14 MB and
    ~100 ms. Two stay the default: cheap either way, and they cover the fallback."""
    max_workers: int = 10
    """Cap on live worker processes, spares included."""
    worker_idle_timeout: float = 300.0
    """A plugin with no calls for this long is unloaded (dormant) unless pinned."""
    health_check_interval: float = 60.0
    """Every worker not running a call is pinged this often; one that does not answer within
    ``health_check_timeout`` is killed with reason ``unhealthy``."""
    health_check_timeout: float = 5.0
    rss_allowance_mb: int = 64
    """RSS a worker may use beyond its manifest's max_heap_mb (the interpreter itself) before
    the memory check kills it with reason ``memory``. Measured by the host."""
    memory_check_interval: float = 1.0
    """How often the host measures each assigned worker's RSS against its budget. Separate
    from the health check and much more frequent: memory the kernel's rlimits do not count
    (such as a growsdown mapping) must not stay held for long. One /proc read per worker."""
    call_timeout: float = 30.0
    """Default per-call timeout; ``call(timeout=...)`` overrides it."""
    restart_backoff_base: float = 0.01
    """A crashed plugin restarts after ``min(cap, base * 2**(n-1) + U(0, base))`` seconds."""
    restart_backoff_cap: float = 30.0
    healthy_period: float = 60.0
    """A worker up this long resets its plugin's restart count."""
    breaker_threshold: int = 5
    """This many crashes within ``breaker_window`` opens the breaker: the plugin is failed."""
    breaker_window: float = 60.0
    """Seconds over which ``breaker_threshold`` crashes are counted."""
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
    start_method: str = "template"
    """How blank workers start: ``"template"`` forks them from a clean, pre-imported template
    process (the zygote; a few ms and ~2 MB each), ``"spawn"`` starts a fresh interpreter for
    each (~100 ms and ~14 MB). If the template cannot start, the pool spawns instead and says
    so: a warning, ``get_manager_stats()["workers"]["start_method"]``, and ``doctor``."""
    template_max_forks: int = 256
    """Workers one template forks before it is replaced (0: no limit). Workers forked from one
    template share its address-space layout (ASLR) and hash seed; this bounds how many do."""
    template_max_age: float = 3600.0
    """Seconds after which the template is replaced, for the same reason (0: no limit)."""
    namespaces: bool = True
    """Give each worker its own user, PID, network, IPC, mount and UTS namespaces and a
    filesystem view built from its grants, where the kernel allows (``doctor`` says). Off, or
    refused by the kernel, workers run under the other layers alone (``strict`` refuses)."""
    disabled_namespaces: tuple[str, ...] = ()
    """Namespaces workers must not use, handled as if the kernel refused them: the worker
    falls back exactly as it would on a kernel without them."""
    tmp_size_mb: int = 64
    """Size of each worker's private ``/tmp`` (a tmpfs in its view, counted in its memory)."""

    def world(self) -> WorldOptions:
        """What every worker is asked to enter (see ``sandbox.world.WorldOptions``)."""
        return WorldOptions(self.namespaces, frozenset(self.disabled_namespaces))

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
            "memory_check_interval",
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
        require(
            self.start_method in START_METHODS,
            f"{prefix}.start_method",
            f"must be one of {', '.join(START_METHODS)}, not {self.start_method!r}",
        )
        require(self.template_max_forks >= 0, f"{prefix}.template_max_forks", "must be >= 0")
        require(self.template_max_age >= 0, f"{prefix}.template_max_age", "must be >= 0 seconds")
        for index, name in enumerate(self.disabled_namespaces):
            require(
                name in NAMESPACE_NAMES,
                f"{prefix}.disabled_namespaces[{index}]",
                f"must be one of {', '.join(NAMESPACE_NAMES)}, not {name!r}",
            )
        require(1 <= self.tmp_size_mb <= 1 << 20, f"{prefix}.tmp_size_mb", "must be 1 to 1048576")
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
    """Load priority per plugin (default NORMAL); CRITICAL and HIGH load at start, pinned."""
    max_concurrent_loads: int = 3
    """Loads (worker assignment, sandboxing, import, onLoad) running at once."""
    load_timeout: float = 30.0
    """Time allowed for one load attempt, including waiting for a worker slot."""
    load_retries: int = 2
    """Retries of a failed load (transient errors only), with the restart backoff."""

    def validate(self, prefix: str) -> None:
        require(self.max_concurrent_loads >= 1, f"{prefix}.max_concurrent_loads", "must be >= 1")
        require(self.load_timeout > 0, f"{prefix}.load_timeout", "must be > 0 seconds")
        require(self.load_retries >= 0, f"{prefix}.load_retries", "must be >= 0")


@dataclass(frozen=True, slots=True)
class WatcherConfig:
    enabled: bool = True
    """Watch the plugin directory and reload changed plugins (blue/green)."""
    debounce: float = 0.5
    """Quiet period: a burst of changes is handled once, this long after it settles."""
    max_depth: int = 2
    """How deep below the plugin directory plugins (and their files) are looked for."""
    manifest_only: bool = False
    """False (the default): a plugin reloads when any file in its folder changes in content
    (code edits reload, as with ``uvicorn --reload``). True: only a changed manifest reloads
    it, and only manifests are watched (fewer inotify watches on large folders)."""
    ignore_patterns: tuple[str, ...] = DEFAULT_IGNORE
    """File and folder names (fnmatch patterns) never watched nor fingerprinted."""

    def validate(self, prefix: str) -> None:
        require(self.debounce >= 0, f"{prefix}.debounce", "must be >= 0 seconds")
        require(1 <= self.max_depth <= 16, f"{prefix}.max_depth", "must be from 1 to 16")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """What the host accepts from one worker: every bound on data a plugin chooses.

    ``fetch``, ``output`` and ``serve`` are tables of their own (``[limits.fetch]``,
    ``[limits.output]``, ``[limits.serve]``); each key is documented on its dataclass
    (``FetchLimits``, ``OutputLimits``, ``ServeLimits``). The main ones:

    - fetch (outbound HTTP done by the host for a plugin): ``max_redirects`` 5 hops, each
      checked again; ``max_response_bytes`` 10 MiB and ``max_request_bytes`` 10 MiB;
      ``default_timeout`` 10 s and ``max_timeout`` 60 s per request (total, redirects
      included); ``max_headers`` 64 request headers.
    - output (worker stdout/stderr and ``autoweave.log`` records forwarded to host logging):
      ``lines_per_second`` 50 and ``burst`` 200 lines (token bucket; the rest is counted and
      dropped); ``max_line`` 2048 bytes per line.
    - serve (a plugin's inbound ``autoweave.serve``): ``max_connections`` 64, header, body and
      write timeouts of 10 s each, 64 KiB of headers and 1 MiB of body per request.
    """

    max_frame: int = DEFAULT_MAX_FRAME
    """Largest RPC frame (bytes) the host reads from a worker; a larger one kills the worker
    with reason ``protocol``. Hook arguments and results must fit in it."""
    ready_timeout: float = 30.0
    """Time a new worker process has to start and report ready."""
    cancel_grace: float = 0.25
    """After a hook call times out, time the worker has to acknowledge the cancel before it is
    killed (a hook spinning in pure Python never does)."""
    max_concurrent_requests: int = 16
    """Brokered requests (fetch) one worker may have in flight; each may buffer a response."""
    fetch: FetchLimits = field(default_factory=FetchLimits)
    output: OutputLimits = field(default_factory=OutputLimits)
    serve: ServeLimits = field(default_factory=ServeLimits)

    def validate(self, prefix: str) -> None:
        require(
            1 << 16 <= self.max_frame <= 1 << 30,
            f"{prefix}.max_frame",
            "must be from 65536 to 1073741824 bytes",
        )
        for name in ("ready_timeout", "cancel_grace"):
            require(getattr(self, name) > 0, f"{prefix}.{name}", "must be > 0 seconds")
        require(
            self.max_concurrent_requests >= 1, f"{prefix}.max_concurrent_requests", "must be >= 1"
        )
        fetch, at = self.fetch, f"{prefix}.fetch"
        require(fetch.max_redirects >= 0, f"{at}.max_redirects", "must be >= 0")
        require(fetch.max_response_bytes >= 1, f"{at}.max_response_bytes", "must be >= 1")
        require(fetch.max_request_bytes >= 0, f"{at}.max_request_bytes", "must be >= 0")
        require(fetch.max_headers >= 0, f"{at}.max_headers", "must be >= 0")
        require(fetch.default_timeout > 0, f"{at}.default_timeout", "must be > 0 seconds")
        require(
            fetch.max_timeout >= fetch.default_timeout,
            f"{at}.max_timeout",
            "must be >= default_timeout",
        )
        require(fetch.max_buffered_bytes >= 1, f"{at}.max_buffered_bytes", "must be >= 1")
        require(fetch.max_lookups_in_flight >= 1, f"{at}.max_lookups_in_flight", "must be >= 1")
        require(fetch.dns_timeout > 0, f"{at}.dns_timeout", "must be > 0 seconds")
        require(fetch.dns_tries >= 1, f"{at}.dns_tries", "must be >= 1")
        output, at = self.output, f"{prefix}.output"
        require(output.lines_per_second > 0, f"{at}.lines_per_second", "must be > 0")
        require(output.burst >= 1, f"{at}.burst", "must be >= 1")
        require(output.max_line >= 1, f"{at}.max_line", "must be >= 1")


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    plugin_directory: Path = Path("./plugins")
    worker_pool: WorkerPoolConfig = field(default_factory=WorkerPoolConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)
    policy: GrantPolicy = field(default_factory=GrantPolicy)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    environments: EnvironmentsConfig = field(default_factory=EnvironmentsConfig)
    """Where plugins' ``requirements`` come from and how they are built (``[environments]``)."""
    strict: bool = False
    """Refuse to run plugins when a required sandbox layer is missing."""
    plugin_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-plugin settings, visible to the plugin as ``autoweave.config``."""
    broadcast_concurrency: int = 16
    """Hook calls a ``broadcast`` runs at once."""
    jobs: JobsConfig = field(default_factory=JobsConfig)
    """The ``[jobs]`` section: the Redis job queue ``autoweave-plugins run`` joins, if any."""
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
            "tmp_bytes": pool.tmp_size_mb << 20,
        }

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ManagerConfig:
        sections = {
            "worker_pool": WorkerPoolConfig,
            "loader": LoaderConfig,
            "watcher": WatcherConfig,
            "policy": GrantPolicy,
            "limits": LimitsConfig,
            "environments": EnvironmentsConfig,
            "jobs": JobsConfig,
        }
        values = dict(mapping)
        built: dict[str, Any] = {}
        with collecting() as problems:  # every problem of every section, in one error
            for key, section in sections.items():
                if key in values:
                    built[key] = from_mapping(section, values.pop(key), key)
            config = from_mapping(cls, values, "config")
            merged = ManagerConfig(
                **{**{f: getattr(config, f) for f in cls.__dataclass_fields__}, **built}
            )
            if not problems:  # the roots are known to be well formed
                merged.policy.check_host_paths(
                    "policy", plugin_directory=str(merged.plugin_directory)
                )
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
            raise exc.prefixed(f"{path}: ") from None
        own = os.path.realpath(path)
        policy = dataclasses.replace(config.policy, denied_paths=(*config.policy.denied_paths, own))
        return dataclasses.replace(config, policy=policy)

    def validate(self, prefix: str) -> None:
        require(self.broadcast_concurrency >= 1, f"{prefix}.broadcast_concurrency", "must be >= 1")
