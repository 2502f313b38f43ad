"""Running ``tests/world_child.py`` for the namespace tests: a real process in a real world.

``run_world`` runs one to the end; ``start_world`` leaves it running for tests that watch it
from outside. ``as_unprivileged`` wraps the command so it runs as uid 65534 with no
capabilities, the way an unprivileged host would start its workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("world_child.py")
REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534


@dataclass
class Outcome:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    @property
    def final(self) -> dict[str, Any]:
        return self.events[-1] if self.events else {}

    @property
    def report(self) -> dict[str, Any]:
        report = self.final.get("report")
        assert isinstance(report, dict), f"no report: {self.events} {self.stderr[-2000:]}"
        return report

    @property
    def result(self) -> dict[str, Any]:
        result = self.final.get("result")
        assert isinstance(result, dict), f"no result: {self.events} {self.stderr[-2000:]}"
        return result


def world_command(config: dict[str, Any], wrapper: tuple[str, ...] = ()) -> list[str]:
    return [*wrapper, sys.executable, "-I", str(CHILD), json.dumps(config)]


async def start_world(
    config: dict[str, Any],
    *,
    wrapper: tuple[str, ...] = (),
    pass_fds: tuple[int, ...] = (),
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *world_command(config, wrapper),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=pass_fds,
        env=env or {},
        start_new_session=True,
    )


async def next_event(process: asyncio.subprocess.Process, timeout: float = 30.0) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout)
    assert line, "the world's process ended without a word"
    event: dict[str, Any] = json.loads(line)
    return event


async def run_world(
    config: dict[str, Any],
    *,
    wrapper: tuple[str, ...] = (),
    pass_fds: tuple[int, ...] = (),
    timeout: float = 60.0,
) -> Outcome:
    process = await start_world(config, wrapper=wrapper, pass_fds=pass_fds)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return Outcome(process.returncode, events, err.decode(errors="replace"))


def hidden_ancestor(path: Path) -> Path | None:
    """The highest directory above ``path`` that other users may not traverse, if any."""
    for parent in reversed(path.parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


@contextmanager
def as_unprivileged() -> Iterator[tuple[str, ...]]:
    """A command prefix running as uid/gid 65534 with no capabilities.

    When the interpreter lives under a directory that uid cannot traverse (pyenv under
    /root here), the prefix first gives the command a private mount namespace in which that
    directory is a tmpfs holding only the interpreter's trees, bound back at their paths.
    Only root can make that namespace; as any other user the prefix is empty.
    """
    if os.geteuid() != 0:
        yield ()
        return
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} (util-linux) is needed to run a test unprivileged")
    needed = sorted({Path(sys.base_prefix), Path(sys.prefix), REPO})
    lines = ["set -e"]
    stage = Path(tempfile.mkdtemp(prefix="aw-stage-"))
    try:
        covers: dict[Path, list[Path]] = {}
        for path in needed:
            ancestor = hidden_ancestor(path)
            if ancestor is not None:
                covers.setdefault(ancestor, []).append(path)
        for index, (ancestor, paths) in enumerate(covers.items()):
            for number, path in enumerate(paths):
                held = stage / f"{index}-{number}"
                lines += [f"mkdir -p {held}", f"mount --bind {shlex.quote(str(path))} {held}"]
            lines.append(f"mount -t tmpfs -o mode=0755,size=1m tmpfs {shlex.quote(str(ancestor))}")
            for number, path in enumerate(paths):
                quoted = shlex.quote(str(path))
                lines += [f"mkdir -p {quoted}", f"mount --move {stage}/{index}-{number} {quoted}"]
        ids = f"--reuid={NOBODY} --regid={NOBODY}"
        lines.append(f'exec setpriv {ids} --clear-groups --inh-caps=-all --bounding-set=-all "$@"')
        script = "\n".join(lines)
        yield ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def shared_dir() -> Iterator[Path]:
    """A directory every uid may enter (pytest's tmp_path is root's own, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="aw-world-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_grant(path: Path) -> Path:
    """Create ``path`` as the workers' own directory, as a host creating a write grant would."""
    path.mkdir()
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    return path
