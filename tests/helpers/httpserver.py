"""A tiny HTTP/1.1 server on 127.0.0.1 for fetch tests: records every request it sees."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tests.helpers.net import tcp_server


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalServer:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append(Seen(method, path, headers, body))
            status, extra, payload = self.route(path, method, headers, body)
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n{extra}\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()

    def route(
        self, path: str, method: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        if path.startswith("/allowed/redirect-to/"):
            return 302, f"Location: {path.removeprefix('/allowed/redirect-to')}\r\n", b""
        if path.startswith("/allowed/redirect-abs/"):
            return 302, f"Location: http://127.0.0.1:{self.port}/secret/x\r\n", b""
        if path.startswith("/allowed/to-port/"):
            port = path.split("/")[3]
            return 302, f"Location: http://127.0.0.1:{port}/allowed/landing\r\n", b""
        if path == "/allowed/gzip":
            return (
                200,
                "Content-Encoding: gzip\r\nContent-Type: application/json\r\n",
                gzip.compress(b'{"zipped": true}'),
            )
        if path == "/allowed/big":
            return 200, "", b"x" * (3 << 20)
        echo = {
            "method": method,
            "path": path,
            "host": headers.get("host"),
            "body": body.decode("latin-1"),
        }
        return 200, "Content-Type: application/json\r\n", json.dumps(echo).encode()


@asynccontextmanager
async def local_server() -> AsyncIterator[LocalServer]:
    state = LocalServer()
    async with tcp_server(state._handle) as state.port:
        yield state
