"""autoweave-plugins: a plugin host that runs each plugin in its own kernel-sandboxed worker.

The public surface is re-exported here; everything else is an implementation detail.
"""

import logging

from autoweave_plugins.discovery import DiscoveredPlugin, DiscoveryResult, discover
from autoweave_plugins.errors import (
    AutoweaveError,
    ConfigError,
    DiscoveryError,
    InvalidPath,
    InvalidURL,
    ManifestError,
    ManifestIssue,
    PermissionDenied,
    PolicyRefused,
)
from autoweave_plugins.manifest import Manifest, ManifestCache, parse_manifest_bytes
from autoweave_plugins.permissions.policy import GrantPolicy

__version__ = "0.1.0"

__all__ = [
    "AutoweaveError",
    "ConfigError",
    "DiscoveredPlugin",
    "DiscoveryError",
    "DiscoveryResult",
    "GrantPolicy",
    "InvalidPath",
    "InvalidURL",
    "Manifest",
    "ManifestCache",
    "ManifestError",
    "ManifestIssue",
    "PermissionDenied",
    "PolicyRefused",
    "__version__",
    "discover",
    "parse_manifest_bytes",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
