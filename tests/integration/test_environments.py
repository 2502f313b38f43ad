"""Per-plugin environments built by the real uv from a wheelhouse generated in the test.

Everything runs offline: the wheels are written by ``tests/wheelhouse.py`` and uv gets its own
cache directory per test, so no result depends on another test or on the machine's uv cache.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from autoweave_plugins.environments import (
    BuildTimeout,
    Environment,
    EnvironmentBuilder,
    EnvironmentTooLarge,
    InstallFailed,
    InvalidRequirements,
    Leases,
    Prepared,
    ResolutionFailed,
    keys_in_use,
    prepare_all,
)
from tests.wheelhouse import write_wheel

MakeBuilder = Callable[..., EnvironmentBuilder]


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    write_wheel(directory, "tinypkg", "1.0")
    write_wheel(directory, "tinypkg", "2.0")
    # Imports its dependency, so importing it proves the dependency is in the same environment.
    code = "import tinypkg\nVERSION = '1.0+tinypkg' + tinypkg.VERSION\n"
    write_wheel(directory, "withdep", "1.0", {"withdep/__init__.py": code}, ["tinypkg>=2"])
    return directory


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_builder(tmp_path: Path, wheelhouse: Path, cache: Path) -> MakeBuilder:
    def make(uv_cache: str = "uv-cache", **overrides: Any) -> EnvironmentBuilder:
        config = {"find_links": str(wheelhouse), "offline": True, "cache_dir": str(cache)}
        config.update(overrides)
        environ = {**os.environ, "UV_CACHE_DIR": str(tmp_path / uv_cache)}
        return EnvironmentBuilder(config, environ=environ)

    return make


def imported(
    env: Environment, module: str = "tinypkg", *flags: str
) -> subprocess.CompletedProcess[str]:
    """Import ``module`` in a fresh interpreter with the environment first on its path."""
    code = (
        f"import sys; sys.path.insert(0, {str(env.path)!r}); import {module}; "
        f"print({module}.VERSION, {module}.__file__)"
    )
    return subprocess.run(
        [sys.executable, "-I", *flags, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def version_seen(env: Environment, module: str = "tinypkg") -> str:
    version, location = imported(env, module).stdout.split()
    assert location.startswith(str(env.path)), location
    return version


def leftovers(cache: Path) -> dict[str, list[str]]:
    return {
        part: sorted(os.listdir(cache / part))
        for part in ("envs", "resolved", "tmp")
        if (cache / part).is_dir()
    }


def uv_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == "uv"]


async def test_two_pins_of_one_package_get_two_environments(
    make_builder: MakeBuilder, wheelhouse: Path
) -> None:
    builder = make_builder()
    one, two = await asyncio.gather(
        builder.ensure(["tinypkg==1.0"]), builder.ensure(["tinypkg==2.0"])
    )
    assert one.key != two.key
    assert version_seen(one) == "1.0"
    assert version_seen(two) == "2.0"
    # Each package's source is recorded: here the wheelhouse.
    assert [(s.name, s.version, s.source) for s in one.sources] == [
        ("tinypkg", "1.0", wheelhouse.as_uri())
    ]
    dependent = await builder.ensure(["withdep"])
    assert {(s.name, s.version) for s in dependent.sources} == {
        ("tinypkg", "2.0"),
        ("withdep", "1.0"),
    }
    assert version_seen(dependent, "withdep") == "1.0+tinypkg2.0"


async def test_unresolvable_requirement_names_the_requirement_and_leaves_nothing(
    make_builder: MakeBuilder, cache: Path
) -> None:
    builder = make_builder()
    with pytest.raises(ResolutionFailed) as caught:
        await builder.ensure(["withdep", "tinypkg>=3"])
    assert caught.value.culprits == ("tinypkg>=3",)
    assert "cannot resolve 'tinypkg>=3'" in str(caught.value)
    assert "only tinypkg<=2.0 is available" in caught.value.detail
    with pytest.raises(ResolutionFailed) as missing:
        await builder.ensure(["nosuchpkg>=1"])
    assert missing.value.culprits == ("nosuchpkg>=1",)
    with pytest.raises(ResolutionFailed) as conflict:
        await builder.ensure(["tinypkg==1.0", "withdep"])
    assert set(conflict.value.culprits) == {"tinypkg==1.0", "withdep"}
    assert leftovers(cache) == {"envs": [], "resolved": [], "tmp": []}
    assert builder.stats.failures == 3
    with pytest.raises(InvalidRequirements, match="direct URL"):
        await builder.ensure(["tinypkg @ https://example.com/tinypkg.whl"])


async def test_identical_sets_share_one_environment_and_a_hit_runs_no_uv(
    make_builder: MakeBuilder, cache: Path
) -> None:
    builder = make_builder()
    first = await builder.ensure(["tinypkg==2.0"])
    assert (builder.stats.resolutions, builder.stats.builds, builder.stats.uv_runs) == (1, 1, 2)
    built_at = first.root.stat().st_mtime_ns
    again = await builder.ensure(["TinyPkg == 2.0"])
    assert again == first
    assert builder.stats.uv_runs == 2
    assert builder.stats.hits == 1
    # A host restart: a new builder on the same cache finds it without running uv.
    restarted = make_builder()
    assert restarted.lookup(["tinypkg==2.0"]) == first
    assert (await restarted.ensure(["tinypkg==2.0"])) == first
    assert restarted.stats.uv_runs == 0
    # Another set that locks to the same packages is resolved once, and installs nothing.
    other = await restarted.ensure(["tinypkg>=2"])
    assert other.key == first.key
    assert other.requirements == ("tinypkg>=2",)
    assert (restarted.stats.resolutions, restarted.stats.builds) == (1, 0)
    assert leftovers(cache)["envs"] == [first.key]
    assert first.root.stat().st_mtime_ns == built_at


async def test_concurrent_builds_of_one_set_install_once(
    make_builder: MakeBuilder, cache: Path
) -> None:
    here, elsewhere = make_builder(), make_builder()  # two hosts sharing one cache
    results = await asyncio.gather(
        here.ensure(["withdep"]), here.ensure(["withdep"]), elsewhere.ensure(["withdep"])
    )
    assert len({r.key for r in results}) == 1
    assert here.stats.builds + elsewhere.stats.builds == 1
    assert here.stats.resolutions == 1  # the two callers in one process shared one flight
    assert leftovers(cache)["envs"] == [results[0].key]


async def test_environment_is_read_only_and_compiled(make_builder: MakeBuilder) -> None:
    env = await (make_builder()).ensure(["withdep"])
    for directory, _dirs, files in os.walk(env.root):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o555, directory
        for name in files:
            path = os.path.join(directory, name)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o444, path
    compiled = {p.parent.parent.name for p in env.path.glob("*/__pycache__/*.pyc")}
    assert compiled == {"tinypkg", "withdep"}
    # The worker's interpreter loads that bytecode rather than compiling the source again.
    trace = imported(env, "withdep", "-v").stderr
    pyc = env.path / "withdep" / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc"
    assert f"# code object from '{pyc}'" in trace
    if os.geteuid() != 0:  # root ignores modes; the modes themselves are checked above
        with pytest.raises(PermissionError):
            (env.path / "tinypkg" / "__init__.py").write_text("VERSION = 'changed'\n")


async def test_size_cap_deletes_the_build_and_fails(
    make_builder: MakeBuilder, wheelhouse: Path, cache: Path
) -> None:
    write_wheel(wheelhouse, "bigpkg", "1.0", padding=2 << 20)
    builder = make_builder(max_size_mb=1)
    with pytest.raises(EnvironmentTooLarge) as caught:
        await builder.ensure(["bigpkg"])
    assert caught.value.size_bytes > 2 << 20
    assert "environments.max_size_mb (1)" in str(caught.value)
    assert leftovers(cache)["envs"] == []
    small = await builder.ensure(["tinypkg"])
    assert small.size_bytes < 1 << 20


async def test_a_wheel_changed_after_locking_fails_the_hash_check(
    make_builder: MakeBuilder, wheelhouse: Path, cache: Path
) -> None:
    env = await (make_builder()).ensure(["tinypkg==1.0"])
    (make_builder()).store.discard(env.key)  # the lock stays recorded; the tree goes
    write_wheel(wheelhouse, "tinypkg", "1.0", {"tinypkg/__init__.py": "VERSION = 'swapped'\n"})
    rebuilder = make_builder(uv_cache="fresh-uv-cache")
    with pytest.raises(InstallFailed) as caught:
        await rebuilder.ensure(["tinypkg==1.0"])
    assert "hash" in caught.value.detail.lower()
    assert rebuilder.stats.resolutions == 0  # installed from the stored lock, not re-resolved
    assert leftovers(cache)["envs"] == []


class HangingIndex:
    """An index on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _hang(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        await reader.read()  # returns when the client goes away
        writer.close()

    async def __aenter__(self) -> HangingIndex:
        self._server = await asyncio.start_server(self._hang, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


async def test_a_hanging_index_times_out_and_uv_is_killed(
    make_builder: MakeBuilder, cache: Path
) -> None:
    async with HangingIndex() as index:
        builder = make_builder(
            offline=False, find_links=None, index_url=f"http://127.0.0.1:{index.port}/simple",
            build_timeout=1.5,
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(BuildTimeout, match=r"build_timeout \(1.5 s\)"):
            await builder.ensure(["tinypkg"])
        elapsed = time.monotonic() - started
        assert index.connected.is_set()  # uv really was waiting on the index
    assert elapsed < 15
    assert uv_children() == []
    assert leftovers(cache) == {"envs": [], "resolved": [], "tmp": []}


async def test_closing_the_builder_kills_a_build_in_flight(
    make_builder: MakeBuilder, cache: Path
) -> None:
    async with HangingIndex() as index:
        builder = make_builder(
            offline=False, find_links=None, index_url=f"http://127.0.0.1:{index.port}/simple"
        )
        waiting = asyncio.create_task(builder.ensure(["tinypkg"]))
        await asyncio.wait_for(index.connected.wait(), 30)
        assert len(uv_children()) >= 1
        await builder.aclose()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert uv_children() == []
    assert leftovers(cache)["tmp"] == []


async def test_prune_removes_unused_environments_but_never_a_build_in_progress(
    make_builder: MakeBuilder, cache: Path
) -> None:
    builder = make_builder()
    keep = await builder.ensure(["tinypkg==1.0"])
    drop = await builder.ensure(["tinypkg==2.0"])
    busy_key, crashed_key = "f" * 64, "e" * 64
    busy = builder.store.lock(busy_key)
    assert busy.try_acquire()  # another process is building this key right now
    busy_dir = builder.store.new_build_dir(busy_key)
    crashed_dir = builder.store.new_build_dir(crashed_key)  # a crash left this behind
    try:
        removed = await builder.prune({keep.key})
        assert removed == (drop.key,)
        assert keep.root.is_dir()
        assert not drop.root.exists()
        assert busy_dir.is_dir()
        assert not crashed_dir.exists()
    finally:
        busy.release()
    assert builder.lookup(["tinypkg==2.0"]) is None
    assert builder.lookup(["tinypkg==1.0"]) == keep
    assert len(leftovers(cache)["resolved"]) == 1
    rebuilt = await builder.ensure(["tinypkg==2.0"])
    assert version_seen(rebuilt) == "2.0"


async def test_prepare_all_reports_each_plugin_and_one_failure_stays_its_own(
    make_builder: MakeBuilder, cache: Path
) -> None:
    builder = make_builder()
    wanted = {
        "old-tiny": ["tinypkg==1.0"],
        "new-tiny": ["tinypkg==2.0"],
        "broken": ["tinypkg>=3"],
        "no-requirements": [],
    }
    finished: list[Prepared] = []
    results = await prepare_all(builder, wanted, on_done=finished.append)
    assert sorted(p.plugin for p in finished) == ["broken", "new-tiny", "old-tiny"]
    assert set(results) == {"broken", "new-tiny", "old-tiny"}
    assert isinstance(results["broken"].error, ResolutionFailed)
    assert results["broken"].environment is None
    old, new = results["old-tiny"].environment, results["new-tiny"].environment
    assert old is not None and new is not None
    assert (version_seen(old), version_seen(new)) == ("1.0", "2.0")
    assert not results["old-tiny"].cached
    again = await prepare_all(make_builder(), wanted)
    assert again["old-tiny"].cached and again["new-tiny"].cached
    # Prune after one plugin is removed: only its environment goes.
    del wanted["old-tiny"]
    in_use = keys_in_use(builder, wanted)
    assert in_use == {new.key}
    assert await builder.prune(in_use) == (old.key,)
    assert leftovers(cache)["envs"] == [new.key]


async def test_a_leased_environment_survives_any_prune_until_its_last_lease_ends(
    make_builder: MakeBuilder, cache: Path
) -> None:
    builder = make_builder()
    used = await builder.ensure(["tinypkg==1.0"])
    leases = Leases(builder.store)
    plugin, worker = leases.take(used), leases.take(used)  # a record and one of its workers
    assert plugin is not None and worker is not None and leases.keys == {used.key}
    # Another process's prune (a separate builder on the same cache) must skip it too.
    other = make_builder()
    assert await other.prune(set()) == ()
    plugin.release()
    plugin.release()  # a second release is harmless and does not end the worker's lease
    assert await other.prune(set()) == () and used.root.is_dir()
    worker.release()
    assert leases.keys == frozenset()
    # Just used: the periodic prune's grace spares it; an explicit prune does not.
    assert await other.prune(set(), unused_for=3600) == ()
    assert await other.prune(set()) == (used.key,)
    assert leases.take(used) is None  # gone: a lease is refused, so the host builds it again
    leases.close()


async def test_the_grace_period_counts_from_the_last_use(
    make_builder: MakeBuilder, cache: Path
) -> None:
    builder = make_builder()
    stale = await builder.ensure(["tinypkg==1.0"])
    fresh = await builder.ensure(["tinypkg==2.0"])
    long_ago = time.time() - 7200
    os.utime(stale.root, (long_ago, long_ago))
    assert await builder.prune(set(), unused_for=3600) == (stale.key,)
    assert fresh.root.is_dir()
