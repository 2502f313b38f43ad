"""The inbound HTTP server's limits, in-process on loopback: caps, timeouts, eviction, sizes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from autoweave_plugins.rpc import ServeLimits
from autoweave_plugins.sdk import Request
from autoweave_plugins.worker.http import start_servers, stop_servers


def fast(max_connections: int = 64) -> ServeLimits:
    return ServeLimits(max_connections, header_timeout=0.3, body_timeout=0.3, write_timeout=0.3)


@contextlib.asynccontextmanager
async def server(limits: ServeLimits, handler: Any = None) -> AsyncIterator[int]:
    async def echo(request: Request) -> Any:
        return {"path": request.path, "size": len(request.body)}

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    servers = await start_servers([listener], handler or echo, limits)
    try:
        yield listener.getsockname()[1]
    finally:
        await stop_servers(servers, 1.0)
        listener.close()


async def exchange(port: int, data: bytes, *, read: bool = True) -> tuple[bytes, float]:
    """Send ``data``; return the server's whole answer and how long it took to close."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5) if read else b""
    writer.close()
    return answer, time.perf_counter() - started


GET = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize(
    "fields",
    [
        {"max_connections": 0},
        {"header_timeout": -1},
        {"body_timeout": "10"},
        {"max_body_bytes": 1.5},
        {"write_timeout": True},
    ],
)
def test_limits_must_be_positive_numbers(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be a positive number"):
        ServeLimits(**fields)


def test_limits_cross_the_wire() -> None:
    limits = ServeLimits(max_connections=3, header_timeout=1.5)
    assert ServeLimits.from_wire(limits.to_wire()) == limits
    assert ServeLimits.from_wire({}) == ServeLimits()
    with pytest.raises(ValueError, match="bad serve limits"):
        ServeLimits.from_wire({"max_connection": 3})
    with pytest.raises(ValueError, match="mapping"):
        ServeLimits.from_wire([])


async def test_headers_that_never_end_get_408_in_time() -> None:
    async with server(fast()) as port:
        answer, elapsed = await exchange(port, b"GET /x HTTP/1.1\r\nHost: t\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.25 < elapsed < 2.0


async def test_a_body_that_never_ends_gets_408_in_time() -> None:
    async with server(fast()) as port:
        head = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly some"
        answer, elapsed = await exchange(port, head)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 0.25 < elapsed < 2.0


async def test_sizes_are_capped() -> None:
    async with server(ServeLimits(max_body_bytes=10, max_header_bytes=1024)) as port:
        body, _ = await exchange(
            port, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n" + b"x" * 11
        )
        headers, _ = await exchange(port, b"GET /x HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n")
        fits, _ = await exchange(
            port, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n" + b"x" * 10
        )
    assert body.startswith(b"HTTP/1.1 413 ")
    assert headers.startswith(b"HTTP/1.1 400 ")
    assert fits.startswith(b"HTTP/1.1 200 ") and fits.endswith(b'{"path": "/x", "size": 10}')


async def test_over_the_cap_busy_connections_are_refused_at_once() -> None:
    """Connections past their request (here: in a slow handler) are never evicted."""
    release = asyncio.Event()
    both_inside = asyncio.Event()
    entered: list[str] = []

    async def slow(request: Request) -> str:
        entered.append(request.path)
        if len(entered) == 2:
            both_inside.set()
        await release.wait()
        return "done"

    async with server(ServeLimits(max_connections=2), slow) as port:
        busy = [asyncio.ensure_future(exchange(port, GET)) for _ in range(2)]
        await asyncio.wait_for(both_inside.wait(), 5)
        refused, elapsed = await exchange(port, GET)
        release.set()
        done = await asyncio.gather(*busy)
    assert refused.startswith(b"HTTP/1.1 503 ") and elapsed < 1.0
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer, _ in done)


async def test_at_the_cap_a_stalled_sender_makes_room() -> None:
    async with server(ServeLimits(max_connections=2)) as port:
        stalled = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n")
            await writer.drain()
            stalled.append((reader, writer))
        answer, elapsed = await exchange(port, GET)
        first = await asyncio.wait_for(stalled[0][0].read(), 5)
        for _, writer in stalled:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and elapsed < 1.0
    assert first.startswith(b"HTTP/1.1 503 ")  # the oldest stalled sender was let go


async def test_a_client_that_never_reads_its_answer_frees_its_slot() -> None:
    async def huge(request: Request) -> bytes:
        return bytes(64 << 20)  # far more than the socket buffers hold

    async with server(fast(max_connections=1), huge) as port:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET)
        await writer.drain()
        # It never reads; once the write timeout passes, its slot serves someone else.
        deadline = time.monotonic() + 5.0
        while True:
            answer, _ = await exchange(port, b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")
            if not answer.startswith(b"HTTP/1.1 503 ") or time.monotonic() > deadline:
                break
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:40]
