"""Plugin-to-plugin dependencies: version ranges, the manifest's JSON paths, the load check."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from autoweave_plugins.manifest import check_manifest_bytes
from autoweave_plugins.manifest.dependencies import (
    dependency_problem,
    parse_range,
    range_problem,
)
from autoweave_plugins.manifest.model import Manifest


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("^1.2.0", ["1.2.0", "1.9.9"], ["1.1.9", "2.0.0", "2.0.0-beta.1"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
        ("^0.0.3", ["0.0.3"], ["0.0.4"]),
        ("~1.2.0", ["1.2.0", "1.2.7"], ["1.3.0", "1.1.0"]),
        ("1.2.0", ["1.2.0", "1.2.0+build.5"], ["1.2.1"]),
        ("1.x", ["1.0.0", "1.9.0"], ["2.0.0"]),
        ("1.2.*", ["1.2.5"], ["1.3.0"]),
        ("*", ["0.0.1", "99.0.0"], []),
        (">=1.2,<2", ["1.2.0", "1.99.0"], ["2.0.0", "1.1.0"]),
        (">=1.2 <2", ["1.5.0"], ["2.0.0"]),
        ("~=1.4", ["1.4.0", "1.9.0"], ["2.0.0"]),
        ("!=1.5.0", ["1.4.0"], ["1.5.0"]),
        ("<1.0.0 || >=3.0.0", ["0.9.0", "3.1.0"], ["2.0.0"]),
    ],
)
def test_ranges_mean_what_they_say(text: str, inside: list[str], outside: list[str]) -> None:
    wanted = parse_range(text)
    for version in inside:
        assert wanted.contains(version), (text, version)
    for version in outside:
        assert not wanted.contains(version), (text, version)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty alternative"),
        ("1.0 ||", "empty alternative"),
        ("1.0.0 - 2.0.0", "hyphen ranges"),
        ("banana", "not a version"),
        ("^banana", "not a version"),
        ("1.2<2", "cannot read"),
        ("1.*.3", "not a version"),
        (">=banana", "Invalid specifier"),
        (" || ".join(["1"] * 9), "at most 8"),
    ],
)
def test_bad_ranges_say_why(text: str, reason: str) -> None:
    problem = range_problem(text)
    assert problem is not None and reason in problem


def test_a_version_that_pep_440_cannot_read_is_an_error_not_a_match() -> None:
    with pytest.raises(ValueError, match="not a PEP 440 version"):
        parse_range("^1.0.0").contains("1.0.0-custom")


@settings(max_examples=300)
@given(
    st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30)),
    st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30)),
)
def test_caret_and_tilde_follow_npm(
    base: tuple[int, int, int], probe: tuple[int, int, int]
) -> None:
    written = ".".join(map(str, base))
    version = Version(".".join(map(str, probe)))
    lowest = Version(written)
    # caret: the left-most non-zero component stays; tilde: major and minor stay.
    first = next((i for i, part in enumerate(base) if part), 2)
    caret = version >= lowest and probe[: first + 1] == base[: first + 1]
    tilde = version >= lowest and probe[:2] == base[:2]
    assert parse_range(f"^{written}").contains(str(version)) == caret
    assert parse_range(f"~{written}").contains(str(version)) == tilde


@settings(max_examples=300)
@given(st.text(alphabet="0123456789.*^~<>=|+!, x-", max_size=30))
def test_any_string_is_a_range_or_a_reason(text: str) -> None:
    problem = range_problem(text)
    if problem is None:
        parse_range(text).contains("1.0.0")  # a valid range can always judge a version
    else:
        assert problem


def manifest(name: str, version: str = "1.0.0", **dependencies: str) -> Manifest:
    return Manifest(name, version, "main.py", dependencies=dependencies)


def plugins(*manifests: Manifest) -> dict[str, Manifest]:
    return {m.name: m for m in manifests}


def test_met_dependencies_have_no_problem() -> None:
    found = plugins(
        manifest("a", b="^1.0.0"), manifest("b", "1.4.0", c=">=2"), manifest("c", "2.0")
    )
    assert dependency_problem("a", found) is None
    assert dependency_problem("c", found) is None


def test_a_missing_or_mismatched_dependency_names_both_plugins() -> None:
    missing = dependency_problem("a", plugins(manifest("a", b="^1.0.0")))
    assert missing is not None and missing.dependency == "b"
    assert missing.message == "requires plugin 'b' ^1.0.0, which is not present"
    old = dependency_problem("a", plugins(manifest("a", b="^2.0.0"), manifest("b", "1.4.0")))
    assert old is not None
    assert old.message == ("requires plugin 'b' ^2.0.0 (<3,>=2.0.0), but 'b' is version 1.4.0")


def test_a_dependency_that_cannot_load_blocks_its_dependents() -> None:
    found = plugins(manifest("a", b="*"), manifest("b", c=">=2"), manifest("c", "1.0"))
    problem = dependency_problem("a", found)
    assert problem is not None and problem.dependency == "c"
    assert problem.message.startswith("needs 'b', which requires plugin 'c' >=2")


@pytest.mark.parametrize(
    ("graph", "start", "cycle"),
    [
        ({"a": {"a": "*"}}, "a", {"a"}),
        ({"a": {"b": "*"}, "b": {"a": "*"}}, "a", {"a", "b"}),
        ({"a": {"b": "*"}, "b": {"c": "*"}, "c": {"b": "*"}}, "a", {"b", "c"}),
    ],
)
def test_cycles_are_refused(graph: dict[str, dict[str, str]], start: str, cycle: set[str]) -> None:
    problem = dependency_problem(start, {n: manifest(n, **d) for n, d in graph.items()})
    assert problem is not None and set(problem.cycle) == cycle
    assert "dependency cycle" in problem.message


def doc(**fields: Any) -> bytes:
    return json.dumps({"name": "a", "version": "1.0.0", "entry": "main.py", **fields}).encode()


def test_the_validator_names_each_bad_range_by_its_json_path() -> None:
    manifest, issues = check_manifest_bytes(
        doc(dependencies={"good": "^1.2.0", "bad": "1.0.0 - 2.0.0", "odd-one": "banana"})
    )
    assert manifest is None
    assert {i.path: i.message.split(":")[0] for i in issues} == {
        "$.dependencies.bad": "is not a version range",
        "$.dependencies['odd-one']": "is not a version range",
    }
    ok, no_issues = check_manifest_bytes(doc(dependencies={"b": ">=1.2,<2 || ^3.0"}))
    assert no_issues == () and ok is not None and ok.dependencies == {"b": ">=1.2,<2 || ^3.0"}
