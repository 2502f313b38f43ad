"""Turning manifest bytes into a validated ``Manifest``, fast, and refusing hostile documents.

Two paths, one result. The fast path serves ordinary manifests: ``orjson`` parses (it rejects
invalid UTF-8 itself), and two byte counts prove there was nothing orjson would have hidden:

* no duplicate keys: without backslashes every '"' in the text delimits a string, so the text
  and ``orjson.dumps`` of the result hold the same number of quotes unless a duplicate member
  was dropped;
* no deep nesting: a document with at most 64 '{' and '[' bytes cannot nest deeper than 64.

Anything else (a backslash, many brackets, any parse error) takes the slow path: strict UTF-8
decoding, a nesting scan that runs before any object is built, and ``json`` with a pairs hook
that records duplicate keys. It is exact and reports line and column. Both paths feed the
same validator, so they cannot disagree on what is valid.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson

from autoweave_plugins.errors import ManifestError, ManifestIssue
from autoweave_plugins.manifest.model import Manifest
from autoweave_plugins.manifest.validate import key_path, validate_document

__all__ = ["MAX_DEPTH", "MAX_MANIFEST_BYTES", "check_manifest_bytes", "parse_manifest_bytes"]

MAX_MANIFEST_BYTES = 1 << 20
MAX_DEPTH = 64

_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
# Maps each bracket to +1/-1 as signed bytes once strings are gone: depth is a prefix sum.
_DEPTH_TABLE = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))

Result = tuple[Manifest | None, tuple[ManifestIssue, ...]]


class _Duplicates(dict[str, Any]):
    """A JSON object that remembers which keys it saw twice."""

    __slots__ = ("duplicates",)

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    marked = _Duplicates(pairs)
    marked.duplicates = [k for k, _ in pairs if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
    return marked


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _too_deep(text: str) -> int | None:
    """Index in ``text`` where nesting first exceeds MAX_DEPTH, or None. Builds no objects."""
    skeleton = _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKETS)
    steps = array("b", skeleton.translate(_DEPTH_TABLE))
    if max(accumulate(steps), default=0) <= MAX_DEPTH:
        return None
    depth = 0
    for m in _STRING_OR_BRACKET.finditer(text):
        lexeme = m.group()
        if lexeme in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                return m.start()
        elif lexeme in ("]", "}"):
            depth -= 1
    return 0


def _tree_issues(node: Any, path: str, out: list[ManifestIssue]) -> None:
    """Duplicate keys and lone surrogates, found after the slow-path parse."""
    if isinstance(node, dict):
        for key in getattr(node, "duplicates", ()):
            out.append(
                ManifestIssue(
                    key_path(path, key), f"duplicate key {key!r}: each key may appear once"
                )
            )
        for key, value in node.items():
            _check_text(key, path, out)
            _tree_issues(value, key_path(path, key), out)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _tree_issues(value, f"{path}[{index}]", out)
    elif isinstance(node, str):
        _check_text(node, path, out)


def _check_text(text: str, path: str, out: list[ManifestIssue]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        out.append(ManifestIssue(path, "contains a lone surrogate escape (\\ud800-\\udfff)"))


def _slow_parse(data: bytes) -> tuple[Any, tuple[ManifestIssue, ...]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = data[: exc.start].decode("utf-8", "replace")
        line, column = _position(prefix, len(prefix))
        bad = data[exc.start : exc.start + 1].hex()
        return None, (
            ManifestIssue(
                "$", f"not valid UTF-8: byte 0x{bad} at offset {exc.start}", line, column
            ),
        )
    deep = _too_deep(text)
    if deep is not None:
        line, column = _position(text, deep)
        return None, (ManifestIssue("$", f"nested deeper than {MAX_DEPTH} levels", line, column),)
    try:
        doc = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return None, (ManifestIssue("$", f"not valid JSON: {exc.msg}", exc.lineno, exc.colno),)
    except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
        return None, (ManifestIssue("$", f"not valid JSON: {exc}"),)
    issues: list[ManifestIssue] = []
    _tree_issues(doc, "$", issues)
    return doc, tuple(issues)


def check_manifest_bytes(data: bytes) -> Result:
    """Parse and validate. Returns the manifest, or None and every issue found."""
    if len(data) > MAX_MANIFEST_BYTES:
        return None, (
            ManifestIssue(
                "$", f"is {len(data)} bytes; a manifest may be at most {MAX_MANIFEST_BYTES}"
            ),
        )
    doc: Any = None
    fast = b"\\" not in data and data.count(b"{") + data.count(b"[") <= MAX_DEPTH
    if fast:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            fast = False
        else:
            fast = data.count(b'"') == orjson.dumps(doc).count(b'"')
    if not fast:
        doc, issues = _slow_parse(data)
        if issues:
            return None, issues
    return validate_document(doc)


def parse_manifest_bytes(data: bytes, source: str | Path | None = None) -> Manifest:
    """Parse and validate, raising ``ManifestError`` with every issue when invalid."""
    manifest, issues = check_manifest_bytes(data)
    if manifest is None:
        raise ManifestError(source, issues)
    return manifest
