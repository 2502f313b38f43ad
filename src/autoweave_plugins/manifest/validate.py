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

from autoweave_plugins.errors import ManifestIssue
from autoweave_plugins.manifest.dependencies import range_problem
from autoweave_plugins.manifest.issues import MAX_ISSUES, json_type, key_path, shown
from autoweave_plugins.manifest.model import (
    Author,
    Manifest,
)
from autoweave_plugins.manifest.permission_checks import NO_PERMISSIONS, PermissionChecks
from autoweave_plugins.manifest.requirements import (
    MAX_REQUIREMENT_LENGTH,
    MAX_REQUIREMENTS,
    requirement_problem,
)

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

MAX_HOOKS = 128
MAX_DEPENDENCIES = 256

TOP_KEYS = frozenset((
    "$schema", "name", "version", "description", "author", "entry", "permissions", "hooks",
    "dependencies", "requirements",
))  # fmt: skip
AUTHOR_KEYS = frozenset(("name", "email", "url"))


class _Validator(PermissionChecks):
    """Builds the manifest records, section by section, collecting every issue."""

    __slots__ = ()

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
