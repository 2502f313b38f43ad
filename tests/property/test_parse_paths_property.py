"""The fast (orjson) and exact (json) parse paths: same document, same errors, for any text.

The texts are built from JSON syntax with the number and string shapes where the two libraries
differ (integers past 64 bits, huge exponents, NaN, escapes, duplicate keys), placed where the
validator reads them, so a difference in wording shows up as a difference in issues.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from autoweave_plugins.errors import ManifestIssue
from autoweave_plugins.manifest import Manifest, check_manifest_bytes
from autoweave_plugins.manifest.parse import _DECLINED, _exact_parse, _fast_parse, _reported
from autoweave_plugins.manifest.validate import validate_document

SETTINGS = settings(max_examples=400, deadline=None)

numbers = st.one_of(
    st.integers().map(str),
    st.integers(2**63 - 3, 2**64 + 3).map(str),
    st.integers(-(2**63) - 3, -(2**63) + 3).map(str),
    st.integers(10**17, 10**22).map(str),
    st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][-+]?[0-9]{1,3})?", fullmatch=True),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "-0.0"]),
)
strings = st.one_of(
    st.text(max_size=8).map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.text(max_size=8).map(json.dumps),
    st.sampled_from(['"\\ud800"', '"a\\u0000"', '"n\\u0061me"', '"\\/"']),
)
keys = st.one_of(strings, st.sampled_from(['"name"', '"a"', '"a"', '"n\\u0061me"']))
scalars = st.one_of(numbers, strings, st.sampled_from(["true", "false", "null"]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(keys, inner), max_size=4).map(
            lambda members: "{" + ",".join(f"{k}: {v}" for k, v in members) + "}"
        ),
    ),
    max_leaves=12,
)
BASE = '"name":"a","version":"1.0.0","entry":"m.py"'
TEMPLATES = [
    "{{" + BASE + ',"permissions":{{"memory":{{"max_heap_mb":{0}}}}}}}',
    "{{" + BASE + ',"permissions":{{"network":{{"inbound":{{"port":{0}}}}}}}}}',
    "{{" + BASE + ',"permissions":{{"filesystem":[{{"path":"/tmp/x","mode":{0}}}]}}}}',
    "{{" + BASE + ',"description":{0}}}',
    "{{" + BASE + ',"hooks":{0}}}',
    "{{" + BASE + ",{0}:1}}",
    "{0}",
]
texts = st.builds(
    lambda template, value, layout: layout(template.format(value)),
    st.sampled_from(TEMPLATES),
    values,
    st.sampled_from([str, lambda t: t.replace(",", ",\n  "), lambda t: " " + t + "\n"]),
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types throughout (1 is not 1.0, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return repr(a) == repr(b)


@SETTINGS
@given(texts)
def test_fast_and_exact_paths_give_identical_results(text: str) -> None:
    data = text.encode()
    exact_doc, exact_issues = _exact_parse(data)
    fast_doc = _fast_parse(data)
    if fast_doc is not _DECLINED:
        assert exact_issues == ()
        assert same(fast_doc, exact_doc), (fast_doc, exact_doc)
    expected: tuple[Manifest | None, tuple[ManifestIssue, ...]]
    if exact_issues:
        expected = (None, _reported(exact_issues))
    else:
        manifest, issues = validate_document(exact_doc)
        expected = (manifest, _reported(issues) if issues else issues)
    assert check_manifest_bytes(data) == expected


@SETTINGS
@given(texts)
def test_parse_errors_always_have_line_and_column(text: str) -> None:
    _, issues = _exact_parse(text.encode())
    for issue in issues:
        if issue.path == "$":
            assert issue.line is not None and issue.column is not None, issue
