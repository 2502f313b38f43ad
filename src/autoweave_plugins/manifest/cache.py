"""An LRU of parsed manifests, keyed by path and invalidated by the file's stat.

A hit costs one ``stat``: when (st_ino, st_size, st_mtime_ns) are unchanged the stored result
is returned. When they changed, the file is read and hashed; an identical content hash (a
touch, or an editor re-saving the same bytes) reuses the stored result without validating again.

Timestamps are coarse (a kernel tick) on many filesystems, so two writes of the same size
within one tick can share an mtime. Like git's "racily clean" index entries, a file whose mtime
was within ``RACY_WINDOW_NS`` of the moment we read it is re-hashed on its next lookup instead of
trusted on stat alone.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

from autoweave_plugins.errors import ManifestError, ManifestIssue
from autoweave_plugins.manifest.model import Manifest
from autoweave_plugins.manifest.parse import MAX_MANIFEST_BYTES, check_manifest_bytes

__all__ = ["CacheStats", "ManifestCache", "ManifestResult"]

RACY_WINDOW_NS = 50_000_000

StatKey = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class ManifestResult:
    """The outcome for one manifest file: a manifest, or the issues that stopped it."""

    path: str
    manifest: Manifest | None
    issues: tuple[ManifestIssue, ...]
    content_hash: bytes

    def unwrap(self) -> Manifest:
        if self.manifest is None:
            raise ManifestError(self.path, self.issues)
        return self.manifest


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    size: int
    unchanged_content: int  # misses whose content hash matched: validation was skipped


@dataclass(slots=True)
class _Entry:
    stat: StatKey
    racy: bool
    result: ManifestResult


def _read(path: str) -> tuple[bytes, os.stat_result]:
    """Read at most MAX_MANIFEST_BYTES + 1 bytes (enough to know it is too big), with its stat."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file")
        limit = MAX_MANIFEST_BYTES + 1
        chunks = [os.read(fd, min(st.st_size + 1, limit))]
        size = len(chunks[0])
        while chunks[-1] and size < limit:  # the file grew since fstat
            chunks.append(os.read(fd, limit - size))
            size += len(chunks[-1])
        return b"".join(chunks), st
    finally:
        os.close(fd)


class ManifestCache:
    """Thread-safe LRU of manifest results. ``maxsize`` bounds the number of files kept."""

    def __init__(self, maxsize: int = 1024) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = self._unchanged = 0

    @overload
    def check(self, path: str | Path, missing_ok: Literal[False] = False) -> ManifestResult: ...
    @overload
    def check(self, path: str | Path, missing_ok: bool) -> ManifestResult | None: ...

    def check(self, path: str | Path, missing_ok: bool = False) -> ManifestResult | None:
        """Parse and validate ``path``, from the cache when the file has not changed.

        With ``missing_ok``, a file that does not exist gives None instead of an issue.
        """
        key = os.fspath(path)
        try:
            st = os.stat(key)
        except FileNotFoundError as exc:
            if missing_ok:
                return None
            return ManifestResult(
                key, None, (ManifestIssue("$", f"cannot read the manifest: {exc.strerror}"),), b""
            )
        except OSError as exc:
            return ManifestResult(
                key, None, (ManifestIssue("$", f"cannot read the manifest: {exc.strerror}"),), b""
            )
        stat_key = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.stat == stat_key and not entry.racy:
                self._hits += 1
                self._entries.move_to_end(key)
                return entry.result
        return self._load(key, entry)

    def load(self, path: str | Path) -> Manifest:
        """Like ``check`` but returns the manifest or raises ``ManifestError``."""
        return self.check(path).unwrap()

    def _load(self, key: str, previous: _Entry | None) -> ManifestResult:
        try:
            data, st = _read(key)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                why = "the manifest is a symbolic link; it must be a regular file in the plugin folder"
                return ManifestResult(key, None, (ManifestIssue("$", why),), b"")
            return ManifestResult(
                key, None, (ManifestIssue("$", f"cannot read the manifest: {exc.strerror}"),), b""
            )
        digest = hashlib.blake2b(data, digest_size=16).digest()
        stat_key = (st.st_ino, st.st_size, st.st_mtime_ns)
        racy = time.time_ns() - st.st_mtime_ns < RACY_WINDOW_NS
        with self._lock:
            if previous is not None and previous.result.content_hash == digest:
                self._unchanged += 1
                result = previous.result
            else:
                result = None
        if result is None:
            manifest, issues = check_manifest_bytes(data)
            result = ManifestResult(key, manifest, issues, digest)
        with self._lock:
            self._misses += 1
            self._entries[key] = _Entry(stat_key, racy, result)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
                self._evictions += 1
        return result

    def invalidate(self, path: str | Path) -> None:
        with self._lock:
            self._entries.pop(os.fspath(path), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits, self._misses, self._evictions, len(self._entries), self._unchanged
            )
