"""The host's grant policy: what it is willing to give plugins, whatever they ask for.

A manifest is a request. The policy caps it (heap, workers, threads), denies categories outright
(inbound on all interfaces, any-host outbound patterns, private network targets) and grants
filesystem paths only under the configured data roots (deny by default, see ``roots``). Paths
are judged as written and after resolving symlinks, so a declared path that is a link to
``/etc`` is judged as ``/etc``. A refusal names the manifest's JSON path and, for a filesystem
grant, the root that would allow it or why none can.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from autoweave_plugins.config import require
from autoweave_plugins.errors import ConfigError, PolicyRefused
from autoweave_plugins.manifest.model import Manifest
from autoweave_plugins.permissions.paths import check_declared_path
from autoweave_plugins.permissions.urls import is_public_address
from autoweave_plugins.roots import (
    PLUGIN_PLACEHOLDER,
    SHARED_TEMP,
    contains,
    default_allowed_roots,
    host_private_paths,
    overlaps,
    runtime_code_paths,
    system_location,
)

__all__ = ["GrantPolicy", "ensure_declared_paths", "never_granted"]

_SAMPLE_NAME = "plugin-name"  # stands in for {plugin} when a root is checked as a path


def _never_granted(path: str, host_paths: list[tuple[str, str]]) -> str | None:
    """Why no root can ever allow ``path``, or None."""
    for root, what in host_paths:
        if overlaps(root, path):
            return f"it overlaps {what} ({root})"
    for code in runtime_code_paths():
        if overlaps(code, path):
            return f"it overlaps code that runs outside the sandbox ({code})"
    location = system_location(path)
    if location is not None:
        return f"it overlaps the system location {location}"
    return None


def never_granted(path: str, plugin_root: str | None = None) -> str | None:
    """Why no policy, whatever its config, grants ``path`` (None if some root could).

    A worker may read such a path before its sandbox is complete: no plugin can change it.
    """
    host_paths = [(p, "the host's private files") for p in host_private_paths()]
    if plugin_root:
        host_paths.append((os.path.realpath(plugin_root), "the plugin directory"))
    return _never_granted(path, host_paths)


@dataclass(frozen=True, slots=True)
class GrantPolicy:
    """Host-side limits on what a manifest may be granted: the ``[policy]`` config section."""

    allowed_roots: tuple[str, ...] = field(default_factory=default_allowed_roots)
    """Filesystem grants (read or write) must lie under one of these. ``{plugin}`` as a whole
    component stands for the asking plugin's name. Default: one data root with a folder per
    plugin (``roots.default_data_root()``). System locations, the runtime, ``/tmp`` itself and
    the host's own files can never be listed."""
    denied_paths: tuple[str, ...] = ()
    """More paths no grant may be, contain or lie under; the config file is always added."""
    max_heap_mb: int = 4096
    max_workers: int = 16
    max_threads: int = 256
    """Cap on a manifest's ``memory.max_threads``."""
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
        for index, root in enumerate(self.allowed_roots):
            problem = _root_problem(root)
            require(problem is None, f"{prefix}.allowed_roots[{index}]", problem or "")
        for index, path in enumerate(self.denied_paths):
            problem = check_declared_path(path)
            require(problem is None, f"{prefix}.denied_paths[{index}]", problem or "")
        require(16 <= self.max_heap_mb <= 1 << 20, f"{prefix}.max_heap_mb", "must be at least 16")
        require(1 <= self.max_workers <= 1024, f"{prefix}.max_workers", "must be from 1 to 1024")
        require(1 <= self.max_threads <= 65536, f"{prefix}.max_threads", "must be from 1 to 65536")
        low, high = self.inbound_ports
        require(
            1 <= low <= high <= 65535,
            f"{prefix}.inbound_ports",
            "must be [low, high] within 1-65535",
        )

    def check_host_paths(
        self, prefix: str, *, plugin_directory: str | None = None, config_file: str | None = None
    ) -> None:
        """ConfigError if an allowed root overlaps the plugin directory or the config file.

        Checked again for every grant (``refusals``), where ``{plugin}`` has its real value.
        """
        named = {"the plugin directory": plugin_directory, "the host's config file": config_file}
        for index, root in enumerate(self.allowed_roots):
            for what, path in named.items():
                if path is None:
                    continue
                if any(overlaps(r, os.path.realpath(path)) for r in _root_forms(root)):
                    raise ConfigError(
                        f"{prefix}.allowed_roots[{index}]",
                        f"{root} overlaps {what} ({path}); plugins would read or change it",
                    )

    def roots_for(self, plugin: str) -> tuple[str, ...]:
        """The allowed roots with ``{plugin}`` replaced by ``plugin``."""
        return tuple(root.replace(PLUGIN_PLACEHOLDER, plugin) for root in self.allowed_roots)

    def _filesystem_refusal(
        self, plugin: str, path: str, host_paths: list[tuple[str, str]]
    ) -> str | None:
        resolved = os.path.realpath(path)
        shown = path if resolved == path else f"{path} (resolves to {resolved})"
        for candidate in dict.fromkeys((path, resolved)):
            why = _never_granted(candidate, host_paths)
            if why is not None:
                return (
                    f"{shown} is never granted: {why}; no policy.allowed_roots entry can allow it"
                )
        roots = self.roots_for(plugin)
        if any(contains(r, path) and contains(os.path.realpath(r), resolved) for r in roots):
            return None
        listed = ", ".join(roots) or "none"
        if resolved != path and any(contains(r, path) for r in roots):
            return f"{shown} leaves the allowed roots ({listed}) through a symlink"
        return (
            f"{shown} is outside the allowed roots ({listed}); "
            f"listing {resolved!r} in policy.allowed_roots would allow it"
        )

    def refusals(self, manifest: Manifest, plugin_root: str | None = None) -> list[PolicyRefused]:
        """Every permission of ``manifest`` that this policy will not grant.

        ``plugin_root`` is the plugin directory: never granted, for reading or writing, because
        it holds every plugin's code and shipped files.
        """
        out: list[PolicyRefused] = []

        def refuse(permission: str, message: str) -> None:
            out.append(PolicyRefused(manifest.name, permission, message))

        host_paths = [(p, "the host's private files") for p in host_private_paths()]
        host_paths += [(os.path.realpath(p), "a path denied by policy") for p in self.denied_paths]
        if plugin_root:
            host_paths.append((os.path.realpath(plugin_root), "the plugin directory"))
        perms = manifest.permissions
        for index, rule in enumerate(perms.filesystem):
            problem = self._filesystem_refusal(manifest.name, rule.path, host_paths)
            if problem is not None:
                refuse(f"$.permissions.filesystem[{index}].path", problem)
        for key, asked, cap in (
            ("max_heap_mb", perms.max_heap_mb, self.max_heap_mb),
            ("max_workers", perms.max_workers, self.max_workers),
            ("max_threads", perms.max_threads, self.max_threads),
        ):
            if asked > cap:
                unit = " MB" if key == "max_heap_mb" else ""
                refuse(
                    f"$.permissions.memory.{key}", f"{asked}{unit} exceeds the host cap of {cap}"
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


def _root_forms(root: str) -> tuple[str, ...]:
    """A root as written and with symlinks resolved ({plugin} filled with a sample name)."""
    sample = root.replace(PLUGIN_PLACEHOLDER, _SAMPLE_NAME)
    return tuple(dict.fromkeys((sample, os.path.realpath(sample))))


def _root_problem(root: str) -> str | None:
    """Why ``root`` cannot be an allowed root, or None."""
    parts = root.split("/")
    if any(("{" in part or "}" in part) and part != PLUGIN_PLACEHOLDER for part in parts):
        return f"{PLUGIN_PLACEHOLDER} is the only placeholder, and only as a whole path component"
    if parts.count(PLUGIN_PLACEHOLDER) > 1:
        return f"{PLUGIN_PLACEHOLDER} may appear once"
    for form in _root_forms(root):
        problem = check_declared_path(form)
        if problem is not None:
            return problem
        if form in SHARED_TEMP:
            return (
                f"{form} itself holds every user's and plugin's files; list a folder inside it "
                f"such as {form}/plugin-data"
            )
        why = _never_granted(form, [])
        if why is not None:
            return f"{root} can never be granted: {why}"
    return None


def ensure_declared_paths(
    manifest: Manifest, policy: GrantPolicy, owner: tuple[int, int] | None = None
) -> list[str]:
    """Make the declared paths that do not exist yet; returns the folders made, in order.

    A declared path the plugin will use (its data folder, say) need not exist before the
    plugin's first load: it is made here, by the host, as a folder (mode 0700), with any
    missing folder between it and its allowed root. It belongs to ``owner`` (uid, gid) when
    given: who the worker is on the host (a root host's workers, in their own user namespace,
    are uid 65534); else to the host's user, as workers without that layer are.
    Only under an allowed root: anything else is refused with ``PolicyRefused`` naming the
    permission (``enforce`` refuses it first when it is called first). Folders are made one
    component at a time through descriptors, never following a symlink, so a plugin that can
    write under the root cannot redirect the creation elsewhere by planting a link.

    A path that does not exist is made as a folder: to grant a file that does not exist yet,
    declare its folder.
    """
    made: list[str] = []
    roots = policy.roots_for(manifest.name)
    for index, rule in enumerate(manifest.permissions.filesystem):
        if os.path.lexists(rule.path):
            continue
        permission = f"$.permissions.filesystem[{index}].path"
        root = next((r for r in roots if contains(r, rule.path)), None)
        if root is None:
            raise PolicyRefused(
                manifest.name,
                permission,
                f"{rule.path} does not exist and lies under no allowed root "
                f"({', '.join(roots) or 'none'}), so the host will not make it",
            )
        try:
            made += _make_beneath(root, rule.path, owner)
        except OSError as exc:
            raise PolicyRefused(
                manifest.name,
                permission,
                f"{rule.path} does not exist and the host could not make it: {exc.strerror or exc}",
            ) from None
    return made


def _make_beneath(root: str, path: str, owner: tuple[int, int] | None = None) -> list[str]:
    """mkdir -p of ``path`` (which lies under ``root``) without following symlinks below it;
    the folders made from ``root`` down (``root`` too, if it was missing) go to ``owner``."""
    made: list[str] = []
    if not os.path.lexists(root):
        os.makedirs(root, mode=0o700)  # the operator's own root: may hold links
        made.append(root)
        if owner is not None:
            os.chown(root, *owner)
    fd = os.open(os.path.realpath(root), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    current = root
    try:
        for part in path[len(root.rstrip("/")) + 1 :].split("/") if path != root else []:
            current = f"{current.rstrip('/')}/{part}"
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
                made.append(current)
                if owner is not None:
                    os.chown(part, *owner, dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                pass
            child = os.open(
                part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return made
