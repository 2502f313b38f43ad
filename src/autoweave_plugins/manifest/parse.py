"""Turning manifest bytes into a validated ``Manifest``: fast, exact, and linear in the input.

Two paths, one result. The exact path defines it: strict UTF-8 decoding, the structural bounds
of ``structure`` (checked before any object is built), then ``json`` with hooks that record
duplicate keys and refuse what a manifest cannot hold (NaN, Infinity, integers too long to
convert under any interpreter setting), every parse error with its line and column.

The fast path serves ordinary manifests with ``orjson`` (~1 us), and only when cheap byte counts
prove its result is the one the exact path would build:

* no backslash: then every '"' delimits a string, so the text and ``orjson.dumps`` of the result
  hold the same number of quotes unless a duplicate member was dropped, and no escape can hide a
  lone surrogate;
* at most 64 '{' and '[' bytes (so no deeper nesting) and, with ',', fewer than MAX_VALUES;
* no run of 19 digits: orjson turns integers beyond 64 bits into floats, ``json`` keeps them
  exact, and the validator's messages differ for the two;
* orjson accepts the text (anything it refuses, the exact path explains).

So the paths cannot disagree on what is valid or on what an error says. Every step is linear in
the input, and the worst 1 MiB document parses in tens of milliseconds (``tests/unit/
test_manifest_limits.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson

from autoweave_plugins.errors import ManifestError, ManifestIssue
from autoweave_plugins.manifest.issues import MAX_ISSUES, key_path, printable
from autoweave_plugins.manifest.model import Manifest
from autoweave_plugins.manifest.structure import (
    MAX_DEPTH,
    MAX_VALUES,
    first_outside_strings,
    position,
    structure_problem,
)
from autoweave_plugins.manifest.validate import validate_document

__all__ = [
    "MAX_DEPTH",
    "MAX_INTEGER_DIGITS",
    "MAX_MANIFEST_BYTES",
    "MAX_VALUES",
    "check_manifest_bytes",
    "parse_manifest_bytes",
]

MAX_MANIFEST_BYTES = 1 << 20
MAX_INTEGER_DIGITS = 640
"""Longest integer literal read. 640 is the interpreter's ``str_digits_check_threshold``: no
setting of ``sys.set_int_max_str_digits`` refuses to convert it, and converting it is cheap."""

Result = tuple[Manifest | None, tuple[ManifestIssue, ...]]

_DECLINED = object()
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 19
# What the hooks below refuse, as it appears in the text: a constant, or a long integer literal
# (its first digit not preceded by part of a number, and no fraction or exponent after it).
_UNREPRESENTABLE = re.compile(
    rf"(?P<constant>NaN|-?Infinity)|(?<![0-9.eE+-])-?(?P<digits>[0-9]{{{MAX_INTEGER_DIGITS + 1},}}+)(?![.eE])"
)


class _Unrepresentable(ValueError):
    """``json`` read a literal a manifest cannot hold; the text is searched for where."""


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
    raise _Unrepresentable(name)


def _parse_int(literal: str) -> int:
    if len(literal) - literal.startswith("-") > MAX_INTEGER_DIGITS:
        raise _Unrepresentable(literal)
    return int(literal)


def _unrepresentable_issue(text: str) -> ManifestIssue:
    found = first_outside_strings(text, _UNREPRESENTABLE)
    if found is None:  # json saw the literal, so it is there; stay truthful if it were not
        return ManifestIssue("$", "not valid JSON: NaN, Infinity or an over-long integer")
    line, column = position(text, found.start())
    digits = found.group("digits")
    if digits is None:
        message = f"not valid JSON: {found.group()} is not a JSON number; use a number or null"
    else:
        message = (
            f"an integer of {len(digits)} digits is too long; "
            f"at most {MAX_INTEGER_DIGITS} digits are read"
        )
    return ManifestIssue("$", message, line, column)


def _tree_issues(node: Any, path: str, out: list[ManifestIssue]) -> None:
    """Duplicate keys and lone surrogates, found after the exact parse. Builds a child's path
    only when the child is a container or has an issue: paths can be long, children many."""
    if isinstance(node, dict):
        for key in getattr(node, "duplicates", ()):
            out.append(
                ManifestIssue(key_path(path, key), "duplicate key: each key may appear once")
            )
        for key, value in node.items():
            if not _encodable(key):
                out.append(ManifestIssue(key_path(path, key), _SURROGATE_IN_KEY))
            if isinstance(value, dict | list):
                _tree_issues(value, key_path(path, key), out)
            elif isinstance(value, str) and not _encodable(value):
                out.append(ManifestIssue(key_path(path, key), _SURROGATE))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, dict | list):
                _tree_issues(value, f"{path}[{index}]", out)
            elif isinstance(value, str) and not _encodable(value):
                out.append(ManifestIssue(f"{path}[{index}]", _SURROGATE))


_SURROGATE = "contains a lone surrogate escape (\\ud800-\\udfff), which is not text"
_SURROGATE_IN_KEY = "this key contains a lone surrogate escape (\\ud800-\\udfff), which is not text"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fast_parse(data: bytes) -> Any:
    """orjson's document when it is provably the exact path's, else ``_DECLINED``."""
    if b"\\" in data:
        return _DECLINED
    opens = data.count(b"{") + data.count(b"[")
    if opens > MAX_DEPTH or opens + data.count(b",") >= MAX_VALUES:
        return _DECLINED
    if _LONG_DIGIT_RUN in data.translate(_DIGITS_AS_ZERO):
        return _DECLINED
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _DECLINED
    if data.count(b'"') != orjson.dumps(doc).count(b'"'):
        return _DECLINED
    return doc


def _exact_parse(data: bytes) -> tuple[Any, tuple[ManifestIssue, ...]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = data[: exc.start].decode("utf-8", "replace")
        line, column = position(prefix, len(prefix))
        bad = data[exc.start : exc.start + 1].hex()
        return None, (
            ManifestIssue(
                "$", f"not valid UTF-8: byte 0x{bad} at offset {exc.start}", line, column
            ),
        )
    problem = structure_problem(text)
    if problem is not None:
        message, index = problem
        return None, (ManifestIssue("$", message, *position(text, index)),)
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except json.JSONDecodeError as exc:
        return None, (ManifestIssue("$", f"not valid JSON: {exc.msg}", exc.lineno, exc.colno),)
    except _Unrepresentable:
        return None, (_unrepresentable_issue(text),)
    issues: list[ManifestIssue] = []
    _tree_issues(doc, "$", issues)
    return doc, tuple(issues)


def _reported(issues: tuple[ManifestIssue, ...]) -> tuple[ManifestIssue, ...]:
    """At most MAX_ISSUES issues, every one printable (they reach terminals, logs and JSON)."""
    if len(issues) > MAX_ISSUES:
        more = len(issues) - MAX_ISSUES + 1
        issues = (*issues[: MAX_ISSUES - 1], ManifestIssue("$", f"and {more} more issues"))
    if all(i.path.isprintable() and i.message.isprintable() for i in issues):
        return issues
    return tuple(
        ManifestIssue(printable(i.path), printable(i.message), i.line, i.column) for i in issues
    )


def check_manifest_bytes(data: bytes) -> Result:
    """Parse and validate. Returns the manifest, or None and every issue found."""
    if len(data) > MAX_MANIFEST_BYTES:
        return None, (
            ManifestIssue(
                "$", f"is {len(data)} bytes; a manifest may be at most {MAX_MANIFEST_BYTES}"
            ),
        )
    doc = _fast_parse(data)
    if doc is _DECLINED:
        doc, issues = _exact_parse(data)
        if issues:
            return None, _reported(issues)
    manifest, issues = validate_document(doc)
    return manifest, _reported(issues) if issues else issues


def parse_manifest_bytes(data: bytes, source: str | Path | None = None) -> Manifest:
    """Parse and validate, raising ``ManifestError`` with every issue when invalid."""
    manifest, issues = check_manifest_bytes(data)
    if manifest is None:
        raise ManifestError(source, issues)
    return manifest
