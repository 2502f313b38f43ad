"""Schema and semantic validation of a parsed manifest document, in one pass.

Hand-written rather than run through a JSON Schema engine: a generic engine costs ~100 µs per
manifest and cannot say "write '/tmp/x', not '/tmp/x/'" or check URL patterns by DESIGN §4.
The published schema (``autoweave.plugin.schema.json``) describes the same rules for editors;
a test proves the two agree on the conformance corpus and on generated documents.

Every problem is collected, not only the first (up to ``MAX_ISSUES``), each with a JSON path
such as ``$.permissions.filesystem[0].mode`` (``issues`` says how keys and values are shown).
"""

from __future__ import annotations

import difflib
import keyword
import re
from typing import Any

from autoweave_plugins.errors import InvalidURL, ManifestIssue
from autoweave_plugins.manifest.dependencies import range_problem
from autoweave_plugins.manifest.issues import MAX_ISSUES, json_type, key_path, shown
from autoweave_plugins.manifest.model import (
    DEFAULT_MAX_HEAP_MB,
    DEFAULT_MAX_THREADS,
    DEFAULT_MAX_WORKERS,
    Author,
    Manifest,
    Permissions,
)
from autoweave_plugins.manifest.requirements import (
    MAX_REQUIREMENT_LENGTH,
    MAX_REQUIREMENTS,
    requirement_problem,
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

__all__ = ["MAX_ISSUES", "validate_document"]

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}\Z")
# semver.org's recommended expression, anchored with \Z so a trailing newline never passes.
SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z",
    re.ASCII,
)
HOOK_RE = re.compile(r"on[A-Z][A-Za-z0-9]*\Z")
KNOWN_HOOKS = ("onLoad", "onUnload", "onUSBAttach", "onUSBDetach", "onJobReceived")
"""The hooks the host itself calls; any other well-formed name is a custom hook."""
HOOK_TARGET_RE = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_]*\Z")
# A relative path of non-empty components, none '.' or '..', ending in a file named '*.py'.
ENTRY_RE = re.compile(r"(?:(?!\.{1,2}/)[^/\\\x00]+/)*(?!\.py\Z)[^/\\\x00]+\.py\Z")
KEYWORDS = frozenset(keyword.kwlist)
VERSION_RANGE_RE = re.compile(r"[0-9A-Za-z.*^~<>=|+!,\- ]{1,128}\Z")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")

MAX_TEXT = 4096
MAX_FILESYSTEM_RULES = 64
MAX_OUTBOUND_PATTERNS = 128
MAX_USB_IDS = 256
MAX_HOOKS = 128
MAX_DEPENDENCIES = 256
HEAP_RANGE = (16, 4096)
WORKERS_RANGE = (1, 16)
THREADS_RANGE = (1, 4096)

TOP_KEYS = frozenset((
    "$schema", "name", "version", "description", "author", "entry", "permissions", "hooks",
    "dependencies", "requirements",
))  # fmt: skip
AUTHOR_KEYS = frozenset(("name", "email", "url"))
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


class _Validator:
    """Collects issues while building the manifest records."""

    __slots__ = ("issues",)

    def __init__(self) -> None:
        self.issues: list[ManifestIssue] = []

    def fail(self, path: str, message: str) -> None:
        self.issues.append(ManifestIssue(path, message))

    @property
    def full(self) -> bool:
        """Enough issues to report; further ones are only counted, without costly hints."""
        return len(self.issues) >= MAX_ISSUES

    def members(self, value: object, path: str, allowed: frozenset[str]) -> dict[str, Any] | None:
        if type(value) is not dict:
            self.fail(path, f"must be an object, not {json_type(value)}")
            return None
        if not value.keys() <= allowed:
            for key in value:
                if key not in allowed:
                    close = [] if self.full else difflib.get_close_matches(key, allowed, n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    self.fail(
                        key_path(path, key), f"unknown field; {hint}allowed: {', '.join(allowed)}"
                    )
        return value

    def string(self, value: object, path: str, limit: int = MAX_TEXT) -> str | None:
        if type(value) is not str:
            self.fail(path, f"must be a string, not {json_type(value)}")
            return None
        if len(value) > limit:
            self.fail(path, f"must be at most {limit} characters (got {len(value)})")
            return None
        return value

    def integer(self, value: object, path: str, bounds: tuple[int, int]) -> int | None:
        low, high = bounds
        if type(value) is not int:
            self.fail(path, f"must be an integer from {low} to {high}, not {json_type(value)}")
            return None
        if not low <= value <= high:
            self.fail(path, f"must be from {low} to {high} (got {value})")
            return None
        return value

    def array(self, value: object, path: str, limit: int) -> list[Any] | None:
        if type(value) is not list:
            self.fail(path, f"must be an array, not {json_type(value)}")
            return None
        if len(value) > limit:
            self.fail(path, f"must have at most {limit} items (got {len(value)})")
            return None
        return value

    # --- sections -------------------------------------------------------------------------

    def name(self, value: object) -> str | None:
        if type(value) is str and NAME_RE.match(value):
            return value
        text = self.string(value, "$.name", 64)
        if text is not None and not NAME_RE.match(text):
            self.fail(
                "$.name",
                "must be 1-64 lowercase letters, digits or '-', starting with a letter or digit "
                f"(got {shown(text)})",
            )
            return None
        return text

    def version(self, value: object) -> str | None:
        if type(value) is str and len(value) <= 256 and SEMVER_RE.match(value):
            return value
        text = self.string(value, "$.version", 256)
        if text is not None and not SEMVER_RE.match(text):
            self.fail("$.version", f"must be a semantic version like '1.2.3' (got {shown(text)})")
            return None
        return text

    def entry(self, value: object) -> str | None:
        if type(value) is str and len(value) <= 1024 and ENTRY_RE.match(value):
            return value
        text = self.string(value, "$.entry", 1024)
        if text is None or ENTRY_RE.match(text):
            return text
        problem = None
        if "\x00" in text:
            problem = "must not contain a NUL byte"
        elif "\\" in text:
            problem = "must use '/' as separator, not a backslash"
        elif text.startswith("/"):
            problem = "must be relative to the plugin folder, not an absolute path"
        elif any(part == ".." for part in text.split("/")):
            problem = "must stay inside the plugin folder: '..' is not allowed"
        elif any(part in ("", ".") for part in text.split("/")):
            problem = "must be a normalised relative path such as 'main.py' or 'src/main.py'"
        elif not text.endswith(".py") or text.rsplit("/", 1)[-1] == ".py":
            problem = "must be a Python file ending in '.py'"
        if problem is not None:
            self.fail("$.entry", f"{problem} (got {shown(text)})")
            return None
        return text

    def author(self, value: object) -> Author | None:
        doc = self.members(value, "$.author", AUTHOR_KEYS)
        if doc is None:
            return None
        name = self.string(doc["name"], "$.author.name", 256) if "name" in doc else None
        email = self.string(doc["email"], "$.author.email", 256) if "email" in doc else None
        if email is not None and not EMAIL_RE.match(email):
            self.fail("$.author.email", f"must be an e-mail address (got {shown(email)})")
        url = self.string(doc["url"], "$.author.url", 2048) if "url" in doc else None
        if url is not None and not url.startswith(("https://", "http://")):
            self.fail("$.author.url", f"must be an http(s) URL (got {shown(url)})")
        return Author(name, email, url)

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

    def hooks(self, value: object) -> dict[str, str]:
        doc = self.mapping(value, "$.hooks")  # keys are checked one by one below
        if doc is None:
            return {}
        if len(doc) > MAX_HOOKS:
            self.fail("$.hooks", f"must declare at most {MAX_HOOKS} hooks (got {len(doc)})")
            return {}
        for hook, target in doc.items():
            known = _known_spelling(hook)
            if known is not None and known != hook:
                # Well formed, but the host calls hooks by exact name: it would never run.
                self.fail(
                    key_path("$.hooks", hook),
                    f"the host never calls {shown(hook)}; did you mean {known!r}?",
                )
                continue
            if (
                HOOK_RE.match(hook)
                and type(target) is str
                and HOOK_TARGET_RE.match(target)
                and target not in KEYWORDS
            ):
                continue
            at = key_path("$.hooks", hook)
            if not HOOK_RE.match(hook):
                self.fail(
                    at,
                    f"hook names are 'on' and a capitalised word, like 'onLoad' (got "
                    f"{shown(hook)}){_hook_hint(hook)}",
                )
            elif type(target) is not str:
                self.fail(at, f"must name a function as a string, not {json_type(target)}")
            elif (
                not HOOK_TARGET_RE.match(target)
                or keyword.iskeyword(target)
                or target.startswith("__")
            ):
                self.fail(
                    at,
                    f"must be the name of a function in the entry module, like 'initialize' (got {shown(target)})",
                )
        return doc

    def mapping(self, value: object, path: str) -> dict[str, Any] | None:
        if type(value) is not dict:
            self.fail(path, f"must be an object, not {json_type(value)}")
            return None
        return value

    def dependencies(self, value: object) -> dict[str, str]:
        doc = self.mapping(value, "$.dependencies")
        if doc is None:
            return {}
        if len(doc) > MAX_DEPENDENCIES:
            self.fail("$.dependencies", f"must list at most {MAX_DEPENDENCIES} plugins")
            return {}
        for dep, spec in doc.items():
            at = key_path("$.dependencies", dep)
            if not NAME_RE.match(dep):
                self.fail(at, "dependency keys are plugin names: lowercase letters, digits and '-'")
            elif type(spec) is not str or not VERSION_RANGE_RE.match(spec):
                self.fail(at, f"must be a version range string like '^1.2.0' (got {shown(spec)})")
            else:
                problem = range_problem(spec)
                if problem is not None:
                    self.fail(at, f"is not a version range: {problem} (got {shown(spec)})")
        return doc

    def requirements(self, value: object) -> tuple[str, ...]:
        items = self.array(value, "$.requirements", MAX_REQUIREMENTS)
        valid: list[str] = []
        for index, item in enumerate(items or ()):
            at = f"$.requirements[{index}]"
            text = self.string(item, at, MAX_REQUIREMENT_LENGTH)
            problem = requirement_problem(text) if text is not None else None
            if problem is not None:
                self.fail(at, f"{problem} (got {shown(text)})")
            elif text is not None:
                valid.append(text)
        return tuple(valid)


def _folded(text: str) -> str:
    return text.lower().replace("_", "").replace("-", "")


def _known_spelling(hook: object) -> str | None:
    """The host's hook that ``hook`` spells differently only in case (or '_'), if any."""
    if not isinstance(hook, str):
        return None
    return next((k for k in KNOWN_HOOKS if _folded(k) == _folded(hook)), None)


def _hook_hint(hook: object) -> str:
    if not isinstance(hook, str):
        return ""
    folded = {_folded(k): k for k in KNOWN_HOOKS}
    close = difflib.get_close_matches(_folded(hook), folded, n=1, cutoff=0.8)
    return f"; did you mean {folded[close[0]]!r}?" if close else ""


def validate_document(doc: object) -> tuple[Manifest | None, tuple[ManifestIssue, ...]]:
    """Validate a parsed JSON document. Returns the manifest, or None and every issue found."""
    v = _Validator()
    if type(doc) is not dict:
        return None, (
            ManifestIssue("$", f"the manifest must be a JSON object, not {json_type(doc)}"),
        )
    if len(doc) > len(TOP_KEYS) or any(k not in TOP_KEYS for k in doc):
        v.members(doc, "$", TOP_KEYS)
    for required in ("name", "version", "entry"):
        if required not in doc:
            v.fail(f"$.{required}", "is required")
    name = v.name(doc["name"]) if "name" in doc else None
    version = v.version(doc["version"]) if "version" in doc else None
    entry = v.entry(doc["entry"]) if "entry" in doc else None
    description = v.string(doc["description"], "$.description") if "description" in doc else None
    author = v.author(doc["author"]) if "author" in doc else None
    permissions = v.permissions(doc["permissions"]) if "permissions" in doc else NO_PERMISSIONS
    hooks = v.hooks(doc["hooks"]) if "hooks" in doc else {}
    dependencies = v.dependencies(doc["dependencies"]) if "dependencies" in doc else {}
    schema = v.string(doc["$schema"], "$.$schema", 2048) if "$schema" in doc else None
    requirements = v.requirements(doc["requirements"]) if "requirements" in doc else ()
    if v.issues or name is None or version is None or entry is None:
        return None, tuple(v.issues)
    manifest = Manifest(
        name, version, entry, description, author, permissions, hooks, dependencies, schema, doc,
        requirements=requirements,
    )  # fmt: skip
    return manifest, ()
