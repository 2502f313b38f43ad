"""Generated paths against the filesystem matching rules of DESIGN §4."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoweave_plugins.errors import InvalidPath
from autoweave_plugins.permissions.paths import (
    Access,
    FileMode,
    PathPolicy,
    PathRule,
    check_declared_path,
)

SETTINGS = settings(max_examples=200, deadline=None)

# Everything lives under a top-level directory that does not exist, so no generated path can pass
# through a real symlink and realpath() is purely lexical here.
BASE = "/autoweave-nonexistent-7f3a"
assert not os.path.lexists(BASE)

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-.~ \u00e9\u4e2d"
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=8).filter(lambda s: s not in {".", ".."})
components = st.lists(names, min_size=1, max_size=5)
suffixes = st.text(alphabet=NAME_CHARS, min_size=1, max_size=6)
accesses = st.sampled_from(list(Access))
modes = st.sampled_from(list(FileMode))


def join(parts: list[str]) -> str:
    return BASE + "/" + "/".join(parts)


@SETTINGS
@given(parts=components, suffix=suffixes, rest=st.lists(names, max_size=3), access=accesses)
def test_containment_is_by_component(
    parts: list[str], suffix: str, rest: list[str], access: Access
) -> None:
    base = join(parts)
    policy = PathPolicy([PathRule.parse(base, FileMode.READWRITE)])
    # a sibling that merely starts with the same characters is never granted
    for sibling in (base + suffix, base + "-" + suffix, base + suffix + "/" + "/".join(rest)):
        d = policy.check(sibling.rstrip("/"), access)
        assert not d.allowed, sibling
        assert d.rules == ()
    # the directory itself and anything below it is
    inside = "/".join([base, *rest]) if rest else base
    d = policy.check(inside, access)
    assert d.allowed
    assert d.resolved == inside
    assert policy.require(inside + "/", access) == inside
    # and nothing above it
    parent = base.rsplit("/", 1)[0]
    assert not policy.check(parent, access).allowed


@SETTINGS
@given(parts=components, rest=st.lists(names, min_size=1, max_size=4), access=accesses)
def test_dot_dot_never_escapes(parts: list[str], rest: list[str], access: Access) -> None:
    base = join(parts)
    policy = PathPolicy([PathRule.parse(base, FileMode.READWRITE)])
    # climb one more level than we went down: always outside
    climb = "/".join([base, *rest, *[".."] * (len(rest) + 1), "escape"])
    assert not policy.check(climb, access).allowed
    # climb exactly as far as we went down: still inside
    stay = "/".join([base, *rest, *[".."] * len(rest), "stay"])
    assert policy.check(stay, access).resolved == base + "/stay"
    assert policy.check(stay, access).allowed


@st.composite
def rule_sets(draw: st.DrawFn) -> list[tuple[list[str], FileMode]]:
    """Rules over a small tree so that they nest, overlap and repeat."""
    tree = st.lists(st.sampled_from(["a", "b", "ab", "a-b"]), min_size=1, max_size=3)
    return draw(st.lists(st.tuples(tree, modes), max_size=5))


@SETTINGS
@given(
    rules=rule_sets(),
    target=st.lists(st.sampled_from(["a", "b", "ab", "a-b", "c"]), min_size=1, max_size=4),
    access=accesses,
)
def test_rights_are_the_union_of_containing_rules(
    rules: list[tuple[list[str], FileMode]], target: list[str], access: Access
) -> None:
    policy = PathPolicy([PathRule.parse(join(parts), mode) for parts, mode in rules])
    containing = [(parts, mode) for parts, mode in rules if target[: len(parts)] == parts]
    expected = any(
        mode is FileMode.READWRITE or mode.value == access.value for _, mode in containing
    )
    d = policy.check(join(target), access)
    assert d.allowed == expected
    if expected:
        assert d.reason == "granted"
        assert all(rule.mode.allows(access) for rule in d.rules)
        assert len(d.rules) == sum(1 for _, m in containing if m.allows(access))
    else:
        assert len(d.rules) == len(containing)
        with pytest.raises(PermissionError):
            policy.require(join(target), access)
    # adding a rule never takes a right away
    wider = PathPolicy([*policy.rules, PathRule.parse(join(target[:1]), FileMode.READ)])
    if expected:
        assert wider.check(join(target), access).allowed
    # rule order does not matter
    assert PathPolicy(list(reversed(policy.rules))).check(join(target), access).allowed == expected


def _oracle_declared_ok(path: str) -> bool:
    if "\x00" in path or not path.startswith("/") or path == "/":
        return False
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        return False
    return parts[0] != "proc"


declared_pieces = st.sampled_from(
    ["a", "b", "proc", "procs", ".", "..", "...", ".x", "", "\x00", "x y", "\u00e9", "tmp"]
)
declared_paths = st.lists(declared_pieces, max_size=5).map("/".join) | st.lists(
    declared_pieces, max_size=5
).map(lambda parts: "/" + "/".join(parts))


@SETTINGS
@given(path=declared_paths)
def test_declared_path_agrees_with_a_simple_oracle(path: str) -> None:
    problem = check_declared_path(path)
    assert (problem is None) == _oracle_declared_ok(path), (path, problem)
    if problem is not None:
        with pytest.raises(InvalidPath):
            PathRule.parse(path, FileMode.READ)


@SETTINGS
@given(
    parts=components, where=st.integers(min_value=0), junk=st.sampled_from(["..", ".", "", "\x00"])
)
def test_declared_path_mutations_are_refused(parts: list[str], where: int, junk: str) -> None:
    good = join(parts)
    assert check_declared_path(good) is None
    mutated = list(parts)
    mutated.insert(where % (len(parts) + 1), junk)
    assert check_declared_path(join(mutated)) is not None
    assert check_declared_path(good + "/") is not None
    assert check_declared_path("/" + good) is not None
    assert check_declared_path(good[1:]) is not None


@SETTINGS
@given(rest=st.lists(names, max_size=4), access=accesses, lead=st.sampled_from(["/", "//", "/./"]))
def test_proc_is_always_refused(rest: list[str], access: Access, lead: str) -> None:
    path = lead + "/".join(["proc", *rest])
    policy = PathPolicy([PathRule("/tmp", FileMode.READWRITE)])
    d = policy.check(path, access)
    assert not d.allowed
    assert d.rules == ()
    assert check_declared_path("/" + "/".join(["proc", *rest])) is not None


@SETTINGS
@given(
    path=st.text(alphabet="ab/.\x00 ", max_size=12),
    access=accesses,
)
def test_malformed_requests_raise(path: str, access: Access) -> None:
    policy = PathPolicy([PathRule.parse(BASE, FileMode.READWRITE)])
    if "\x00" in path or not path.startswith("/"):
        with pytest.raises(InvalidPath):
            policy.check(path, access)
    else:
        d = policy.check(path, access)
        assert d.resolved.startswith("/")
        assert not d.allowed  # nothing outside BASE is granted, and these never reach it
