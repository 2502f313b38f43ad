"""The environment cache on disk: layout, atomic publication, locks, read-only trees, pruning.

Layout under the cache directory::

    resolved/<resolution key>.json   requirements -> lock and environment key (small, atomic)
    envs/<environment key>/          one finished environment, read-only (dirs 0555, files 0444)
        site-packages/               the import root a worker puts first on sys.path
        lock.txt                     the exact lock installed, with hashes and sources
        environment.json             metadata; written last, so its presence means complete
    envs/.build-<key>-<random>/      a build in progress (or left by a crash)
    envs/.trash-<key>-<random>/      an environment being deleted
    locks/<key>.lock                 flock(2) held while a key is built or pruned
    tmp/                             resolver scratch directories

Why this shape:

* a build happens in a directory beside its final place and is published with one
  ``rename(2)``, so an environment is either absent or complete; a failure removes its own
  directory and leaves nothing behind. Renaming within ``envs/`` needs no write permission on
  the (already read-only) directory itself, which a move across parents would.
* two processes building one key take the key's flock, and the second finds the first's result.
  Without the lock the rename still decides: it fails on a non-empty target, and the loser
  discards its copy. Lock files are never deleted, since unlinking a lock file lets two holders
  lock different inodes.
* deletion renames first, so nobody sees a half-deleted environment, and takes the key's lock
  without waiting, so a key being built is never pruned. A host holds a shared lock on every
  key its plugins and workers use (``leases``), so no prune, in any process, deletes one of
  them; the environment's mtime is its last use, which a grace period (``unused_for``) reads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = ["ENV_METADATA", "LOCK_FILE", "SITE_DIR", "KeyLock", "Store", "read_bounded", "touch"]

SITE_DIR = "site-packages"
LOCK_FILE = "lock.txt"
ENV_METADATA = "environment.json"
MAX_RECORD_BYTES = 8 << 20
_BUILD = ".build-"
_TRASH = ".trash-"


class KeyLock:
    """A ``flock`` on ``locks/<key>.lock``, taken without blocking."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self, shared: bool = False) -> bool:
        """Exclusive (build, prune) or shared (in use: see ``leases``), without waiting."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def read_bounded(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it is missing or longer than ``limit``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return data if len(data) <= limit else None


def _read_json(path: Path) -> dict[str, Any] | None:
    data = read_bounded(path, MAX_RECORD_BYTES)
    if data is None:
        return None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def make_read_only(root: Path) -> None:
    """Directories 0555 and files 0444, bottom-up; symlinks (never in wheels) are left alone."""
    for directory, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o444)
        os.chmod(directory, 0o555)  # noqa: S103 - readable by workers, writable by none


def tree_size(root: Path) -> int:
    """Bytes of every regular file under ``root`` (apparent sizes; hard links counted once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for directory, _dirs, files in os.walk(root):
        for name in files:
            info = os.lstat(os.path.join(directory, name))
            if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def remove_tree(root: Path) -> None:
    """Delete ``root`` even when read-only: directories are made writable first."""
    if not root.exists():
        return
    for directory, _dirs, _files in os.walk(root):
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)
    shutil.rmtree(root, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def touch(path: Path) -> None:
    """Mark an environment as used now (its mtime); the owner may, even on a 0555 directory."""
    with contextlib.suppress(OSError):
        os.utime(path)


class Store:
    """One cache directory. Every method is synchronous: the builder calls them off the loop
    when they walk a tree, and directly for the few small reads of a cache hit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.envs = root / "envs"
        self.resolved = root / "resolved"
        self.locks = root / "locks"
        self.tmp = root / "tmp"

    def create(self) -> None:
        for directory in (self.envs, self.resolved, self.locks, self.tmp):
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)

    # --- records ---------------------------------------------------------------------------

    def read_resolution(self, key: str) -> dict[str, Any] | None:
        return _read_json(self.resolved / f"{key}.json")

    def write_resolution(self, key: str, record: dict[str, Any]) -> None:
        self._write_atomic(self.resolved / f"{key}.json", orjson.dumps(record))

    def env_dir(self, key: str) -> Path:
        return self.envs / key

    def read_environment(self, key: str) -> dict[str, Any] | None:
        """The metadata of a finished environment, or None when there is none."""
        return _read_json(self.envs / key / ENV_METADATA)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    # --- building --------------------------------------------------------------------------

    def lock(self, key: str) -> KeyLock:
        return KeyLock(self.locks / f"{key}.lock")

    def new_build_dir(self, key: str) -> Path:
        path = self.envs / f"{_BUILD}{key}-{secrets.token_hex(6)}"
        path.mkdir(mode=0o755)
        return path

    def new_scratch_dir(self) -> Path:
        path = self.tmp / secrets.token_hex(8)
        path.mkdir(mode=0o700)
        return path

    def publish(self, build_dir: Path, key: str) -> bool:
        """Rename the finished build into place. False (and the build deleted) if it lost."""
        try:
            os.rename(build_dir, self.envs / key)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            remove_tree(build_dir)
            return False
        return True

    def seal(self, build_dir: Path) -> None:
        """Make a finished build read-only, before it is published."""
        make_read_only(build_dir)

    def discard(self, key: str) -> None:
        """Delete the environment ``key`` (the caller holds its lock): rename away, then remove."""
        trash = self.envs / f"{_TRASH}{key}-{secrets.token_hex(6)}"
        try:
            os.rename(self.envs / key, trash)
        except FileNotFoundError:
            return
        remove_tree(trash)

    # --- pruning ---------------------------------------------------------------------------

    def _entries(self) -> Iterator[tuple[str, str]]:
        """(kind, key) for each directory in envs/: kind is 'env', 'build' or 'trash'."""
        for name in os.listdir(self.envs):
            for kind, prefix in (("build", _BUILD), ("trash", _TRASH)):
                if name.startswith(prefix):
                    yield kind, name
                    break
            else:
                if not name.startswith("."):
                    yield "env", name

    def prune(self, keep: set[str], scratch_age: float, unused_for: float = 0.0) -> list[str]:
        """Delete environments not in ``keep``, not in use or being built, and last used more
        than ``unused_for`` seconds ago; returns their keys.

        Also removes builds and deletions a crash left behind (their key is no longer
        locked), resolution records of removed environments, and resolution records without
        an environment and scratch directories older than ``scratch_age`` seconds.
        """
        if not self.envs.is_dir():
            return []
        removed: list[str] = []
        recent = time.time() - unused_for
        for kind, name in list(self._entries()):
            key = name if kind == "env" else name.split("-", 2)[1]
            if kind == "env" and (
                key in keep or (unused_for > 0 and _mtime(self.envs / key) > recent)
            ):
                continue
            lock = self.lock(key)
            if not lock.try_acquire():
                continue  # being built (or pruned by someone else) right now
            try:
                if kind == "env":
                    self.discard(key)
                    removed.append(key)
                else:
                    remove_tree(self.envs / name)
            finally:
                lock.release()
        cutoff = time.time() - scratch_age
        for record_path in self.resolved.glob("*.json"):
            record = _read_json(record_path)
            env = record.get("environment") if record else None
            if env in removed or not isinstance(env, str):
                record_path.unlink(missing_ok=True)
            elif not (self.envs / env).is_dir():
                # Resolved but not installed: maybe installing right now, so only when old.
                with contextlib.suppress(FileNotFoundError):
                    if record_path.stat().st_mtime < cutoff:
                        record_path.unlink()
        for scratch in self.tmp.iterdir() if self.tmp.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                if scratch.stat().st_mtime < cutoff:
                    remove_tree(scratch)
        return removed
