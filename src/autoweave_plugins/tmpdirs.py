"""Each worker's private temp folder: made by the host at assignment, removed after the exit.

The one place that decides a worker's ``TMPDIR`` (``private_tmp``). Until the namespace layer
mounts a private, size-capped tmpfs at ``/tmp``, it is a fresh folder made by the host under
its data root, ``<data root>/.tmp/<worker pid>-<random>``, mode 0700, granted read-write to
that worker alone; the folder ``.tmp`` is one of the host's private paths (``roots``), so no
grant ever reaches another worker's. It is removed, symlinks never followed, once the worker
has been reaped, in a thread, since a plugin decides how many files there are.

Bound: every file is capped by RLIMIT_FSIZE (``WorkerSpec.max_file_bytes``, 256 MiB), but
there is no aggregate quota for the folder, as for any granted folder (README, "what is not
bounded"); the tmpfs of the namespace layer brings one.

Folders left behind by a host that died are swept, in a thread, when the next host makes its
first one: a folder whose worker pid is no longer alive goes (a reused pid keeps it until the
next sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading

from autoweave_plugins.roots import worker_tmp_base

__all__ = ["PrivateTmp", "private_tmp", "sweep_stale"]

log = logging.getLogger(__name__)

_swept: set[str] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(base: str) -> int:
    """Remove folders of workers that no longer run; returns how many went."""
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(base) as entries:
        for entry in entries:
            pid, _, _rest = entry.name.partition("-")
            if pid.isdigit() and entry.is_dir(follow_symlinks=False) and not _alive(int(pid)):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
    return removed


class PrivateTmp:
    """One worker's temp folder on the host's side."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls, pid: int, base: str | None = None) -> PrivateTmp:
        base = os.path.realpath(base or worker_tmp_base())
        os.makedirs(base, mode=0o700, exist_ok=True)
        if base not in _swept:  # in a thread: a dead host may have left many files
            _swept.add(base)
            threading.Thread(
                target=sweep_stale, args=(base,), name="tmp-sweep", daemon=True
            ).start()
        return cls(tempfile.mkdtemp(prefix=f"{pid}-", dir=base))  # mode 0700

    async def remove(self) -> None:
        """Delete the folder and everything in it (never following symlinks)."""
        await asyncio.to_thread(shutil.rmtree, self.path, True)


def private_tmp(pid: int, base: str | None = None) -> PrivateTmp:
    """The private temp folder for the worker ``pid``: the single place that decides it."""
    return PrivateTmp.create(pid, base)
