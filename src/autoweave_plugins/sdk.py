"""``autoweave``: the module plugins import. It exists only inside a worker process.

::

    import autoweave

    async def initialize():
        autoweave.metric("plugin.started", 1)
        text = await autoweave.read_file("/tmp/plugin-data/config.json")
        response = await autoweave.fetch("https://api.example.com/v1", method="POST", body=text)
        autoweave.log.info("status %s", response.status)

File functions check the plugin's filesystem permission first and raise ``PermissionDenied``
with the reason; the kernel (Landlock) enforces the same rules regardless. ``fetch`` is carried
out by the host, which checks the URL against the manifest's outbound patterns, resolves and
pins the address, and re-checks every redirect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import socket
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, overload

from autoweave_plugins.errors import FetchError, InvalidPath, PermissionDenied
from autoweave_plugins.permissions.paths import Access, PathPolicy
from autoweave_plugins.worker.http import Handler, HTTPResponse, Request, ServeLimits, start_servers

if TYPE_CHECKING:
    from autoweave_plugins.worker.spec import WorkerSpec

__all__ = [
    "FetchError",
    "HTTPResponse",
    "PermissionDenied",
    "Request",
    "Response",
    "config",
    "fetch",
    "list_dir",
    "log",
    "manifest",
    "metric",
    "read_file",
    "serve",
    "write_file",
]

METRIC_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.:]{0,127}\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}\Z")
MAX_LABELS = 8
MAX_LABEL_VALUE = 128

log = logging.getLogger("autoweave.plugin")
"""A logger whose records go to the host's log, tagged with the plugin's name."""

manifest: Mapping[str, Any] = MappingProxyType({})
"""The plugin's manifest as parsed (read-only)."""

config: Mapping[str, Any] = MappingProxyType({})
"""Settings the host gives this plugin (read-only)."""


class _Runtime(Protocol):
    spec: WorkerSpec
    paths: PathPolicy
    listeners: list[socket.socket]
    servers: list[asyncio.Server]

    def request(self, op: str, payload: dict[str, Any]) -> Awaitable[Any]: ...
    def send_metric(self, name: str, value: float, labels: dict[str, str]) -> None: ...


_runtime: _Runtime | None = None


def _bind(
    runtime: _Runtime, manifest_doc: Mapping[str, Any], plugin_config: Mapping[str, Any]
) -> None:
    """Called once by the worker runtime after the sandbox is applied."""
    global _runtime, manifest, config  # noqa: PLW0603 - the module is the SDK's public surface
    _runtime = runtime
    manifest = MappingProxyType(dict(manifest_doc))
    config = MappingProxyType(dict(plugin_config))


def _bound() -> _Runtime:
    if _runtime is None:
        raise RuntimeError("the autoweave SDK works only inside a plugin worker")
    return _runtime


def metric(name: str, value: float = 1, **labels: str) -> None:
    """Record a metric sample. Raises ValueError for a malformed name, value or label."""
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise ValueError(f"metric name {name!r} must match {METRIC_NAME.pattern}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"metric value must be a finite number, got {value!r}")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"a metric may have at most {MAX_LABELS} labels")
    for key, label in labels.items():
        if not LABEL_NAME.match(key) or not isinstance(label, str) or len(label) > MAX_LABEL_VALUE:
            raise ValueError(
                f"label {key}={label!r}: names are identifiers, values strings of <= 128 chars"
            )
    _bound().send_metric(name, float(value), labels)


def _require(path: str, access: Access) -> str:
    try:
        return _bound().paths.require(path, access)
    except InvalidPath as exc:
        raise PermissionDenied("filesystem", str(exc)) from None


@overload
async def read_file(path: str, *, encoding: str = "utf-8") -> str: ...
@overload
async def read_file(path: str, *, encoding: None) -> bytes: ...


async def read_file(path: str, *, encoding: str | None = "utf-8") -> str | bytes:
    """Read a file the manifest grants read access to. ``encoding=None`` returns bytes."""
    resolved = _require(path, Access.READ)
    # Local files in the sandbox: a thread hop would cost more than the read.
    with open(resolved, "rb") as handle:  # noqa: ASYNC230
        data = handle.read()
    return data if encoding is None else data.decode(encoding)


async def write_file(path: str, data: str | bytes, *, append: bool = False) -> int:
    """Write (or append to) a file the manifest grants write access to. Returns bytes written."""
    resolved = _require(path, Access.WRITE)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with open(resolved, "ab" if append else "wb") as handle:  # noqa: ASYNC230
        return handle.write(payload)


async def list_dir(path: str) -> list[str]:
    """Names in a directory the manifest grants read access to, sorted."""
    return sorted(os.listdir(_require(path, Access.READ)))


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP response from ``fetch``."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


async def serve(handler: Handler) -> None:
    """Serve HTTP on the manifest's ``network.inbound`` port with ``handler(request)``.

    The host has already bound the port; the plugin cannot bind or connect itself. The
    handler returns a str, bytes, a JSON-able value, ``(status, body)`` or ``HTTPResponse``.
    Returns once listening; the server runs until the plugin is unloaded.
    """
    runtime = _bound()
    if not runtime.listeners:
        raise PermissionDenied("network.inbound", "the manifest declares no inbound port")
    if runtime.servers:
        raise RuntimeError("serve() was already called")
    limits = ServeLimits.from_wire(runtime.spec.serve_limits)
    runtime.servers.extend(await start_servers(runtime.listeners, handler, limits))


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: str | bytes | None = None,
    timeout: float | None = None,
) -> Response:
    """Make an HTTP request through the host. Raises PermissionDenied or FetchError."""
    payload: dict[str, Any] = {
        "url": url,
        "method": method,
        "headers": dict(headers or {}),
        "body": body.encode("utf-8") if isinstance(body, str) else body,
        "timeout": timeout,
    }
    reply = await _bound().request("fetch", payload)
    if not isinstance(reply, dict):
        raise FetchError("the host sent a malformed fetch reply")
    return Response(
        int(reply["status"]),
        MappingProxyType(dict(reply["headers"])),
        bytes(reply["body"]),
        str(reply["url"]),
    )
