"""Attack classes 4 and 15: patterns and manifests crafted to stall the host's event loop.

A plugin chooses the URL patterns in its manifest and the URLs it asks the broker to fetch; the
broker matches one against the other on the loop. A plugin's author chooses the bytes of its
manifest, which discovery parses on the loop (``PluginManager.rescan`` calls ``discover``
synchronously). Either, made expensive, would freeze every plugin and every timer of the host.

Evidence outside the plugin: the longest stall of the loop, measured by a timer the test runs,
and a benign sibling plugin whose calls must keep answering in under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from autoweave_plugins.discovery import discover
from autoweave_plugins.manifest.model import MANIFEST_FILENAME
from autoweave_plugins.process import WorkerProcess
from tests.helpers.workers import running, write_plugin
from tests.security._support import CALL_TIMEOUT, LOAD_TIMEOUT, assert_responsive

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 1.0  # seconds: the longest the sibling may take per call, or the loop may stall
MIB = 1 << 20


@dataclass
class LoopLag:
    worst: float = 0.0


@contextlib.asynccontextmanager
async def loop_lag(interval: float = 0.005) -> AsyncIterator[LoopLag]:
    """The longest the event loop went without running a due timer, while the block runs."""
    lag = LoopLag()
    loop = asyncio.get_running_loop()
    started = loop.create_future()
    stop = asyncio.Event()

    async def watch() -> None:
        started.set_result(None)
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(interval)
            lag.worst = max(lag.worst, loop.time() - before - interval)

    watcher = asyncio.ensure_future(watch())
    await started
    try:
        yield lag
    finally:
        stop.set()
        await watcher


# --------------------------------------------------------------------------- class 4: ReDoS

REDOS_PATTERN = "https://redos.example.com/*a*a*a*a*a*b"
# 110 characters: 3-4 s per match under the backtracking regex the matcher used to be; the cost
# grows as n^5 for this pattern.
REDOS_URL = "https://redos.example.com/" + "a" * 110

FETCH_CODE = """
import autoweave


async def fetch(url, times):
    outcomes = []
    for _ in range(times):
        try:
            await autoweave.fetch(url, timeout=5)
            outcomes.append("fetched")
        except autoweave.PermissionDenied as exc:
            outcomes.append("denied: " + str(exc)[-200:])
        except BaseException as exc:
            outcomes.append(type(exc).__name__)
    return outcomes
"""


async def test_a_redos_pattern_cannot_stall_the_host(
    tmp_path: Path, sibling: WorkerProcess
) -> None:
    plugin = write_plugin(
        tmp_path,
        "redos",
        FETCH_CODE,
        hooks={"onFetch": "fetch"},
        permissions={"network": {"outbound": [REDOS_PATTERN]}},
    )
    async with (
        httpx.AsyncClient(trust_env=False, timeout=5) as client,
        running(plugin, http=client, load_timeout=LOAD_TIMEOUT) as attacker,
        loop_lag() as lag,
    ):
        attack = asyncio.ensure_future(attacker.call("onFetch", REDOS_URL, 3, timeout=CALL_TIMEOUT))
        try:
            await assert_responsive(sibling, LIMIT)
            while not attack.done():
                await assert_responsive(sibling, LIMIT)
            outcomes = await attack
        finally:
            attack.cancel()
    # The broker did match (and refuse): the URL ends in 'a', the pattern in 'b'.
    assert len(outcomes) == 3, outcomes
    assert all(o.startswith("denied") and "matches none" in o for o in outcomes), outcomes
    assert lag.worst < LIMIT, f"the host's loop stalled for {lag.worst:.2f} s"


# --------------------------------------------------------------------------- class 15: parsing


def _fill(head: bytes, unit: bytes, size: int, tail: bytes = b"") -> bytes:
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


# The reported case: 40,000 escaped quotes in a string that never closes took 4.9 s to refuse.
REPORTED = _fill(b'{"name": "', b'\\"', 80_010)
# The same and the other hostile shapes at the 1 MiB limit (about an hour for the first before).
AT_THE_LIMIT = {
    "escapes": _fill(b'{"name": "', b'\\"', MIB),
    "deep": _fill(b"", b"[", MIB),
    "values": _fill(b"[", b"{},", MIB, b"{}]"),
    "keys": _fill(b"{", b'"a":0,', MIB, b'"a":0}'),
    "integer": _fill(b'{"name": ', b"9", MIB, b"}"),
    "surrogates": _fill(b'{"name": "', b"\\ud800", MIB, b'"}'),
    "nan-last": _fill(b'{"name": "', b"x", MIB, b'", "d": NaN}'),
}


def _plugin_dir(root: Path, hostile: dict[str, bytes]) -> Path:
    write_plugin(root, "benign", "def initialize():\n    return 'ok'\n")
    for name, data in hostile.items():
        (root / name).mkdir()
        (root / name / MANIFEST_FILENAME).write_bytes(data)
    return root


async def _discover_on_the_loop(root: Path, sibling: WorkerProcess) -> tuple[set[str], float]:
    """Run discovery as ``rescan`` does, on the loop, while a sibling call is in flight."""
    loop = asyncio.get_running_loop()
    probe = asyncio.ensure_future(assert_responsive(sibling, LIMIT))
    scanned: asyncio.Future[tuple[set[str], float]] = loop.create_future()

    def scan() -> None:  # queued behind the probe's first step, which sends its call
        started = time.perf_counter()
        found = discover(root)
        elapsed = time.perf_counter() - started
        assert list(found.plugins) == ["benign"]
        for problem in found.problems:
            assert problem.issues[0].path.startswith("$"), problem
        scanned.set_result(({Path(p.folder).name for p in found.problems}, elapsed))

    loop.call_soon(scan)
    try:
        return await scanned
    finally:
        await probe


async def test_hostile_manifests_cannot_stall_discovery(
    tmp_path: Path, sibling: WorkerProcess
) -> None:
    # The reported size first: a parser that is still quadratic fails here in seconds.
    for label, hostile in (("reported", {"escapes": REPORTED}), ("limit", AT_THE_LIMIT)):
        root = _plugin_dir(tmp_path / label, hostile)
        async with loop_lag() as lag:
            refused, elapsed = await _discover_on_the_loop(root, sibling)
        assert refused == set(hostile)
        assert lag.worst < LIMIT, f"{label}: the loop stalled {lag.worst:.2f} s"
        # Each hostile manifest costs the loop well under the 100 ms a parse may take.
        assert elapsed < 0.1 * len(hostile) + 0.1, f"{label}: discovery took {elapsed:.2f} s"
