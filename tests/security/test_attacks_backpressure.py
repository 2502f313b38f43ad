"""Attack: a worker that stops reading its channel while it keeps the host writing to it.

The plugin blocks its own event loop, so the worker reads nothing, and meanwhile makes the host
produce replies: by writing REQUEST frames straight to the RPC socket (requests whose error
replies would echo what was sent), or by starting brokered fetches of large bodies. Whatever
the host cannot deliver it must not keep without bound: it stops reading a worker whose
replies are backed up, never echoes a request into an error, and kills a worker whose queued
replies pass the per-worker cap (exit reason ``protocol``).

Evidence outside the plugin: the host's peak RSS (VmHWM), a benign sibling's call latency
measured throughout, and the worker's exit reason as the host recorded it. The large bodies
come from a file server in its own process, so that its memory is not counted as the host's.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from autoweave_plugins.errors import HookTimeout, PluginCrashed, ProtocolError
from autoweave_plugins.process import WorkerProcess
from tests.helpers.workers import running, write_plugin
from tests.security._support import (
    LOAD_TIMEOUT,
    PACK_STR,
    assert_responsive,
    peak_rss,
    reset_peak_rss,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MB = 1 << 20

FLOOD_CODE = (
    PACK_STR
    + """
import asyncio
import os
import sys
import time

import autoweave



def request(op, fields):
    # [14 (REQUEST), id, op, {fields}], msgpack by hand: the SDK sends only what it should.
    payload = bytes([0x80 | len(fields)]) + b"".join(
        pack_str(k.encode()) + pack_str(v.encode()) for k, v in fields.items()
    )
    body = b"\\x94\\x0e\\xce" + (1 << 20).to_bytes(4, "big") + pack_str(op.encode()) + payload
    return len(body).to_bytes(4, "big") + body


NEAR_CAP = (8 << 20) - 256
FRAMES = {
    # The reported attack: an unknown op whose error message quoted it, 8 MiB a time.
    "unknown_op": lambda: request("x" * NEAR_CAP, {}),
    # A valid op: the broker's error quoted the method back.
    "echo_field": lambda: request("fetch", {"url": "http://127.0.0.1:9/x", "method": "M" * NEAR_CAP}),
    # Many requests, each answered: the replies pile up in the host while nobody reads them.
    "many_echoes": lambda: request("fetch", {"url": "http://127.0.0.1:9/x", "method": "M" * 20_000}),
}


def write_all(fd, data):
    view, sent = memoryview(data), 0
    while sent < len(data):
        try:
            sent += os.write(fd, view[sent:])
        except BlockingIOError:
            time.sleep(0.001)


def flood(route, frames, seconds):
    # A plain (sync) hook: while it runs, the worker's loop reads nothing from the host.
    data = FRAMES[route]()
    fd = int(sys.argv[1])
    deadline = time.monotonic() + seconds
    sent = 0
    while sent < frames and time.monotonic() < deadline:
        write_all(fd, data)
        sent += 1
    return sent


async def fetch_and_stall(url, count, seconds):
    tasks = [asyncio.ensure_future(autoweave.fetch(url, timeout=10)) for _ in range(count)]
    await asyncio.sleep(0)  # every task sends its REQUEST now
    time.sleep(seconds)  # then nothing is read while the host answers them
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return sum(not isinstance(r, BaseException) for r in results)
"""
)
HOOKS = {"onFlood": "flood", "onFetchAndStall": "fetch_and_stall"}
STALL = 20.0  # seconds the flooded worker reads nothing


class SiblingWatch:
    """Calls the benign sibling over and over while an attack runs; keeps every latency."""

    def __init__(self, sibling: WorkerProcess) -> None:
        self.sibling = sibling
        self.latencies: list[float] = []
        self._stop = asyncio.Event()

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.latencies.append(await assert_responsive(self.sibling, limit=1.0))

    async def during(self, attack: Awaitable[Any]) -> Any:
        watcher = asyncio.ensure_future(self._run())
        try:
            return await attack
        finally:
            self._stop.set()
            await watcher  # re-raises a sibling call that was too slow


FILE_SERVER = """
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()
"""
BIG_BODY = 3 * MB


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def port(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[int]:
    """A static file server in its own process, with ``/allowed/big`` of ``BIG_BODY`` bytes."""
    root = tmp_path_factory.mktemp("files")
    (root / "allowed").mkdir()
    (root / "allowed" / "big").write_bytes(b"x" * BIG_BODY)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FILE_SERVER, str(root),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        yield int(await asyncio.wait_for(server.stdout.readline(), 10))
    finally:
        server.kill()
        await server.wait()


@pytest_asyncio.fixture(loop_scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        yield http


def flooder(root: Path, port: int) -> Any:
    allowed = {"network": {"outbound": [f"http://127.0.0.1:{port}/allowed/*"]}}
    return write_plugin(root, "flooder", FLOOD_CODE, hooks=HOOKS, permissions=allowed)


@pytest.mark.parametrize(
    ("route", "frames", "seconds"),
    [
        pytest.param("unknown_op", 16, 2.0, id="unknown-op-8MiB"),
        pytest.param("echo_field", 16, 2.0, id="echoed-field-8MiB"),
        pytest.param("many_echoes", 20_000, 2.0, id="many-20KiB-echoes-never-read"),
    ],
)
async def test_unread_replies_do_not_grow_the_host(
    tmp_path: Path,
    sibling: WorkerProcess,
    port: int,
    client: httpx.AsyncClient,
    route: str,
    frames: int,
    seconds: float,
) -> None:
    plugin = flooder(tmp_path / "plugins", port)
    async with running(plugin, http=client, load_timeout=LOAD_TIMEOUT) as worker:
        await assert_responsive(sibling)
        peak_before = reset_peak_rss()
        outcome: Any
        try:
            outcome = await SiblingWatch(sibling).during(
                worker.call("onFlood", route, frames, seconds, timeout=seconds + 1.5)
            )
        except (ProtocolError, PluginCrashed, HookTimeout) as exc:
            outcome = exc  # ending the worker is a fine answer; what the host kept is the test
        growth = peak_rss() - peak_before
        reason = worker.exit_reason
    assert growth < 100 * MB, f"host peak RSS grew by {growth / MB:.0f} MB ({outcome!r})"
    if route == "unknown_op":
        assert reason == "protocol", (reason, outcome)  # no such request exists
    await assert_responsive(sibling)


async def test_a_worker_over_the_write_cap_is_killed(
    tmp_path: Path, sibling: WorkerProcess, port: int, client: httpx.AsyncClient
) -> None:
    """Twelve 3 MiB fetch replies, never read: 36 MiB to queue, over the 32 MiB default cap."""
    plugin = flooder(tmp_path / "plugins", port)
    url = f"http://127.0.0.1:{port}/allowed/big"
    async with running(plugin, http=client, load_timeout=LOAD_TIMEOUT) as worker:
        await assert_responsive(sibling)
        peak_before = reset_peak_rss()
        started = time.monotonic()
        # The stall only has to outlast the host's fetches (36 MiB through httpx): about a
        # second here, but a loaded machine stretches it, and the kill ends the stall anyway.
        with contextlib.suppress(ProtocolError, PluginCrashed):
            await SiblingWatch(sibling).during(
                worker.call("onFetchAndStall", url, 12, STALL, timeout=STALL + 7.0)
            )
        elapsed = time.monotonic() - started
        growth = peak_rss() - peak_before
        reason = worker.exit_reason
    assert reason == "protocol", reason
    assert elapsed < STALL, "the worker was not killed before it read its replies"
    assert growth < 100 * MB, f"host peak RSS grew by {growth / MB:.0f} MB"
    await assert_responsive(sibling)
