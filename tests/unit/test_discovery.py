"""Discovery: depth, ignore globs, symlink escapes, duplicate names, entry checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoweave_plugins.discovery import discover
from autoweave_plugins.errors import DiscoveryError
from autoweave_plugins.manifest import ManifestCache
from tests.conftest import MakePlugin


def test_finds_plugins_at_depth_one_and_two(tmp_path: Path, make_plugin: MakePlugin) -> None:
    make_plugin("alpha")
    make_plugin("beta", folder="group/beta")
    make_plugin("gamma", folder="a/b/gamma")  # depth 3: beyond the default
    found = discover(tmp_path / "plugins")
    assert sorted(found.plugins) == ["alpha", "beta"]
    assert found.problems == []
    assert sorted(discover(tmp_path / "plugins", max_depth=3).plugins) == ["alpha", "beta", "gamma"]


def test_does_not_descend_into_a_plugin(tmp_path: Path, make_plugin: MakePlugin) -> None:
    outer = make_plugin("outer")
    make_plugin("inner", root=outer)
    assert sorted(discover(tmp_path / "plugins").plugins) == ["outer"]


def test_ignore_globs(tmp_path: Path, make_plugin: MakePlugin) -> None:
    make_plugin("kept")
    make_plugin("hidden", folder=".hidden")
    make_plugin("vendored", folder="node_modules/vendored")
    make_plugin("disabled", folder="disabled-one")
    found = discover(tmp_path / "plugins", ignore=(".*", "node_modules", "disabled-*"))
    assert sorted(found.plugins) == ["kept"]


def test_symlink_leaving_the_root_is_refused(tmp_path: Path, make_plugin: MakePlugin) -> None:
    outside = make_plugin("outside", root=tmp_path / "elsewhere")
    (tmp_path / "plugins").mkdir()
    os.symlink(outside, tmp_path / "plugins" / "link")
    found = discover(tmp_path / "plugins")
    assert found.plugins == {}
    [problem] = found.problems
    assert (
        problem.folder.endswith("link")
        and "outside the plugin directory" in problem.issues[0].message
    )


def test_symlink_inside_the_root_is_followed(tmp_path: Path, make_plugin: MakePlugin) -> None:
    make_plugin("real", folder="store/real")
    os.symlink(tmp_path / "plugins" / "store" / "real", tmp_path / "plugins" / "alias")
    found = discover(tmp_path / "plugins")
    # both routes reach the same plugin: one is kept, the other is a duplicate
    assert list(found.plugins) == ["real"]
    assert "duplicate plugin name" in found.problems[0].issues[0].message


def test_duplicate_names_name_both_folders(tmp_path: Path, make_plugin: MakePlugin) -> None:
    make_plugin("same", folder="a-first")
    make_plugin("same", folder="b-second")
    found = discover(tmp_path / "plugins")
    assert found.plugins["same"].folder.endswith("a-first")
    [problem] = found.problems
    message = problem.issues[0].message
    assert problem.issues[0].path == "$.name" and "a-first" in message and "b-second" in message


def test_invalid_manifest_is_a_problem_not_an_exception(
    tmp_path: Path, make_plugin: MakePlugin
) -> None:
    make_plugin("good")
    bad = make_plugin("bad")
    (bad / "autoweave.plugin.json").write_text('{"name": "bad"')
    found = discover(tmp_path / "plugins")
    assert list(found.plugins) == ["good"]
    assert found.problems[0].issues[0].line is not None


def test_entry_must_exist_and_stay_inside(tmp_path: Path, make_plugin: MakePlugin) -> None:
    missing = make_plugin("missing")
    (missing / "main.py").unlink()
    escaping = make_plugin("escaping", entry="src/main.py")
    (escaping / "src" / "main.py").unlink()
    (tmp_path / "secret.py").write_text("x = 1")
    os.symlink(tmp_path / "secret.py", escaping / "src" / "main.py")
    found = discover(tmp_path / "plugins")
    assert found.plugins == {}
    messages = {
        p.manifest_path.split("/")[-2]: p.issues[0].message
        for p in found.problems
        if p.manifest_path
    }
    assert "does not exist" in messages["missing"]
    assert "outside the plugin folder" in messages["escaping"]


def test_bad_root_raises(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="does not exist"):
        discover(tmp_path / "nope")


def test_rescan_uses_the_cache(tmp_path: Path, make_plugin: MakePlugin) -> None:
    for index in range(5):
        make_plugin(f"p{index}")
    cache = ManifestCache()
    discover(tmp_path / "plugins", cache=cache)
    discover(tmp_path / "plugins", cache=cache)
    stats = cache.stats()
    # Files this fresh are "racily clean": re-hashed on the second scan, but never re-validated.
    assert stats.hits + stats.misses == 10
    assert stats.misses - stats.unchanged_content == 5
