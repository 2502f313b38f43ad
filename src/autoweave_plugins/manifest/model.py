"""The validated manifest: immutable records built only by the validator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autoweave_plugins.permissions.inbound import InboundSpec
from autoweave_plugins.permissions.paths import PathRule
from autoweave_plugins.permissions.urls import URLPattern
from autoweave_plugins.permissions.usb import USBFilter

__all__ = [
    "DEFAULT_MAX_HEAP_MB",
    "DEFAULT_MAX_THREADS",
    "DEFAULT_MAX_WORKERS",
    "MANIFEST_FILENAME",
    "Author",
    "Manifest",
    "Permissions",
]

MANIFEST_FILENAME = "autoweave.plugin.json"
DEFAULT_MAX_HEAP_MB = 256
DEFAULT_MAX_WORKERS = 1
DEFAULT_MAX_THREADS = 64
"""Threads a worker may start beyond its main thread (asyncio's default executor needs up to 32)."""


@dataclass(frozen=True, slots=True)
class Author:
    name: str | None = None
    email: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Permissions:
    """What a plugin may do. Everything not listed here is refused."""

    filesystem: tuple[PathRule, ...] = ()
    outbound: tuple[URLPattern, ...] = ()
    inbound: InboundSpec | None = None
    usb: USBFilter = field(default_factory=USBFilter)
    max_heap_mb: int = DEFAULT_MAX_HEAP_MB
    max_workers: int = DEFAULT_MAX_WORKERS
    max_threads: int = DEFAULT_MAX_THREADS


@dataclass(frozen=True, slots=True)
class Manifest:
    """A plugin's ``autoweave.plugin.json`` after validation."""

    name: str
    version: str
    entry: str
    description: str | None = None
    author: Author | None = None
    permissions: Permissions = field(default_factory=Permissions)
    hooks: Mapping[str, str] = field(default_factory=dict)
    dependencies: Mapping[str, str] = field(default_factory=dict)
    schema: str | None = None
    # The JSON document as parsed, for handing to the worker and the SDK's read-only view.
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # PEP 508 strings as written; the host builds the plugin's own environment from them.
    requirements: tuple[str, ...] = ()
