"""Manifests: the published schema, parsing and validation, and the stat-keyed cache."""

from importlib.resources import files

from autoweave_plugins.manifest.cache import CacheStats, ManifestCache, ManifestResult
from autoweave_plugins.manifest.model import MANIFEST_FILENAME, Author, Manifest, Permissions
from autoweave_plugins.manifest.parse import check_manifest_bytes, parse_manifest_bytes

SCHEMA_RESOURCE = files(__name__).joinpath("autoweave.plugin.schema.json")
"""The published JSON Schema, for editors (via ``$schema``) and other tools."""

__all__ = [
    "MANIFEST_FILENAME",
    "SCHEMA_RESOURCE",
    "Author",
    "CacheStats",
    "Manifest",
    "ManifestCache",
    "ManifestResult",
    "Permissions",
    "check_manifest_bytes",
    "parse_manifest_bytes",
]
