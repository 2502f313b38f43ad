"""Where issue 10 touches the grant map: declared paths made by the host, the workers' temp
folders never grantable, and the system data workers read never writable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from autoweave_plugins.config import from_mapping
from autoweave_plugins.errors import PolicyRefused
from autoweave_plugins.manifest import Manifest, parse_manifest_bytes
from autoweave_plugins.policy import GrantPolicy, ensure_declared_paths, never_granted
from autoweave_plugins.roots import worker_tmp_base
from autoweave_plugins.sandbox.system_data import system_data_paths


def manifest(*paths: str, name: str = "maker") -> Manifest:
    doc = {
        "name": name,
        "version": "1.0.0",
        "entry": "main.py",
        "permissions": {"filesystem": [{"path": p, "mode": "readwrite"} for p in paths]},
    }
    return parse_manifest_bytes(json.dumps(doc).encode())


def policy(*roots: str) -> GrantPolicy:
    values: dict[str, Any] = {"allowed_roots": list(roots)}
    return from_mapping(GrantPolicy, values, "policy")


def test_missing_declared_paths_are_made_under_their_root(tmp_path: Path) -> None:
    root = tmp_path / "data" / "{plugin}"
    existing = tmp_path / "data" / "maker" / "kept"
    existing.mkdir(parents=True, mode=0o755)
    wanted = tmp_path / "data" / "maker" / "cache" / "deep"
    m = manifest(str(existing), str(wanted))
    made = ensure_declared_paths(m, policy(str(root)))
    assert made == [str(wanted.parent), str(wanted)]
    for folder in made:
        info = os.stat(folder)
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.geteuid()
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # an existing one is left alone
    assert ensure_declared_paths(m, policy(str(root))) == []  # and the second time, all are


def test_a_missing_path_outside_the_roots_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "data"
    with pytest.raises(PolicyRefused) as caught:
        ensure_declared_paths(manifest(str(outside)), policy(str(tmp_path / "data" / "{plugin}")))
    assert caught.value.permission == "$.permissions.filesystem[0].path"
    assert "does not exist" in caught.value.message and "allowed root" in caught.value.message
    assert not outside.exists() and not outside.parent.exists()


def test_a_planted_symlink_never_redirects_the_creation(tmp_path: Path) -> None:
    """A plugin that can write under its root plants a link for its next declared path."""
    root = tmp_path / "data" / "maker"
    root.mkdir(parents=True)
    target = tmp_path / "host-owned"
    target.mkdir()
    (root / "planted").symlink_to(target)
    with pytest.raises(PolicyRefused, match="could not make it"):
        ensure_declared_paths(manifest(str(root / "planted" / "evil")), policy(str(root)))
    assert list(target.iterdir()) == []


def test_the_workers_temp_folders_are_never_granted() -> None:
    base = worker_tmp_base()
    for path in (base, f"{base}/1234-abcd", os.path.dirname(base)):
        assert never_granted(path) is not None, path
    broad = policy(os.path.dirname(base))  # an operator who lists the whole data root
    assert [r.permission for r in broad.refusals(manifest(f"{base}/1234-abcd"))] == [
        "$.permissions.filesystem[0].path"
    ]


def test_system_data_is_read_from_places_no_policy_grants() -> None:
    paths = system_data_paths()
    assert paths, "this machine has time zones and CA certificates"
    for path in paths:
        for form in (path, os.path.realpath(path)):
            assert never_granted(form) is not None, form
            assert "private" not in form.split("/"), form
    assert any(p.endswith("zoneinfo") for p in paths)
