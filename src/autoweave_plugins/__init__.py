"""autoweave-plugins: a plugin host that runs each plugin in its own kernel-sandboxed worker.

The public surface is re-exported here; everything else is an implementation detail.
"""

import logging

from autoweave_plugins.discovery import DiscoveredPlugin, DiscoveryResult, discover
from autoweave_plugins.errors import (
    AutoweaveError,
    ConfigError,
    DiscoveryError,
    FetchError,
    HookError,
    HookTimeout,
    InvalidPath,
    InvalidURL,
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
    WorkerError,
)
from autoweave_plugins.events import Event, PluginView
from autoweave_plugins.manager import BroadcastResult, PluginManager
from autoweave_plugins.manifest import Manifest, ManifestCache, parse_manifest_bytes
from autoweave_plugins.permissions.policy import GrantPolicy
from autoweave_plugins.registry import PluginState
from autoweave_plugins.settings import (
    LoaderConfig,
    ManagerConfig,
    Priority,
    WatcherConfig,
    WorkerPoolConfig,
)

__version__ = "0.1.0"

__all__ = [
    "AutoweaveError",
    "BroadcastResult",
    "ConfigError",
    "DiscoveredPlugin",
    "DiscoveryError",
    "DiscoveryResult",
    "Event",
    "FetchError",
    "GrantPolicy",
    "HookError",
    "HookTimeout",
    "InvalidPath",
    "InvalidURL",
    "LoadError",
    "LoadTimeout",
    "LoaderConfig",
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
    "PolicyRefused",
    "Priority",
    "ProtocolError",
    "SandboxUnavailable",
    "UnknownEvent",
    "UnknownHook",
    "UnknownPlugin",
    "WatcherConfig",
    "WorkerError",
    "WorkerPoolConfig",
    "__version__",
    "discover",
    "parse_manifest_bytes",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
