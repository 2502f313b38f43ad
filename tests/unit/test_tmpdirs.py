"""Private temp folders: made 0700 under the base, swept when their worker is gone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from autoweave_plugins.tmpdirs import PrivateTmp, private_tmp, sweep_stale


async def test_made_private_and_removed(tmp_path: Path) -> None:
    base = tmp_path / "base"
    tmp = private_tmp(os.getpid(), str(base))
    assert isinstance(tmp, PrivateTmp)
    folder = Path(tmp.path)
    assert folder.parent == base and folder.name.startswith(f"{os.getpid()}-")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    (folder / "sub").mkdir()
    (folder / "sub" / "f").write_text("x")
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (folder / "link").symlink_to(outside)
    await tmp.remove()
    assert not folder.exists() and outside.read_text() == "keep"


def test_sweep_removes_only_folders_of_dead_workers(tmp_path: Path) -> None:
    dead = tmp_path / "999999999-x"  # above pid_max: never a live process
    live = tmp_path / f"{os.getpid()}-y"
    other = tmp_path / "not-a-worker"
    for folder in (dead, live, other):
        folder.mkdir()
    assert sweep_stale(str(tmp_path)) == 1
    assert not dead.exists() and live.exists() and other.exists()
    assert sweep_stale(str(tmp_path / "missing")) == 0
