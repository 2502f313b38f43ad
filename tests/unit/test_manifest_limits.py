"""Hostile manifests: the parse is linear (any 1 MiB document < 100 ms), every error has a place.

Documents are built at growing sizes (64 KiB, 256 KiB, 1 MiB) and the smaller ones are timed
first, so a quadratic parser fails here in seconds instead of running for an hour on 1 MiB.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoweave_plugins.errors import ManifestIssue
from autoweave_plugins.manifest import check_manifest_bytes
from autoweave_plugins.manifest.issues import MAX_ISSUES
from autoweave_plugins.manifest.parse import (
    MAX_DEPTH,
    MAX_INTEGER_DIGITS,
    MAX_MANIFEST_BYTES,
    MAX_VALUES,
)

BUDGET = 0.100  # seconds for any document up to MAX_MANIFEST_BYTES
SIZES = (64 << 10, 256 << 10, MAX_MANIFEST_BYTES)
HEAD = b'{"name":"a","version":"1.0.0","entry":"m.py",'


def fill(head: bytes, unit: bytes, tail: bytes = b"") -> Callable[[int], bytes]:
    """A document of ``size`` bytes: head, then unit repeated, then tail."""

    def build(size: int) -> bytes:
        return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail

    return build


ADVERSARIAL: dict[str, Callable[[int], bytes]] = {
    "unterminated string of escaped quotes": fill(b'{"name": "', b'\\"'),
    "unterminated string": fill(b'{"name": "', b"a"),
    "quotes": fill(b"", b'"'),
    "backslashes": fill(b"", b"\\"),
    "escaped quote pairs in a string": fill(b'{"name": "', b'\\\\\\"', b'"}'),
    "deep arrays": fill(b"", b"["),
    "deep objects": fill(b"", b'{"a":'),
    "deep then closers": fill(b"[" * MAX_DEPTH, b"]"),
    "oscillating depth": fill(b"[" * (MAX_DEPTH - 1), b"[]"),
    "many integers": fill(b"[", b"0,", b"0]"),
    "many empty objects": fill(b"[", b"{},", b"{}]"),
    "many empty arrays": fill(b"[", b"[],", b"[]]"),
    "many strings": fill(b"[", b'"",', b'""]'),
    "strings without commas": fill(b"[", b'"" ', b"]"),
    "many keys": fill(b"{", b'"a":0,', b'"a":0}'),
    "many escapes": fill(HEAD + b'"description":"', b"\\n", b'"}'),
    "many unicode escapes": fill(HEAD + b'"description":"', b"\\u00e9", b'"}'),
    "many lone surrogates": fill(HEAD + b'"description":"', b"\\ud800", b'"}'),
    "brackets in a string": fill(HEAD + b'"description":"', b"[{", b'"}'),
    "long integer": fill(b"[", b"1", b"]"),
    "long negative integer": fill(b"[-", b"9", b"]"),
    "long fraction": fill(b"[0.", b"1", b"]"),
    "long exponent": fill(b"[1e", b"9", b"]"),
    "NaN at the end": fill(b'{"d":"', b"x", b'","e":NaN}'),
    "commas": fill(b"", b","),
    "minus signs": fill(b"", b"-"),
    "digits": fill(b"", b"0"),
    "nested unterminated string": fill(b"[" * (MAX_DEPTH - 1) + b'"', b'\\"'),
    "long keys": fill(b"{", b'"' + b"k" * 200 + b'":{"' + b"q" * 200 + b'":0},', b'"z":0}'),
    "unknown keys with hints": fill(b"{", b'"nmae":0,"nam":0,', b'"x":0}'),
    "values under the limit, long strings": lambda size: (
        b'{"d":['
        + b",".join([b'"' + b"x" * (size // MAX_VALUES) + b'"'] * (MAX_VALUES - 10))
        + b"]}"
    )[:size],
}


def best_time(data: bytes, runs: int = 3) -> tuple[float, tuple[ManifestIssue, ...]]:
    """Fastest of ``runs`` parses (the minimum filters out a busy machine), and the issues."""
    best = float("inf")
    issues: tuple[ManifestIssue, ...] = ()
    for _ in range(runs):
        started = time.perf_counter()
        _, issues = check_manifest_bytes(data)
        best = min(best, time.perf_counter() - started)
    return best, issues


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_documents_parse_in_linear_time(name: str) -> None:
    for size in SIZES:
        data = ADVERSARIAL[name](size)
        assert len(data) <= MAX_MANIFEST_BYTES
        elapsed, issues = best_time(data)
        assert elapsed < BUDGET, f"{name}: {len(data)} bytes took {elapsed * 1000:.0f} ms"
        assert issues, f"{name} was accepted"
        assert len(issues) <= MAX_ISSUES
        assert all(len(str(issue)) < 2000 for issue in issues), issues[0]


json_bits = st.sampled_from(
    (
        *(b'"', b"\\", b'\\"', b"[", b"]", b"{", b"}", b",", b":", b" ", b"\n", b"0", b"1", b"-"),
        *(b"e", b".", b"NaN", b"Infinity", b"true", b"null", b'"a":', b"\\u00e9", b"\\ud800"),
        *(b"\xff", b"\xc3\xa9"),
    )
)


@settings(max_examples=25, deadline=None)
@given(unit=st.lists(json_bits, min_size=1, max_size=12).map(b"".join), head=json_bits)
def test_any_megabyte_document_parses_within_budget(unit: bytes, head: bytes) -> None:
    """Generated 1 MiB texts: a random snippet of JSON syntax, repeated."""
    data = fill(head, unit)(MAX_MANIFEST_BYTES)
    elapsed, _ = best_time(data, runs=2)
    assert elapsed < BUDGET, f"{data[:60]!r}... took {elapsed * 1000:.0f} ms"


# --------------------------------------------------------------------------- error positions


def only_issue(data: bytes) -> ManifestIssue:
    manifest, issues = check_manifest_bytes(data)
    assert manifest is None and len(issues) == 1, issues
    return issues[0]


@pytest.mark.parametrize(
    ("literal", "column"),
    [("NaN", 18), ("Infinity", 18), ("-Infinity", 18), ("[1, NaN]", 22)],
)
def test_nan_and_infinity_errors_have_line_and_column(literal: str, column: int) -> None:
    data = HEAD[:-1] + b',\n  "description": ' + literal.encode() + b"}"
    issue = only_issue(data)
    assert (issue.path, issue.line, issue.column) == ("$", 2, column)
    assert "not a JSON number" in issue.message


def test_nan_inside_strings_is_not_mistaken_for_the_error() -> None:
    data = b'{"NaN": "Infinity -Infinity NaN",\n "x": [1,\n  -Infinity]}'
    issue = only_issue(data)
    assert (issue.line, issue.column) == (3, 3)
    assert "-Infinity" in issue.message


@pytest.mark.parametrize("sign", ["", "-"])
def test_over_long_integers_have_line_and_column(sign: str) -> None:
    digits = "7" * (MAX_INTEGER_DIGITS + 1)
    data = f'{{"name": "a",\n "n": [1.5e{"9" * 700}, 0.{"1" * 700}, {sign}{digits}]}}'.encode()
    issue = only_issue(data)
    assert (issue.path, issue.line) == ("$", 2)
    assert issue.column == data.split(b"\n")[1].index(f"{sign}{digits}".encode()) + 1
    assert f"{MAX_INTEGER_DIGITS + 1} digits" in issue.message
    assert "set_int_max_str_digits" not in issue.message


def test_longest_integer_is_read_and_validated() -> None:
    data = HEAD + b'"permissions":{"memory":{"max_heap_mb":' + b"9" * MAX_INTEGER_DIGITS + b"}}}"
    [issue] = check_manifest_bytes(data)[1]
    assert issue.path == "$.permissions.memory.max_heap_mb"
    assert issue.message.startswith("must be from 16 to 4096 (got 999")


@pytest.mark.parametrize("escape", [False, True])
def test_a_64_bit_overflow_is_worded_the_same_on_both_paths(escape: bool) -> None:
    # A backslash anywhere sends the document down the exact path; without one orjson reads it.
    description = '"\\u0061"' if escape else '"a"'
    data = (
        HEAD
        + (
            f'"description":{description},"permissions":'
            '{"memory":{"max_heap_mb":18446744073709551616}}}'
        ).encode()
    )
    [issue] = check_manifest_bytes(data)[1]
    assert issue == ManifestIssue(
        "$.permissions.memory.max_heap_mb", "must be from 16 to 4096 (got 18446744073709551616)"
    )


def test_too_deep_error_points_at_the_first_bracket_too_deep() -> None:
    data = b'{"a": "[[[[",\n "b": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    issue = only_issue(data)
    assert "deeper than 64" in issue.message
    assert (issue.line, issue.column) == (2, 6 + MAX_DEPTH)  # the first '[' is level 2


def test_value_limit_is_exact_and_points_at_the_first_value_past_it() -> None:
    def doc(values: int) -> bytes:
        # the object, its three strings and the description array are five values
        return HEAD + b'"description":[' + b",".join([b"0"] * (values - 5)) + b"]}"

    [at_limit] = check_manifest_bytes(doc(MAX_VALUES))[1]
    assert at_limit.path == "$.description"
    data = doc(MAX_VALUES + 1)
    issue = only_issue(data)
    assert f"more than {MAX_VALUES} values" in issue.message
    assert (issue.line, issue.column) == (1, data.rindex(b",") + 1)


def test_commas_and_brackets_in_strings_do_not_count() -> None:
    doc = {**json.loads(HEAD[:-1] + b"}"), "description": 1, "x": ",[{" * 4000}
    for indent in (None, 1):
        data = json.dumps(doc, indent=indent).encode()
        issues = check_manifest_bytes(data)[1]
        assert [i.path for i in issues] == ["$.x", "$.description"]
        assert check_manifest_bytes(data.replace(b"a", b"\\u0061")) == (None, issues)


# --------------------------------------------------------------------------- bounded reports


def test_issues_are_capped_with_a_count_of_the_rest() -> None:
    data = HEAD + b",".join(b'"x%d":0' % i for i in range(250)) + b"}"
    issues = check_manifest_bytes(data)[1]
    assert len(issues) == MAX_ISSUES
    assert issues[-1] == ManifestIssue("$", f"and {250 - MAX_ISSUES + 1} more issues")


def test_long_keys_are_shortened_in_paths() -> None:
    key = "k" * 10_000
    data = HEAD + b'"' + key.encode() + b'":{"' + key.encode() + b'":1,"' + key.encode() + b'":2}}'
    issues = check_manifest_bytes(data)[1]
    assert issues and all(len(i.path) < 200 for i in issues)
    assert issues[0].path.startswith("$['kkkk") and "…" in issues[0].path


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("\\ud800", "$['\\ud800']"),
        ("a\\u0000b", "$['a\\x00b']"),
        ("\\n", "$['\\n']"),
        ("it's", "$['it\\'s']"),
        ("back\\\\slash", "$['back\\\\slash']"),
    ],
)
def test_keys_are_escaped_in_paths(key: str, path: str) -> None:
    issues = check_manifest_bytes(HEAD + b'"' + key.encode() + b'":1}')[1]
    assert path in [i.path for i in issues]
    for issue in issues:
        assert issue.path.isprintable() and issue.message.isprintable()
        str(issue).encode("utf-8")
