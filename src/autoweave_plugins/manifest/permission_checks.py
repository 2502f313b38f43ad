"""The ``permissions`` section of a manifest: filesystem rules, network (outbound URL patterns,
inbound port), USB ids and memory, each checked with its JSON path (DESIGN §4's rules).

A mixin of ``validate``'s validator, split out so each file keeps one part of the manifest.
"""

from __future__ import annotations

from typing import Any

from autoweave_plugins.errors import InvalidURL
from autoweave_plugins.manifest.checks import Checks
from autoweave_plugins.manifest.issues import shown
from autoweave_plugins.manifest.model import (
    DEFAULT_MAX_HEAP_MB,
    DEFAULT_MAX_THREADS,
    DEFAULT_MAX_WORKERS,
    Permissions,
)
from autoweave_plugins.permissions.inbound import MAX_PORT, MIN_PORT, InboundSpec
from autoweave_plugins.permissions.paths import (
    DECLARABLE_PATH,
    FileMode,
    PathRule,
    check_declared_path,
)
from autoweave_plugins.permissions.urls import URLPattern
from autoweave_plugins.permissions.usb import USBFilter, normalize_usb_id

__all__ = ["NO_PERMISSIONS", "PermissionChecks"]

MAX_FILESYSTEM_RULES = 64
MAX_OUTBOUND_PATTERNS = 128
MAX_USB_IDS = 256
HEAP_RANGE = (16, 4096)
WORKERS_RANGE = (1, 16)
THREADS_RANGE = (1, 4096)
PERMISSION_KEYS = frozenset(("filesystem", "network", "usb", "memory"))
FS_RULE_KEYS = frozenset(("path", "mode"))
NETWORK_KEYS = frozenset(("outbound", "inbound"))
INBOUND_KEYS = frozenset(("port", "interface"))
USB_KEYS = frozenset(("vendor_ids", "product_ids"))
MEMORY_KEYS = frozenset(("max_heap_mb", "max_workers", "max_threads"))
MODES = tuple(m.value for m in FileMode)
MODE_BY_NAME: dict[object, FileMode] = {m.value: m for m in FileMode}
NO_USB = USBFilter()
NO_PERMISSIONS = Permissions()


class PermissionChecks(Checks):
    """The checks of ``permissions`` and its parts."""

    __slots__ = ()

    def filesystem(self, value: object) -> tuple[PathRule, ...]:
        items = self.array(value, "$.permissions.filesystem", MAX_FILESYSTEM_RULES)
        rules: list[PathRule] = []
        seen: set[str] = set()
        for index, item in enumerate(items or ()):
            if type(item) is dict and item.keys() == FS_RULE_KEYS:
                path, raw_mode = item["path"], item["mode"]
                mode = MODE_BY_NAME.get(raw_mode) if type(raw_mode) is str else None
                if (
                    type(path) is str
                    and mode is not None
                    and path not in seen
                    and DECLARABLE_PATH.match(path)
                ):
                    seen.add(path)
                    rules.append(PathRule(path, mode))
                    continue
            at = f"$.permissions.filesystem[{index}]"
            doc = self.members(item, at, FS_RULE_KEYS)
            if doc is None:
                continue
            path = mode = None
            if "path" not in doc:
                self.fail(f"{at}.path", "is required: the absolute path to grant")
            else:
                path = self.string(doc["path"], f"{at}.path")
                problem = check_declared_path(path) if path is not None else None
                if problem is not None:
                    self.fail(f"{at}.path", f"{problem} (got {shown(path)})")
                    path = None
                elif path is not None and path in seen:
                    self.fail(f"{at}.path", f"{path!r} is declared twice")
                    path = None
            if "mode" not in doc:
                self.fail(f"{at}.mode", f"is required: one of {', '.join(MODES)}")
            else:
                raw = doc["mode"]
                if raw in MODES and type(raw) is str:
                    mode = FileMode(raw)
                else:
                    self.fail(f"{at}.mode", f"must be one of {', '.join(MODES)} (got {shown(raw)})")
            if path is not None and mode is not None:
                seen.add(path)
                # check_declared_path already passed, so PathRule cannot raise here.
                rules.append(PathRule(path, mode))
        return tuple(rules)

    def outbound(self, value: object) -> tuple[URLPattern, ...]:
        items = self.array(value, "$.permissions.network.outbound", MAX_OUTBOUND_PATTERNS)
        patterns: list[URLPattern] = []
        for index, item in enumerate(items or ()):
            at = f"$.permissions.network.outbound[{index}]"
            text = self.string(item, at, 2048)
            if text is None:
                continue
            try:
                patterns.append(URLPattern.parse(text))
            except InvalidURL as exc:
                self.fail(at, f"{exc.reason} (got {shown(text)})")
        return tuple(patterns)

    def inbound(self, value: object) -> InboundSpec | None:
        at = "$.permissions.network.inbound"
        doc = self.members(value, at, INBOUND_KEYS)
        if doc is None:
            return None
        port = None
        if "port" not in doc:
            self.fail(f"{at}.port", f"is required: a port from {MIN_PORT} to {MAX_PORT}")
        else:
            port = self.integer(doc["port"], f"{at}.port", (MIN_PORT, MAX_PORT))
        interface = doc.get("interface", "localhost")
        if interface not in ("localhost", "all") or type(interface) is not str:
            self.fail(f"{at}.interface", f"must be 'localhost' or 'all' (got {shown(interface)})")
            return None
        if port is None:
            return None
        return InboundSpec(port, "all" if interface == "all" else "localhost")

    def network(self, value: object) -> tuple[tuple[URLPattern, ...], InboundSpec | None]:
        doc = self.members(value, "$.permissions.network", NETWORK_KEYS)
        if doc is None:
            return (), None
        outbound = self.outbound(doc["outbound"]) if "outbound" in doc else ()
        inbound = self.inbound(doc["inbound"]) if "inbound" in doc else None
        return outbound, inbound

    def usb_ids(self, doc: dict[str, Any], key: str) -> frozenset[str]:
        at = f"$.permissions.usb.{key}"
        ids: set[str] = set()
        for index, raw in enumerate(self.array(doc[key], at, MAX_USB_IDS) or ()):
            normal = normalize_usb_id(raw)
            if normal is None:
                self.fail(
                    f"{at}[{index}]",
                    f"must be '0x' and 4 hex digits, e.g. '0x1a2b' (got {shown(raw)})",
                )
            else:
                ids.add(normal)
        return frozenset(ids)

    def usb(self, value: object) -> USBFilter:
        doc = self.members(value, "$.permissions.usb", USB_KEYS)
        if doc is None:
            return NO_USB
        vendors = self.usb_ids(doc, "vendor_ids") if "vendor_ids" in doc else frozenset()
        products = self.usb_ids(doc, "product_ids") if "product_ids" in doc else frozenset()
        if products and not vendors and "vendor_ids" not in doc:
            self.fail(
                "$.permissions.usb.product_ids",
                "needs vendor_ids: a product id means nothing without its vendor",
            )
        return USBFilter(vendors, products)

    def memory(self, value: object) -> tuple[int, int, int]:
        doc = self.members(value, "$.permissions.memory", MEMORY_KEYS)
        heap, workers, threads = DEFAULT_MAX_HEAP_MB, DEFAULT_MAX_WORKERS, DEFAULT_MAX_THREADS
        if doc is not None:
            if "max_heap_mb" in doc:
                heap = (
                    self.integer(doc["max_heap_mb"], "$.permissions.memory.max_heap_mb", HEAP_RANGE)
                    or heap
                )
            if "max_workers" in doc:
                workers = (
                    self.integer(
                        doc["max_workers"], "$.permissions.memory.max_workers", WORKERS_RANGE
                    )
                    or workers
                )
            if "max_threads" in doc:
                threads = (
                    self.integer(
                        doc["max_threads"], "$.permissions.memory.max_threads", THREADS_RANGE
                    )
                    or threads
                )
        return heap, workers, threads

    def permissions(self, value: object) -> Permissions:
        doc = self.members(value, "$.permissions", PERMISSION_KEYS)
        if not doc:
            return NO_PERMISSIONS
        filesystem = self.filesystem(doc["filesystem"]) if "filesystem" in doc else ()
        outbound, inbound = self.network(doc["network"]) if "network" in doc else ((), None)
        usb = self.usb(doc["usb"]) if "usb" in doc else NO_USB
        heap, workers, threads = (
            self.memory(doc["memory"])
            if "memory" in doc
            else (DEFAULT_MAX_HEAP_MB, DEFAULT_MAX_WORKERS, DEFAULT_MAX_THREADS)
        )
        return Permissions(filesystem, outbound, inbound, usb, heap, workers, threads)
