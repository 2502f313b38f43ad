"""Filesystem permission rules (DESIGN §4): declared paths, containment, modes, symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoweave_plugins.errors import InvalidPath, PermissionDenied
from autoweave_plugins.permissions.paths import (
    Access,
    FileMode,
    PathDecision,
    PathPolicy,
    PathRule,
    check_declared_path,
)

R, W = Access.READ, Access.WRITE


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A real directory with no symlinks above it (tmp_path itself may sit under one)."""
    return tmp_path.resolve()


def policy(*rules: tuple[str | Path, FileMode]) -> PathPolicy:
    return PathPolicy([PathRule.parse(str(path), mode) for path, mode in rules])


# --------------------------------------------------------------------------- check_declared_path


@pytest.mark.parametrize(
    "path",
    [
        "/tmp/plugin-data",
        "/data",
        "/home/user/.config/app",
        "/var/lib/x y/z",
        "/opt/caf\u00e9",
        "/procfs",
        "/proc-data",
        "/srv/proc",
        "/a/.hidden/..b/b..",
        "/a/...",
    ],
)
def test_declared_path_accepted(path: str) -> None:
    assert check_declared_path(path) is None
    assert PathRule.parse(path, FileMode.READ) == PathRule(path, FileMode.READ)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("", "absolute"),
        ("relative/path", "absolute"),
        ("./data", "absolute"),
        ("~/data", "absolute"),
        ("data/", "absolute"),
        ("/a/../etc", ".."),
        ("/..", ".."),
        ("/a/..", ".."),
        ("/a/b/../../..", ".."),
        ("/a\x00b", "NUL"),
        ("/tmp/data\x00", "NUL"),
        ("\x00/abs", "NUL"),
        ("/tmp/data/", "normalised"),
        ("/tmp//data", "normalised"),
        ("//tmp/data", "normalised"),
        ("///tmp", "normalised"),
        ("/tmp/./data", "normalised"),
        ("/./tmp", "normalised"),
        ("/tmp/.", "normalised"),
        ("/", "root"),
        ("/proc", "/proc"),
        ("/proc/self", "/proc"),
        ("/proc/1/root", "/proc"),
        ("/proc/self/fd/0", "/proc"),
    ],
)
def test_declared_path_refused(path: str, fragment: str) -> None:
    problem = check_declared_path(path)
    assert problem is not None
    assert fragment in problem
    with pytest.raises(InvalidPath) as info:
        PathRule.parse(path, FileMode.READWRITE)
    assert info.value.path == path
    assert info.value.reason == problem


@pytest.mark.parametrize("mode", ["read", "write", "readwrite"])
def test_rule_parse_accepts_mode_names(mode: str) -> None:
    assert PathRule.parse("/data", mode) == PathRule("/data", FileMode(mode))


@pytest.mark.parametrize("mode", ["exec", "READ", "rw", "", "read "])
def test_rule_parse_refuses_unknown_modes(mode: str) -> None:
    with pytest.raises(ValueError, match=repr(mode)):
        PathRule.parse("/data", mode)


def test_normalisation_hint_names_the_normal_form() -> None:
    assert check_declared_path("/tmp//data/") == "must be normalised: write '/tmp/data'"
    assert check_declared_path("//tmp") == "must be normalised: write '/tmp'"


# --------------------------------------------------------------------------- FileMode


@pytest.mark.parametrize(
    ("mode", "read", "write"),
    [
        (FileMode.READ, True, False),
        (FileMode.WRITE, False, True),
        (FileMode.READWRITE, True, True),
    ],
)
def test_file_mode_allows(mode: FileMode, read: bool, write: bool) -> None:
    assert mode.allows(R) is read
    assert mode.allows(W) is write


def test_file_mode_values() -> None:
    assert {m.value for m in FileMode} == {"read", "write", "readwrite"}
    assert FileMode("readwrite") is FileMode.READWRITE


# --------------------------------------------------------------------------- containment


def test_component_boundary(root: Path) -> None:
    data = root / "plugin-data"
    p = policy((data, FileMode.READWRITE))
    assert p.check(str(data), R).allowed
    assert p.check(str(data) + "/", R).allowed
    assert p.check(str(data / "file.txt"), W).allowed
    assert p.check(str(data / "a" / "b" / "c"), W).allowed
    assert not p.check(str(root / "plugin-data-secret"), R).allowed
    assert not p.check(str(root / "plugin-data-secret" / "x"), R).allowed
    assert not p.check(str(root / "plugin-dat"), R).allowed
    assert not p.check(str(root / "plugin-data.bak"), R).allowed
    assert not p.check(str(root / "plugin-data\u00e9"), R).allowed
    assert not p.check(str(root), R).allowed
    assert not p.check("/", R).allowed
    assert not p.check("/etc/passwd", R).allowed


def test_dot_dot_cannot_escape(root: Path) -> None:
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    p = policy((data, FileMode.READWRITE))
    escape = f"{data}/../secret"
    d = p.check(escape, R)
    assert not d.allowed
    assert d.resolved == str(root / "secret")
    assert not p.check(f"{data}/sub/../../data-secret", R).allowed
    assert not p.check(f"{data}/{'../' * 40}etc/passwd", R).allowed
    # staying inside is fine: the check is on the normalised, resolved path
    inside = p.check(f"{data}/sub/../file", W)
    assert inside.allowed
    assert inside.resolved == str(data / "file")


def test_redundant_separators_are_normalised(root: Path) -> None:
    data = root / "data"
    p = policy((data, FileMode.READ))
    assert p.check(f"{data}//x///y/", R).resolved == str(data / "x" / "y")
    assert p.check(f"/{data}/./x", R).allowed
    assert not p.check(f"{data}-x//y", R).allowed


def test_decision_fields(root: Path) -> None:
    data = root / "data"
    rule = PathRule(str(data), FileMode.READ)
    p = PathPolicy([rule])
    d = p.check(str(data / "f"), R)
    assert d == PathDecision(True, str(data / "f"), str(data / "f"), R, (rule,), "granted")


def test_no_rules_grants_nothing(root: Path) -> None:
    p = PathPolicy([])
    assert p.rules == ()
    d = p.check(str(root), R)
    assert not d.allowed
    assert d.rules == ()
    assert d.reason == "no filesystem permission covers this path"


# --------------------------------------------------------------------------- modes


@pytest.mark.parametrize(
    ("mode", "read", "write"),
    [
        (FileMode.READ, True, False),
        (FileMode.WRITE, False, True),
        (FileMode.READWRITE, True, True),
    ],
)
def test_modes(root: Path, mode: FileMode, read: bool, write: bool) -> None:
    p = policy((root / "d", mode))
    target = str(root / "d" / "f")
    assert p.check(target, R).allowed is read
    assert p.check(target, W).allowed is write


def test_wrong_mode_reason_names_the_declared_rule(root: Path) -> None:
    data = root / "data"
    rule = PathRule(str(data), FileMode.READ)
    p = PathPolicy([rule])
    d = p.check(str(data / "f"), W)
    assert not d.allowed
    assert d.rules == (rule,)
    assert d.reason == f"write is not granted; the path is declared only as {data} (read)"


# --------------------------------------------------------------------------- several rules


def test_rules_combine_as_a_union_of_rights(root: Path) -> None:
    a = root / "a"
    read_a = PathRule(str(a), FileMode.READ)
    write_ab = PathRule(str(a / "b"), FileMode.WRITE)
    p = PathPolicy([read_a, write_ab])
    deep = str(a / "b" / "c")
    # under both rules: read from the outer one, write from the inner one
    assert p.check(deep, R).allowed
    assert p.check(deep, W).allowed
    assert p.check(deep, R).rules == (read_a,)
    assert p.check(deep, W).rules == (write_ab,)
    # under the outer rule only
    assert p.check(str(a / "c"), R).allowed
    assert not p.check(str(a / "c"), W).allowed
    # a sibling of the inner rule's name is not inside it
    assert not p.check(str(a / "b-c"), W).allowed
    # the inner rule grants nothing above itself
    assert not p.check(str(a), W).allowed


def test_inner_rule_never_narrows_an_outer_one(root: Path) -> None:
    outer = PathRule(str(root / "a"), FileMode.READWRITE)
    inner = PathRule(str(root / "a" / "b"), FileMode.READ)
    p = PathPolicy([inner, outer])
    assert p.check(str(root / "a" / "b" / "x"), W).allowed
    assert p.check(str(root / "a" / "b" / "x"), W).rules == (outer,)
    assert p.check(str(root / "a" / "b" / "x"), R).rules == (inner, outer)


def test_same_path_declared_twice_adds_rights(root: Path) -> None:
    p = policy((root / "d", FileMode.READ), (root / "d", FileMode.WRITE))
    assert p.check(str(root / "d" / "f"), R).allowed
    assert p.check(str(root / "d" / "f"), W).allowed


def test_wrong_mode_reason_lists_every_containing_rule(root: Path) -> None:
    p = policy(
        (root / "a", FileMode.WRITE),
        (root / "a" / "b", FileMode.WRITE),
        (root / "z", FileMode.READ),
    )
    d = p.check(str(root / "a" / "b" / "f"), R)
    assert not d.allowed
    assert [r.path for r in d.rules] == [str(root / "a"), str(root / "a" / "b")]
    assert f"{root / 'a'} (write)" in d.reason
    assert f"{root / 'a' / 'b'} (write)" in d.reason
    assert str(root / "z") not in d.reason


# --------------------------------------------------------------------------- symlinks


def test_symlink_inside_pointing_outside_is_refused(root: Path) -> None:
    data = root / "data"
    data.mkdir()
    secret = root / "secret"
    secret.mkdir()
    (secret / "key").write_text("x")
    (data / "link").symlink_to(secret)
    (data / "filelink").symlink_to(secret / "key")
    p = policy((data, FileMode.READWRITE))
    d = p.check(str(data / "link" / "key"), R)
    assert not d.allowed
    assert d.resolved == str(secret / "key")
    assert not p.check(str(data / "filelink"), R).allowed
    with pytest.raises(PermissionDenied) as info:
        p.require(str(data / "filelink"), R)
    assert info.value.permission == "filesystem"
    assert f"resolves to {secret / 'key'}" in info.value.message


def test_symlink_to_root_does_not_escape(root: Path) -> None:
    data = root / "data"
    data.mkdir()
    (data / "up").symlink_to("/")
    (data / "rel").symlink_to("../..")
    p = policy((data, FileMode.READWRITE))
    assert not p.check(str(data / "up" / "etc" / "passwd"), R).allowed
    assert not p.check(str(data / "rel" / "x"), R).allowed


def test_dangling_symlink_pointing_outside_is_refused(root: Path) -> None:
    data = root / "data"
    data.mkdir()
    (data / "new").symlink_to(root / "elsewhere" / "new-file")
    p = policy((data, FileMode.WRITE))
    d = p.check(str(data / "new"), W)
    assert not d.allowed
    assert d.resolved == str(root / "elsewhere" / "new-file")


def test_relative_symlink_staying_inside_is_granted(root: Path) -> None:
    data = root / "data"
    (data / "real").mkdir(parents=True)
    (data / "alias").symlink_to("real")
    p = policy((data, FileMode.READ))
    d = p.check(str(data / "alias" / "f"), R)
    assert d.allowed
    assert d.resolved == str(data / "real" / "f")
    assert p.require(str(data / "alias" / "f"), R) == str(data / "real" / "f")


def test_symlink_outside_pointing_inside_is_granted(root: Path) -> None:
    data = root / "data"
    data.mkdir()
    (root / "shortcut").symlink_to(data)
    p = policy((data, FileMode.READ))
    d = p.check(str(root / "shortcut" / "f"), R)
    assert d.allowed
    assert d.resolved == str(data / "f")


def test_rule_path_that_is_a_symlink_is_resolved(root: Path) -> None:
    real = root / "real"
    real.mkdir()
    (root / "declared").symlink_to(real)
    rule = PathRule(str(root / "declared"), FileMode.READWRITE)
    assert rule.path == str(root / "declared")  # the manifest text is kept
    p = PathPolicy([rule])
    assert p.check(str(real / "f"), W).allowed
    assert p.check(str(root / "declared" / "f"), W).allowed
    assert not p.check(str(root / "declared-x"), W).allowed
    assert not p.check(str(root / "real-x"), W).allowed


def test_symlink_swap_between_checks_is_seen(root: Path) -> None:
    data = root / "data"
    data.mkdir()
    (root / "outside").mkdir()
    link = data / "link"
    link.symlink_to(data / "inside")
    p = policy((data, FileMode.READ))
    assert p.check(str(link / "f"), R).allowed
    link.unlink()
    link.symlink_to(root / "outside")
    assert not p.check(str(link / "f"), R).allowed


def test_symlink_loop_does_not_escape(root: Path) -> None:
    data = root / "data"
    data.mkdir()
    (data / "a").symlink_to(data / "b")
    (data / "b").symlink_to(data / "a")
    p = policy((data, FileMode.READ))
    d = p.check(str(data / "a" / "x"), R)
    assert d.resolved.startswith(str(data) + "/")
    outside = policy((root / "other", FileMode.READ))
    assert not outside.check(str(data / "a" / "x"), R).allowed


# --------------------------------------------------------------------------- /proc


@pytest.mark.parametrize(
    "path",
    [
        "/proc",
        "/proc/",
        "/proc/self/mem",
        "/proc/1/environ",
        "/proc/self/root/etc/passwd",
        "/proc/self/cwd",
        "/proc/self/fd/0",
        "//proc/self/mem",
        "/proc//self/root/tmp",
        "/tmp/../proc/self/root/tmp",
        "/./proc/self/root/tmp/x",
    ],
)
def test_proc_is_refused(path: str) -> None:
    # even a policy whose rules would otherwise contain it
    p = policy(("/tmp", FileMode.READWRITE))
    d = p.check(path, R)
    assert not d.allowed
    assert d.rules == ()
    assert "/proc" in d.reason


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a mounted /proc")
def test_proc_magic_links_are_refused_even_when_their_target_is_granted(root: Path) -> None:
    data = root / "data"
    data.mkdir()
    (data / "f").write_text("x")
    p = policy((data, FileMode.READWRITE), ("/etc", FileMode.READ))
    assert p.check(str(data / "f"), R).allowed
    for via in (
        f"/proc/self/root{data}/f",
        f"/proc/{os.getpid()}/root{data}/f",
        "/proc/self/root/etc",
    ):
        d = p.check(via, R)
        assert not d.allowed, via
        assert d.reason == "paths under /proc are refused"
    with open(data / "f") as handle:
        d = p.check(f"/proc/self/fd/{handle.fileno()}", R)
        assert d.resolved == str(data / "f")
        assert not d.allowed


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs a mounted /proc")
def test_symlink_into_proc_is_refused(root: Path) -> None:
    data = root / "data"
    data.mkdir()
    (data / "me").symlink_to("/proc/self")
    (data / "mem").symlink_to("/proc/self/mem")
    p = policy((data, FileMode.READWRITE))
    for target in (data / "me" / "environ", data / "mem", data / "me"):
        d = p.check(str(target), R)
        assert not d.allowed, target
        assert d.resolved.startswith("/proc/")
        assert "/proc" in d.reason
        with pytest.raises(PermissionDenied):
            p.require(str(target), W)


def test_proc_lookalikes_are_ordinary_paths(root: Path) -> None:
    p = policy(("/procfs", FileMode.READ))
    assert p.check("/procfs/x", R).allowed
    assert not p.check("/proc/x", R).allowed


# --------------------------------------------------------------------------- malformed requests


@pytest.mark.parametrize(
    "path",
    ["", "relative", "./x", "../etc/passwd", "~/x", "x/../../etc", "/tmp/a\x00b", "\x00", "/\x00"],
)
def test_malformed_request_raises(path: str) -> None:
    p = policy(("/tmp", FileMode.READWRITE))
    with pytest.raises(InvalidPath):
        p.check(path, R)
    with pytest.raises(InvalidPath):
        p.require(path, W)


def test_non_string_request_raises() -> None:
    p = policy(("/tmp", FileMode.READWRITE))
    with pytest.raises(InvalidPath):
        p.check(b"/tmp/x", R)  # type: ignore[arg-type]
    with pytest.raises(InvalidPath):
        p.check(None, R)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- require


def test_require_returns_the_resolved_path(root: Path) -> None:
    data = root / "data"
    p = policy((data, FileMode.READWRITE))
    assert p.require(f"{data}/x/../y", W) == str(data / "y")


def test_require_raises_permission_denied(root: Path) -> None:
    data = root / "data"
    p = policy((data, FileMode.READ))
    with pytest.raises(PermissionDenied) as info:
        p.require(str(data / "f"), W)
    assert isinstance(info.value, PermissionError)
    assert info.value.permission == "filesystem"
    assert info.value.message.startswith(f"write {data / 'f'}: write is not granted")
    with pytest.raises(PermissionDenied) as outside:
        p.require(str(root / "data-secret"), R)
    assert "no filesystem permission covers this path" in outside.value.message
    assert "resolves to" not in outside.value.message
