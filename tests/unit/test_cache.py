"""The manifest cache: stat-keyed hits, content-hash skips, racy timestamps, LRU eviction."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from autoweave_plugins.errors import ManifestError
from autoweave_plugins.manifest import ManifestCache

GOOD = {"name": "cached", "version": "1.0.0", "entry": "main.py"}


def write(path: Path, doc: object, *, age_s: float = 10.0) -> None:
    path.write_text(json.dumps(doc))
    past = path.stat().st_mtime - age_s
    os.utime(path, (past, past))  # old enough not to count as "racily clean"


def test_unchanged_file_is_a_hit(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write(path, GOOD)
    cache = ManifestCache()
    first = cache.load(path)
    second = cache.load(path)
    assert first is second
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size) == (1, 1, 1)


def test_changed_file_is_reparsed(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write(path, GOOD)
    cache = ManifestCache()
    assert cache.load(path).version == "1.0.0"
    write(path, {**GOOD, "version": "2.0.0"}, age_s=5)
    assert cache.load(path).version == "2.0.0"
    assert cache.stats().misses == 2 and cache.stats().unchanged_content == 0


def test_identical_resave_skips_validation(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write(path, GOOD)
    cache = ManifestCache()
    first = cache.load(path)
    write(path, GOOD, age_s=5)  # same bytes, new mtime
    assert cache.load(path) is first
    assert cache.stats().unchanged_content == 1


def test_atomic_replace_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write(path, GOOD)
    cache = ManifestCache()
    cache.load(path)
    tmp = tmp_path / "m.json.tmp"
    write(tmp, {**GOOD, "version": "3.0.0"})
    os.utime(tmp, ns=(path.stat().st_mtime_ns, path.stat().st_mtime_ns))  # same mtime, new inode
    os.replace(tmp, path)
    assert cache.load(path).version == "3.0.0"


def test_racy_fresh_file_is_rehashed_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**GOOD, "version": "1.0.0"}))
    cache = ManifestCache()
    cache.load(path)
    mtime = path.stat().st_mtime_ns
    path.write_text(json.dumps({**GOOD, "version": "9.0.0"}))  # same size
    os.utime(path, ns=(mtime, mtime))  # same stat key, as a coarse clock would give
    assert cache.load(path).version == "9.0.0"


def test_invalid_results_are_cached_too(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write(path, {"name": "X"})
    cache = ManifestCache()
    assert cache.check(path).manifest is None
    assert cache.check(path).manifest is None
    assert cache.stats().hits == 1
    with pytest.raises(ManifestError):
        cache.load(path)


def test_lru_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = ManifestCache(maxsize=2)
    paths = []
    for index in range(3):
        path = tmp_path / f"m{index}.json"
        write(path, {**GOOD, "name": f"p{index}"})
        paths.append(path)
    cache.load(paths[0])
    cache.load(paths[1])
    cache.load(paths[0])  # p0 is now the most recent
    cache.load(paths[2])  # evicts p1
    stats = cache.stats()
    assert (stats.size, stats.evictions) == (2, 1)
    cache.load(paths[0])
    assert cache.stats().hits == 2


def test_missing_file_is_an_issue_or_none(tmp_path: Path) -> None:
    cache = ManifestCache()
    result = cache.check(tmp_path / "absent.json")
    assert result.manifest is None and "cannot read" in result.issues[0].message
    assert cache.check(tmp_path / "absent.json", missing_ok=True) is None


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        ManifestCache(maxsize=0)


def test_symlinked_manifest_is_refused_clearly(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    write(target, GOOD)
    link = tmp_path / "autoweave.plugin.json"
    link.symlink_to(target)
    result = ManifestCache().check(link)
    assert result.manifest is None and "symbolic link" in result.issues[0].message


def test_oversized_file_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (3 << 20))
    result = ManifestCache().check(path)
    assert result.manifest is None and "at most" in result.issues[0].message
