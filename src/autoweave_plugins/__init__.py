"""autoweave-plugins: a plugin host that runs each plugin in its own kernel-sandboxed worker.

The public surface is re-exported here; everything else is an implementation detail.

Names are imported on first use (PEP 562): a worker process imports
``autoweave_plugins.worker`` and must not pay for, or carry, the host's stack (httpx,
prometheus-client, watchfiles...) just because Python runs this file first.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoweave_plugins.broadcast import BroadcastResult
    from autoweave_plugins.discovery import DiscoveredPlugin, DiscoveryResult, discover
    from autoweave_plugins.environments import EnvironmentBuildError, EnvironmentsConfig
    from autoweave_plugins.errors import (
        AutoweaveError,
        ConfigError,
        DependencyError,
        DiscoveryError,
        EntryError,
        FetchError,
        HookError,
        HookTimeout,
        InvalidPath,
        InvalidURL,
        InvalidUSBEvent,
        LoadError,
        LoadTimeout,
        ManifestError,
        ManifestIssue,
        PermissionDenied,
        PluginCrashed,
        PluginFailed,
        PolicyRefused,
        ProtocolError,
        SandboxUnavailable,
        UnknownEvent,
        UnknownHook,
        UnknownPlugin,
        UnsendableValue,
        WorkerError,
    )
    from autoweave_plugins.events import Event, PluginView
    from autoweave_plugins.manager import PluginManager
    from autoweave_plugins.manifest import Manifest, ManifestCache, parse_manifest_bytes
    from autoweave_plugins.options import (
        EnvironmentsOptions,
        LimitsOptions,
        LoaderOptions,
        PolicyOptions,
        WatcherOptions,
        WorkerPoolOptions,
    )
    from autoweave_plugins.policy import GrantPolicy
    from autoweave_plugins.recovery import ExitReason
    from autoweave_plugins.registry import PluginState
    from autoweave_plugins.settings import (
        LimitsConfig,
        LoaderConfig,
        ManagerConfig,
        Priority,
        WatcherConfig,
        WorkerPoolConfig,
    )

__version__ = "0.1.0"

_EXPORTS = {
    "DiscoveredPlugin": "autoweave_plugins.discovery",
    "DiscoveryResult": "autoweave_plugins.discovery",
    "discover": "autoweave_plugins.discovery",
    "AutoweaveError": "autoweave_plugins.errors",
    "ConfigError": "autoweave_plugins.errors",
    "DependencyError": "autoweave_plugins.errors",
    "DiscoveryError": "autoweave_plugins.errors",
    "EntryError": "autoweave_plugins.errors",
    "FetchError": "autoweave_plugins.errors",
    "HookError": "autoweave_plugins.errors",
    "HookTimeout": "autoweave_plugins.errors",
    "InvalidPath": "autoweave_plugins.errors",
    "InvalidURL": "autoweave_plugins.errors",
    "InvalidUSBEvent": "autoweave_plugins.errors",
    "LoadError": "autoweave_plugins.errors",
    "LoadTimeout": "autoweave_plugins.errors",
    "ManifestError": "autoweave_plugins.errors",
    "ManifestIssue": "autoweave_plugins.errors",
    "PermissionDenied": "autoweave_plugins.errors",
    "PluginCrashed": "autoweave_plugins.errors",
    "PluginFailed": "autoweave_plugins.errors",
    "PolicyRefused": "autoweave_plugins.errors",
    "ProtocolError": "autoweave_plugins.errors",
    "SandboxUnavailable": "autoweave_plugins.errors",
    "UnknownEvent": "autoweave_plugins.errors",
    "UnknownHook": "autoweave_plugins.errors",
    "UnknownPlugin": "autoweave_plugins.errors",
    "UnsendableValue": "autoweave_plugins.errors",
    "WorkerError": "autoweave_plugins.errors",
    "EnvironmentBuildError": "autoweave_plugins.environments",
    "EnvironmentsConfig": "autoweave_plugins.environments",
    "EnvironmentsOptions": "autoweave_plugins.options",
    "Event": "autoweave_plugins.events",
    "PluginView": "autoweave_plugins.events",
    "BroadcastResult": "autoweave_plugins.broadcast",
    "PluginManager": "autoweave_plugins.manager",
    "Manifest": "autoweave_plugins.manifest",
    "ManifestCache": "autoweave_plugins.manifest",
    "parse_manifest_bytes": "autoweave_plugins.manifest",
    "LimitsOptions": "autoweave_plugins.options",
    "LoaderOptions": "autoweave_plugins.options",
    "PolicyOptions": "autoweave_plugins.options",
    "WatcherOptions": "autoweave_plugins.options",
    "WorkerPoolOptions": "autoweave_plugins.options",
    "GrantPolicy": "autoweave_plugins.policy",
    "ExitReason": "autoweave_plugins.recovery",
    "PluginState": "autoweave_plugins.registry",
    "LimitsConfig": "autoweave_plugins.settings",
    "LoaderConfig": "autoweave_plugins.settings",
    "ManagerConfig": "autoweave_plugins.settings",
    "Priority": "autoweave_plugins.settings",
    "WatcherConfig": "autoweave_plugins.settings",
    "WorkerPoolConfig": "autoweave_plugins.settings",
}

__all__ = [
    "AutoweaveError",
    "BroadcastResult",
    "ConfigError",
    "DependencyError",
    "DiscoveredPlugin",
    "DiscoveryError",
    "DiscoveryResult",
    "EntryError",
    "EnvironmentBuildError",
    "EnvironmentsConfig",
    "EnvironmentsOptions",
    "Event",
    "ExitReason",
    "FetchError",
    "GrantPolicy",
    "HookError",
    "HookTimeout",
    "InvalidPath",
    "InvalidURL",
    "InvalidUSBEvent",
    "LimitsConfig",
    "LimitsOptions",
    "LoadError",
    "LoadTimeout",
    "LoaderConfig",
    "LoaderOptions",
    "ManagerConfig",
    "Manifest",
    "ManifestCache",
    "ManifestError",
    "ManifestIssue",
    "PermissionDenied",
    "PluginCrashed",
    "PluginFailed",
    "PluginManager",
    "PluginState",
    "PluginView",
    "PolicyOptions",
    "PolicyRefused",
    "Priority",
    "ProtocolError",
    "SandboxUnavailable",
    "UnknownEvent",
    "UnknownHook",
    "UnknownPlugin",
    "UnsendableValue",
    "WatcherConfig",
    "WatcherOptions",
    "WorkerError",
    "WorkerPoolConfig",
    "WorkerPoolOptions",
    "__version__",
    "discover",
    "parse_manifest_bytes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autoweave_plugins' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


logging.getLogger(__name__).addHandler(logging.NullHandler())
