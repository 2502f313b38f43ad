"""The host's entry point: ``env = await builder.ensure(plugin.manifest.requirements)``.

``ensure`` turns a requirement set into a finished, read-only environment and returns where it
is. The common case is a hit and costs a dictionary lookup and one ``stat``; the first hit in a
process reads two small JSON files. Nothing else runs: no uv, no resolver, no thread.

A miss runs two uv steps, each a subprocess awaited on the loop (never blocking it), each with
``build_timeout``:

1. resolve: ``uv pip compile --generate-hashes`` for the worker's interpreter. The lock is
   stored under the resolution key, so the set is never resolved again;
2. install: ``uv pip install --target --require-hashes --no-deps --compile-bytecode`` from the
   lock into a build directory, which is measured against ``max_size_mb``, made read-only and
   renamed into place under the environment key.

``--target`` rather than a virtualenv: the worker only imports from the environment and never
runs its interpreter or scripts, so a plain directory of packages (``site-packages``) is all it
needs, with no interpreter symlink that would tie the tree to a path. Files are copied out of
uv's cache (``--link-mode copy``) because hard links would share inodes, and so permissions and
contents, with a cache the host does not own.

Concurrent callers of one requirement set share one task (single flight), and so do different
sets that lock to the same packages. Other processes are kept apart by the store's key locks.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import orjson

from autoweave_plugins.config import from_mapping
from autoweave_plugins.environments.config import EnvironmentsConfig, default_cache_dir
from autoweave_plugins.environments.errors import (
    BuildTimeout,
    EnvironmentBuildError,
    EnvironmentTooLarge,
    InstallFailed,
    InvalidRequirements,
    ResolutionFailed,
)
from autoweave_plugins.environments.keys import Target, environment_key, resolution_key
from autoweave_plugins.environments.lock import (
    LockedPackage,
    LockError,
    canonical_lock,
    culprits,
    error_detail,
    parse_lock,
)
from autoweave_plugins.environments.model import BuilderStats, Environment, PackageSource
from autoweave_plugins.environments.store import (
    ENV_METADATA,
    LOCK_FILE,
    SITE_DIR,
    KeyLock,
    Store,
    read_bounded,
    remove_tree,
    tree_size,
)
from autoweave_plugins.environments.uv import UvResult, run_uv, source_args, uv_environment
from autoweave_plugins.manifest.requirements import canonical_requirements

__all__ = ["EnvironmentBuilder"]

MAX_LOCK_BYTES = 4 << 20
_KEY = re.compile(r"[0-9a-f]{64}\Z")  # a record names a directory: only ever a sha256
T = TypeVar("T")


def _uv_version() -> str:
    try:
        return version("uv")
    except PackageNotFoundError:
        return "unknown"


class EnvironmentBuilder:
    """Builds and caches per-plugin environments. One per host; safe to share across tasks."""

    def __init__(
        self,
        config: EnvironmentsConfig | Mapping[str, Any] | None = None,
        *,
        data_root: Path | None = None,
        target: Target | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = from_mapping(EnvironmentsConfig, config, "environments")
        self.cache_dir = self.config.cache_dir or default_cache_dir(data_root)
        self.store = Store(self.cache_dir)
        self.target = target or Target.current()
        self.stats = BuilderStats()
        self._env = uv_environment(self.config, os.environ if environ is None else environ)
        self._sources = source_args(self.config)
        self._memo: dict[str, Environment] = {}
        self._flights: dict[str, asyncio.Task[Any]] = {}
        self._building: set[str] = set()

    # --- public API ------------------------------------------------------------------------

    def lookup(self, requirements: Iterable[str]) -> Environment | None:
        """The finished environment for ``requirements``, or None. Never builds anything."""
        canonical = self._canonical(requirements)
        try:
            return self._lookup(resolution_key(canonical, self.config, self.target), canonical)
        except OSError as exc:
            raise self._cache_error(exc, canonical) from exc

    async def ensure(self, requirements: Iterable[str]) -> Environment:
        """The environment for ``requirements``, built first when missing.

        Raises ``InvalidRequirements``, ``ResolutionFailed``, ``InstallFailed``,
        ``BuildTimeout`` or ``EnvironmentTooLarge``; a failure leaves nothing on disk.
        """
        canonical = self._canonical(requirements)
        key = resolution_key(canonical, self.config, self.target)
        try:
            found = self._lookup(key, canonical)
            if found is not None:
                self.stats.hits += 1
                return found
            return await self._single_flight(key, lambda: self._prepare(canonical, key))
        except EnvironmentBuildError:
            self.stats.failures += 1
            raise
        except OSError as exc:
            self.stats.failures += 1
            raise self._cache_error(exc, canonical) from exc

    async def prune(self, in_use: Iterable[str], *, unused_for: float = 0.0) -> tuple[str, ...]:
        """Delete every environment whose key is not in ``in_use``, is not being built nor
        leased by any process, and was last used more than ``unused_for`` seconds ago."""
        keep = set(in_use) | self._building
        scratch_age = 2 * self.config.build_timeout + 60
        removed = await asyncio.to_thread(self.store.prune, keep, scratch_age, unused_for)
        gone = set(removed)
        self._memo = {k: e for k, e in self._memo.items() if e.key not in gone}
        return tuple(removed)

    async def aclose(self) -> None:
        """Cancel builds in flight (their uv processes are killed, their directories removed)."""
        tasks = list(self._flights.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _cache_error(self, exc: OSError, canonical: tuple[str, ...]) -> EnvironmentBuildError:
        """The cache directory itself failed us: permissions, a full disk, a file in the way."""
        return EnvironmentBuildError(
            f"environment cache {self.cache_dir}: {exc.strerror or exc}", canonical
        )

    # --- lookups ---------------------------------------------------------------------------

    def _canonical(self, requirements: Iterable[str]) -> tuple[str, ...]:
        texts = [requirements] if isinstance(requirements, str) else list(requirements)
        try:
            canonical = canonical_requirements(texts)
        except ValueError as exc:
            raise InvalidRequirements(str(exc)) from None
        if not canonical:
            raise InvalidRequirements("no requirements: a plugin without any needs no environment")
        return canonical

    def _lookup(self, key: str, canonical: tuple[str, ...]) -> Environment | None:
        known = self._memo.get(key)
        if known is not None:
            if os.path.exists(known.root / ENV_METADATA):
                return known
            del self._memo[key]
        record = self.store.read_resolution(key)
        env_key = record.get("environment") if record else None
        if not isinstance(env_key, str) or not _KEY.match(env_key):
            return None  # a damaged record is a miss: it gets resolved and rewritten
        found = self._read_environment(env_key, canonical)
        if found is not None:
            self._memo[key] = found
        return found

    def _read_environment(self, key: str, canonical: tuple[str, ...]) -> Environment | None:
        metadata = self.store.read_environment(key)
        if metadata is None:
            return None
        try:
            sources = tuple(
                PackageSource(str(p["name"]), str(p["version"]), p.get("source"))
                for p in metadata["packages"]
            )
            size = int(metadata["size_bytes"])
        except (KeyError, TypeError, ValueError):
            return None
        root = self.store.env_dir(key)
        return Environment(key, root, root / SITE_DIR, canonical, sources, size)

    # --- building --------------------------------------------------------------------------

    async def _single_flight(self, key: str, start: Callable[[], Awaitable[T]]) -> T:
        task = self._flights.get(key)
        if task is None:

            async def run() -> T:
                try:
                    return await start()
                finally:
                    self._flights.pop(key, None)

            task = asyncio.ensure_future(run())
            self._flights[key] = task
        # Shielded: one caller giving up must not cancel the build the others wait for.
        result: T = await asyncio.shield(task)
        return result

    async def _prepare(self, canonical: tuple[str, ...], key: str) -> Environment:
        self.store.create()
        record = self.store.read_resolution(key)
        lock_text = record.get("lock") if record else None
        packages: tuple[LockedPackage, ...] | None = None
        if isinstance(lock_text, str):
            try:
                packages = parse_lock(lock_text)
            except LockError:
                packages = None  # a damaged record: resolve again
        if packages is None or not isinstance(lock_text, str):
            lock_text = await self._resolve(canonical)
            try:
                packages = parse_lock(lock_text)
            except LockError as exc:
                raise ResolutionFailed(
                    "uv wrote a lock this host cannot read", canonical, str(exc), ()
                ) from None
        env_key = environment_key(canonical_lock(packages), self.target)
        if record is None or record.get("environment") != env_key:
            self.store.write_resolution(
                key,
                {
                    "requirements": list(canonical),
                    "lock": lock_text,
                    "environment": env_key,
                    "target": self.target.fingerprint,
                    "resolved_at": time.time(),
                },
            )
        found = self._read_environment(env_key, canonical)
        if found is None:
            found = await self._single_flight(
                f"env:{env_key}", lambda: self._install(canonical, lock_text, packages, env_key)
            )
            found = Environment(
                found.key, found.root, found.path, canonical, found.sources, found.size_bytes
            )
        self._memo[key] = found
        return found

    async def _run(self, args: list[str], cwd: Path, canonical: tuple[str, ...]) -> UvResult:
        self.stats.uv_runs += 1
        try:
            return await run_uv(args, env=self._env, cwd=cwd, timeout=self.config.build_timeout)
        except TimeoutError:
            raise BuildTimeout(
                f"uv {args[1]} took longer than environments.build_timeout "
                f"({self.config.build_timeout:g} s) and was killed",
                canonical,
            ) from None
        except OSError as exc:
            raise EnvironmentBuildError(f"cannot start uv: {exc}", canonical) from None

    def _common_args(self) -> list[str]:
        return ["--python", self.target.executable, "--quiet", *self._sources]

    async def _resolve(self, canonical: tuple[str, ...]) -> str:
        scratch = self.store.new_scratch_dir()
        try:
            (scratch / "requirements.in").write_text("\n".join(canonical) + "\n")
            args = ["pip", "compile", "requirements.in", "--output-file", LOCK_FILE]
            args += ["--generate-hashes", "--no-header", "--emit-index-annotation"]
            result = await self._run(args + self._common_args(), scratch, canonical)
            if result.returncode != 0:
                blamed = culprits(result.stderr, canonical)
                what = ", ".join(repr(r) for r in blamed) if blamed else "the requirements"
                raise ResolutionFailed(
                    f"cannot resolve {what}", canonical, error_detail(result.stderr), blamed
                )
            data = read_bounded(scratch / LOCK_FILE, MAX_LOCK_BYTES)
            if data is None:
                raise ResolutionFailed(
                    f"uv wrote no lock, or one over {MAX_LOCK_BYTES} bytes", canonical, "", ()
                )
            self.stats.resolutions += 1
            return data.decode()
        finally:
            await asyncio.shield(asyncio.to_thread(remove_tree, scratch))

    async def _acquire(self, lock: KeyLock, canonical: tuple[str, ...]) -> None:
        """Take the key's file lock, waiting while another process builds the same key."""
        deadline = time.monotonic() + 2 * self.config.build_timeout + 60
        delay = 0.01
        # No event tells us another process let go of a flock, so poll with backoff.
        while not lock.try_acquire():
            if time.monotonic() > deadline:
                raise BuildTimeout(
                    "another process has been building this environment for too long", canonical
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _install(
        self,
        canonical: tuple[str, ...],
        lock_text: str,
        packages: tuple[LockedPackage, ...],
        key: str,
    ) -> Environment:
        lock = self.store.lock(key)
        await self._acquire(lock, canonical)
        self._building.add(key)
        try:
            found = self._read_environment(key, canonical)
            if found is not None:
                return found  # another process finished it while we waited
            if self.store.env_dir(key).exists():
                # Present but unreadable: damaged by hand. We hold the key, so replace it.
                await asyncio.to_thread(self.store.discard, key)
            build = self.store.new_build_dir(key)
            try:
                await self._build(build, canonical, lock_text, packages, key)
                published = self.store.publish(build, key)
            except BaseException:
                await asyncio.shield(asyncio.to_thread(remove_tree, build))
                raise
            found = self._read_environment(key, canonical)
            if found is None:
                raise InstallFailed("the built environment vanished", canonical)
            if published:
                self.stats.builds += 1
            return found
        finally:
            self._building.discard(key)
            lock.release()

    async def _build(
        self,
        build: Path,
        canonical: tuple[str, ...],
        lock_text: str,
        packages: tuple[LockedPackage, ...],
        key: str,
    ) -> None:
        site = build / SITE_DIR
        (build / LOCK_FILE).write_text(lock_text)
        args = ["pip", "install", "--target", str(site), "--requirements", LOCK_FILE]
        args += ["--require-hashes", "--no-deps", "--compile-bytecode", "--link-mode", "copy"]
        result = await self._run(args + self._common_args(), build, canonical)
        if result.returncode != 0:
            raise InstallFailed(
                "cannot install the locked packages", canonical, error_detail(result.stderr)
            )
        (site / ".lock").unlink(missing_ok=True)  # uv's own lock file for the target
        size = await asyncio.to_thread(tree_size, build)
        cap = self.config.max_size_mb << 20
        if size > cap:
            raise EnvironmentTooLarge(
                f"installed size {size / (1 << 20):.1f} MB exceeds environments.max_size_mb "
                f"({self.config.max_size_mb})",
                canonical,
                size,
            )
        metadata = {
            "key": key,
            "requirements": list(canonical),
            "packages": [
                {"name": p.name, "version": p.version, "source": p.source, "hashes": p.hashes}
                for p in packages
            ],
            "size_bytes": size,
            "target": self.target.fingerprint,
            "uv": _uv_version(),
            "built_at": time.time(),
        }
        (build / ENV_METADATA).write_bytes(orjson.dumps(metadata, option=orjson.OPT_INDENT_2))
        await asyncio.to_thread(self.store.seal, build)
