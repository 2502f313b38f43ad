"""The host's grant policy: what it is willing to give plugins, whatever they ask for.

A manifest is a request. The policy caps it (heap, workers), denies categories outright
(inbound on all interfaces, any-host outbound patterns, private network targets) and confines
filesystem grants to allowed roots, compared after resolving symlinks so a declared path that is
a link to ``/etc`` is judged as ``/etc``. A refusal names the manifest's JSON path.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
from dataclasses import dataclass

from autoweave_plugins.config import require
from autoweave_plugins.errors import PolicyRefused
from autoweave_plugins.manifest.model import Manifest
from autoweave_plugins.permissions.paths import FileMode, check_declared_path
from autoweave_plugins.permissions.urls import is_public_address

__all__ = ["DEFAULT_DENIED_PATHS", "GrantPolicy"]

DEFAULT_DENIED_PATHS = (
    "/boot", "/dev", "/proc", "/root", "/run", "/sys", "/var/run",
    "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh",
)  # fmt: skip


@functools.cache
def runtime_code_paths() -> tuple[str, ...]:
    """Where the interpreter, installed packages and this package live (symlinks resolved)."""
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update((sys.prefix, sys.base_prefix, sys.exec_prefix))
    paths.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return tuple(sorted({os.path.realpath(p) for p in paths}))


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True, slots=True)
class GrantPolicy:
    """Host-side limits on what a manifest may be granted. Every default is documented here."""

    allowed_path_roots: tuple[str, ...] | None = None
    """Declared filesystem paths must lie under one of these; None allows any root."""
    denied_paths: tuple[str, ...] = DEFAULT_DENIED_PATHS
    """Declared paths may not be, contain or lie under these (after symlink resolution)."""
    max_heap_mb: int = 4096
    max_workers: int = 16
    allow_outbound: bool = True
    allow_any_host: bool = False
    """Allow outbound patterns whose host is a bare '*'."""
    allow_private_network: bool = True
    """Allow outbound patterns that name 'localhost' or a non-public IP literal."""
    allow_inbound: bool = True
    allow_inbound_all_interfaces: bool = False
    inbound_ports: tuple[int, int] = (1024, 65535)
    allow_usb: bool = True

    def validate(self, prefix: str) -> None:
        for index, root in enumerate(self.allowed_path_roots or ()):
            problem = check_declared_path(root)
            require(problem is None, f"{prefix}.allowed_path_roots[{index}]", problem or "")
        for index, path in enumerate(self.denied_paths):
            require(path.startswith("/"), f"{prefix}.denied_paths[{index}]", "must be absolute")
        require(16 <= self.max_heap_mb <= 1 << 20, f"{prefix}.max_heap_mb", "must be at least 16")
        require(1 <= self.max_workers <= 1024, f"{prefix}.max_workers", "must be from 1 to 1024")
        low, high = self.inbound_ports
        require(
            1 <= low <= high <= 65535,
            f"{prefix}.inbound_ports",
            "must be [low, high] within 1-65535",
        )

    def refusals(self, manifest: Manifest, plugin_root: str | None = None) -> list[PolicyRefused]:
        """Every permission of ``manifest`` that this policy will not grant.

        Write access is never granted over code that runs outside the sandbox or in another
        worker: the interpreter, site-packages, this package, and the plugin directory
        (``plugin_root``). A ``.pth`` file dropped there would run before any sandbox layer.
        """
        out: list[PolicyRefused] = []
        protected = runtime_code_paths() + ((os.path.realpath(plugin_root),) if plugin_root else ())

        def refuse(permission: str, message: str) -> None:
            out.append(PolicyRefused(manifest.name, permission, message))

        perms = manifest.permissions
        for index, rule in enumerate(perms.filesystem):
            at = f"$.permissions.filesystem[{index}].path"
            resolved = os.path.realpath(rule.path)
            shown = rule.path if resolved == rule.path else f"{rule.path} (resolves to {resolved})"
            denied = [d for d in self.denied_paths if _within(d, resolved) or _within(resolved, d)]
            code = [p for p in protected if _within(p, resolved) or _within(resolved, p)]
            if rule.mode is not FileMode.READ and code:
                refuse(
                    at,
                    f"{shown}: writing there could change code that runs outside the sandbox ({code[0]})",
                )
            elif denied:
                refuse(at, f"{shown} is refused by host policy: it overlaps {denied[0]}")
            elif self.allowed_path_roots is not None and not any(
                _within(root, resolved) for root in self.allowed_path_roots
            ):
                refuse(
                    at,
                    f"{shown} is outside the allowed roots: {', '.join(self.allowed_path_roots)}",
                )
        if perms.max_heap_mb > self.max_heap_mb:
            refuse(
                "$.permissions.memory.max_heap_mb",
                f"{perms.max_heap_mb} MB exceeds the host cap of {self.max_heap_mb}",
            )
        if perms.max_workers > self.max_workers:
            refuse(
                "$.permissions.memory.max_workers",
                f"{perms.max_workers} exceeds the host cap of {self.max_workers}",
            )
        for index, pattern in enumerate(perms.outbound):
            at = f"$.permissions.network.outbound[{index}]"
            if not self.allow_outbound:
                refuse(at, "outbound network access is disabled by host policy")
            elif pattern.host is None and not self.allow_any_host:
                refuse(
                    at, f"{pattern.text}: patterns for any host ('*') are refused by host policy"
                )
            elif not self.allow_private_network and (
                pattern.host == "localhost"
                or (pattern.address is not None and not is_public_address(pattern.address))
            ):
                refuse(at, f"{pattern.text}: private network targets are refused by host policy")
        if perms.inbound is not None:
            at = "$.permissions.network.inbound"
            low, high = self.inbound_ports
            if not self.allow_inbound:
                refuse(at, "inbound connections are disabled by host policy")
            elif perms.inbound.interface == "all" and not self.allow_inbound_all_interfaces:
                refuse(
                    f"{at}.interface",
                    "listening on all interfaces is refused by host policy; use 'localhost'",
                )
            elif not low <= perms.inbound.port <= high:
                refuse(
                    f"{at}.port",
                    f"port {perms.inbound.port} is outside the allowed range {low}-{high}",
                )
        if perms.usb.vendor_ids and not self.allow_usb:
            refuse("$.permissions.usb", "USB access is disabled by host policy")
        return out

    def enforce(self, manifest: Manifest, plugin_root: str | None = None) -> None:
        """Raise ``PolicyRefused`` for the first refused permission, if any."""
        refusals = self.refusals(manifest, plugin_root)
        if refusals:
            raise refusals[0]
