"""The config sections as TypedDicts, so that ``worker_pool={...}`` gets completion and a type
check in an editor (pluggy's style). Each has exactly the keys of its dataclass in
``settings.py``, where every default is documented; a test keeps the two in step. A mapping
is still validated at run time, with errors that name the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

from autoweave_plugins.settings import Priority

__all__ = [
    "EnvironmentsOptions",
    "FetchLimitsOptions",
    "LimitsOptions",
    "LoaderOptions",
    "OutputLimitsOptions",
    "PolicyOptions",
    "WatcherOptions",
    "WorkerPoolOptions",
]


class WorkerPoolOptions(TypedDict, total=False):
    """``settings.WorkerPoolConfig`` as a mapping."""

    min_workers: int
    max_workers: int
    worker_idle_timeout: float
    health_check_interval: float
    health_check_timeout: float
    rss_allowance_mb: int
    memory_check_interval: float
    call_timeout: float
    restart_backoff_base: float
    restart_backoff_cap: float
    healthy_period: float
    breaker_threshold: int
    breaker_window: float
    scale_out_queue: int
    scale_in_idle: float
    unload_timeout: float
    extra_imports: Sequence[str]
    denied_imports: Sequence[str]
    blas_threads: int
    start_method: str
    template_max_forks: int
    template_max_age: float
    namespaces: bool
    disabled_namespaces: Sequence[str]
    tmp_size_mb: int


class LoaderOptions(TypedDict, total=False):
    """``settings.LoaderConfig`` as a mapping."""

    preload_queue: Sequence[str]
    priority_map: Mapping[str, Priority | str]
    max_concurrent_loads: int
    load_timeout: float
    load_retries: int


class WatcherOptions(TypedDict, total=False):
    """``settings.WatcherConfig`` as a mapping."""

    enabled: bool
    debounce: float
    max_depth: int
    manifest_only: bool
    ignore_patterns: Sequence[str]


class PolicyOptions(TypedDict, total=False):
    """``policy.GrantPolicy`` as a mapping."""

    allowed_roots: Sequence[str]
    denied_paths: Sequence[str]
    max_heap_mb: int
    max_workers: int
    max_threads: int
    allow_outbound: bool
    allow_any_host: bool
    allow_private_network: bool
    allow_inbound: bool
    allow_inbound_all_interfaces: bool
    inbound_ports: Sequence[int]
    allow_usb: bool


class FetchLimitsOptions(TypedDict, total=False):
    """``broker.fetch.FetchLimits`` as a mapping (``limits.fetch``)."""

    max_redirects: int
    max_response_bytes: int
    max_request_bytes: int
    default_timeout: float
    max_timeout: float
    max_headers: int
    max_buffered_bytes: int
    max_lookups_in_flight: int
    dns_timeout: float
    dns_tries: int
    nameservers: Sequence[str]


class OutputLimitsOptions(TypedDict, total=False):
    """``output.OutputLimits`` as a mapping (``limits.output``)."""

    lines_per_second: float
    burst: int
    max_line: int


class ServeLimitsOptions(TypedDict, total=False):
    """``rpc.ServeLimits`` as a mapping (``limits.serve``)."""

    max_connections: int
    header_timeout: float
    body_timeout: float
    write_timeout: float
    max_header_bytes: int
    max_body_bytes: int


class LimitsOptions(TypedDict, total=False):
    """``settings.LimitsConfig`` as a mapping."""

    max_frame: int
    ready_timeout: float
    cancel_grace: float
    max_concurrent_requests: int
    fetch: FetchLimitsOptions
    output: OutputLimitsOptions
    serve: ServeLimitsOptions


class EnvironmentsOptions(TypedDict, total=False):
    """``environments.EnvironmentsConfig`` as a mapping."""

    index_url: str | None
    extra_index_urls: Sequence[str]
    find_links: str | None
    offline: bool
    only_binary: bool
    cache_dir: str | None
    build_timeout: float
    max_size_mb: int
    prune_interval: float
    prune_after: float
