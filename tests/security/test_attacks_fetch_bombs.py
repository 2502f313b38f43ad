"""Decompression bombs through the fetch broker: the host must not inflate what a plugin chose.

The attacker is allowed to fetch ``http://127.0.0.1:{port}/allowed/*`` on a server the test
runs, and that server answers with compressed bombs: gzip inside gzip (a few KiB on the wire,
hundreds of MiB once both layers are inflated), single gzip and deflate layers far past the
response cap, and encodings the broker cannot decode with a bound. The plugin fires 16 fetches
at once (its whole allowance). The verdict comes from the host: its peak RSS, the latency of a
benign sibling plugin called throughout, and the error the plugin was given.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio

from autoweave_plugins.process import WorkerProcess
from tests.helpers.workers import running, write_plugin
from tests.security._flood import watch_host
from tests.security._support import CALL_TIMEOUT, LOAD_TIMEOUT

pytestmark = pytest.mark.asyncio(loop_scope="module")

FLOOD = 16
MAX_RSS_GROWTH = 100 << 20
MAX_SIBLING_LATENCY = 1.0

BOMB_CODE = """
import asyncio
import autoweave


async def one(url):
    try:
        response = await autoweave.fetch(url, timeout=30)
    except autoweave.FetchError as exc:
        return {"outcome": "failed", "detail": str(exc)[:500]}
    except autoweave.PermissionDenied as exc:
        return {"outcome": "denied", "detail": str(exc)[:500]}
    return {"outcome": "fetched", "size": len(response.body), "head": response.body[:32]}


async def flood(url, count):
    return await asyncio.gather(*(one(url) for _ in range(count)))
"""


def _compress(wbits: int, level: int, zeros: int) -> bytes:
    """``zeros`` zero bytes compressed as gzip (wbits 31) or zlib-wrapped deflate (wbits 15)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, wbits)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(zeros >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


@dataclass
class BombServer:
    """Serves each route's (headers, body) verbatim and counts the requests it answered."""

    routes: dict[str, tuple[list[tuple[str, str]], bytes]] = field(default_factory=dict)
    port: int = 0
    answered: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            target = head.split(b" ", 2)[1].decode("latin-1")
            headers, body = self.routes.get(target, ([], b"not found"))
            lines = [f"{name}: {value}" for name, value in headers]
            lines += [f"Content-Length: {len(body)}", "Connection: close"]
            writer.write(("HTTP/1.1 200 OK\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode())
            writer.write(body)
            self.answered += 1
            await asyncio.wait_for(writer.drain(), 10)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


def _bombs() -> dict[str, tuple[list[tuple[str, str]], bytes]]:
    # Level 1 builds 256 MiB of zeros in about half a second; level 9 gets the 1000:1 ratio.
    inner = _compress(31, 1, 256 << 20)
    outer = zlib.compressobj(9, zlib.DEFLATED, 31)
    gzip_gzip = outer.compress(inner) + outer.flush()
    deflate = _compress(15, 9, 128 << 20)
    gzip_one = _compress(31, 9, 128 << 20)
    return {
        "/allowed/gzip-gzip": ([("Content-Encoding", "gzip, gzip")], gzip_gzip),
        "/allowed/gzip-twice": (
            [("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")],
            gzip_gzip,
        ),
        "/allowed/deflate": ([("Content-Encoding", "deflate")], deflate),
        "/allowed/gzip": ([("Content-Encoding", "gzip")], gzip_one),
        "/allowed/br": ([("Content-Encoding", "br")], b"\x1b\xff\xff"),
        "/allowed/small": ([("Content-Encoding", "gzip")], _compress(31, 6, 1 << 20)),
    }


@dataclass
class Attack:
    worker: WorkerProcess
    server: BombServer

    async def flood(self, path: str, count: int = FLOOD) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.server.port}{path}"
        result: list[dict[str, Any]] = await self.worker.call(
            "onFlood", url, count, timeout=CALL_TIMEOUT * 4
        )
        return result


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def attack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Attack]:
    server = BombServer(_bombs())
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    plugin = write_plugin(
        tmp_path_factory.mktemp("plugins"),
        "bomb-fetcher",
        BOMB_CODE,
        hooks={"onFlood": "flood"},
        permissions={"network": {"outbound": [f"http://127.0.0.1:{server.port}/allowed/*"]}},
    )
    try:
        async with (
            httpx.AsyncClient(trust_env=False) as client,
            running(plugin, http=client, load_timeout=LOAD_TIMEOUT) as worker,
        ):
            yield Attack(worker, server)
    finally:
        listener.close()
        await listener.wait_closed()


async def test_an_honest_compressed_body_is_decoded(attack: Attack) -> None:
    """Control: a 1 MiB gzip body inflates for the plugin, so refusals below are not blanket."""
    [result] = await attack.flood("/allowed/small", 1)
    assert result == {"outcome": "fetched", "size": 1 << 20, "head": bytes(32)}, result


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/allowed/gzip-gzip", r"stacked content encodings \(gzip, gzip\) are refused"),
        ("/allowed/gzip-twice", r"stacked content encodings \(gzip, gzip\) are refused"),
        # One layer inflates until a cap stops it: its own, or the plugin's total in flight.
        ("/allowed/deflate", "larger than 10485760 bytes once deflate|hold more than"),
        ("/allowed/gzip", "larger than 10485760 bytes once gzip|hold more than"),
        ("/allowed/br", "content encoding 'br' is not supported"),
    ],
)
async def test_bombs_are_refused_with_bounded_memory_and_loop(
    attack: Attack, sibling: WorkerProcess, path: str, error: str
) -> None:
    answered = attack.server.answered
    async with watch_host(sibling) as report:
        results = await attack.flood(path)
    print(f"{path}: {report.summary()}")
    # The server really sent every bomb: the attack happened.
    assert attack.server.answered - answered == FLOOD
    assert all(r["outcome"] == "failed" and re.search(error, r["detail"]) for r in results), results
    assert report.rss_growth < MAX_RSS_GROWTH, report.summary()
    assert report.slowest_call < MAX_SIBLING_LATENCY, report.summary()
    assert attack.worker.alive
