"""Slowloris against a plugin's own ``autoweave.serve``: its honest clients must still get in.

The test binds the plugin's inbound port itself (as the host does) and hands the socket to a
real sandboxed worker whose plugin serves HTTP on it. Then 300 clients connect and send half a
request each, and keep the connection open. While they hold on, a well-behaved client asks for
a page. Everything is judged from the outside: the honest client's status and latency, how many
of the 300 connections the server still keeps (no more than its cap), and how quickly the rest
were turned away.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from autoweave_plugins.loader import build_spec
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.rpc import ServeLimits
from tests.helpers.workers import start_worker, write_plugin
from tests.security._support import LOAD_TIMEOUT, assert_responsive

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLOW_CLIENTS = 300
HONEST_DEADLINE = 2.0

SERVER_CODE = """
import autoweave


async def handle(request):
    return {"path": request.path}


async def start():
    await autoweave.serve(handle)
"""


@dataclass
class SlowClient:
    """Half a request, then silence; records when (and with what) the server closed on it."""

    writer: asyncio.StreamWriter | None = None
    closed_after: float | None = None
    answer: bytes = b""


async def _slowloris(port: int, client: SlowClient, connected: asyncio.Event) -> None:
    started = time.perf_counter()
    try:
        reader, client.writer = await asyncio.open_connection("127.0.0.1", port)
        client.writer.write(b"GET /slow HTTP/1.1\r\nHost: plugin\r\nX-Slow: ")
        await client.writer.drain()
    finally:
        connected.set()
    with contextlib.suppress(ConnectionError):
        client.answer = await reader.read(256)  # returns when the server answers or hangs up
    client.closed_after = time.perf_counter() - started


@contextlib.asynccontextmanager
async def serving_plugin(tmp_path: Path) -> AsyncIterator[tuple[WorkerProcess, int]]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    plugin = write_plugin(
        tmp_path,
        "web",
        SERVER_CODE,
        hooks={"onLoad": "start"},
        permissions={"network": {"inbound": {"port": port}}},
    )
    worker = await start_worker()
    try:
        spec = build_spec(plugin, serve_limits=ServeLimits())  # the defaults a host ships
        await worker.assign(spec, timeout=LOAD_TIMEOUT, inbound=[listener])
        yield worker, port
    finally:
        await worker.stop()
        listener.close()


async def test_slowloris_leaves_room_for_an_honest_client(
    tmp_path: Path, sibling: WorkerProcess
) -> None:
    async with serving_plugin(tmp_path) as (worker, port), httpx.AsyncClient() as http:
        # Control: the server answers before the attack.
        assert (await http.get(f"http://127.0.0.1:{port}/before", timeout=5)).status_code == 200
        clients = [SlowClient() for _ in range(SLOW_CLIENTS)]
        connected = [asyncio.Event() for _ in clients]
        tasks = [
            asyncio.ensure_future(_slowloris(port, c, e))
            for c, e in zip(clients, connected, strict=True)
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in connected)), 30)
            assert all(c.writer is not None for c in clients), "the attack could not connect"
            started = time.perf_counter()
            try:
                response = await http.get(
                    f"http://127.0.0.1:{port}/honest", timeout=HONEST_DEADLINE
                )
            except httpx.TimeoutException:
                pytest.fail(f"the honest client got no answer within {HONEST_DEADLINE} s")
            elapsed = time.perf_counter() - started
            held = [c for c in clients if c.closed_after is None]
            turned_away = [c for c in clients if c.closed_after is not None]
            print(
                f"honest: {response.status_code} in {elapsed:.3f}s; slow clients held "
                f"{len(held)}, turned away {len(turned_away)} (slowest after "
                f"{max((c.closed_after or 0.0) for c in turned_away) if turned_away else 0:.3f}s)"
            )
            assert response.status_code == 200 and response.json() == {"path": "/honest"}
            assert elapsed < HONEST_DEADLINE
            # The cap, seen from outside: the rest were told 503 and hung up on, quickly.
            assert len(held) <= ServeLimits().max_connections
            assert all(c.answer.startswith(b"HTTP/1.1 503 ") for c in turned_away)
            assert all((c.closed_after or 0.0) < 5.0 for c in turned_away)
            assert worker.alive
            await assert_responsive(sibling)
        finally:
            for task in tasks:
                task.cancel()
            for client in clients:
                if client.writer is not None:
                    client.writer.close()
            await asyncio.gather(*tasks, return_exceptions=True)
