"""A minimal HTTP/1.1 server for ``autoweave.serve``, on listening sockets the host handed over.

Parsing is h11's (already installed with httpx); this module only adds limits and the
handler contract. One request per connection, and everything a client controls is bounded
(``ServeLimits``, set by the host): how many connections are open at once, how long the
headers, the body and the reading of the response may take, and how big a request may be.

Why a cap with eviction rather than a queue: 300 clients that open a connection and then send
a byte now and then (slowloris) used to hold every file descriptor the worker has for 30 s
each, while honest clients waited in the listen queue. Now a plugin holds at most
``max_connections``; at the cap, a new connection takes the place of the one that has been
stalled longest in sending its request (an honest client sends its headers at once), and when
every connection is past that stage, the new one is refused at once with 503.

The types a handler sees and returns (``Request``, ``HTTPResponse``) are the SDK's, defined in
``sdk`` where plugin authors look.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11

from autoweave_plugins.rpc.serve_limits import ServeLimits
from autoweave_plugins.sdk import Handler, HTTPResponse, Request

__all__ = ["start_servers", "stop_servers"]

log = logging.getLogger("autoweave.plugin")

EVICT_AFTER = 0.1
"""A connection that has sent nothing yet is not evicted this young: time for its first bytes to
be read, so that a burst of new connections cannot push out an honest client before its request
is seen. One that sent part of its headers and stopped is evictable at once."""

LINGER = 1.0
"""How long a refused connection is read (and dropped) so that its 503 arrives intact."""

BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 12\r\nretry-after: 1\r\nconnection: close\r\n\r\nserver busy\n"
)


def _to_response(value: Any) -> HTTPResponse:
    if isinstance(value, HTTPResponse):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return HTTPResponse(int(value[0]), *_body(value[1]))
    return HTTPResponse(200, *_body(value))


def _body(value: Any) -> tuple[bytes | str, Mapping[str, str]]:
    if isinstance(value, bytes | str):
        return value, {
            "content-type": "text/plain; charset=utf-8"
            if isinstance(value, str)
            else "application/octet-stream"
        }
    return json.dumps(value), {"content-type": "application/json"}


class _TooLarge(ValueError):
    pass


async def _next_event(
    conn: h11.Connection, reader: asyncio.StreamReader, client: _Client | None = None
) -> Any:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await reader.read(65536))
        if client is not None:
            client.partial = True
    return event


async def _read(
    conn: h11.Connection, reader: asyncio.StreamReader, client: _Client, limits: ServeLimits
) -> Request | None:
    """The request, or None if the client left first. Raises TimeoutError past a phase's time."""
    async with asyncio.timeout(limits.header_timeout):
        request = await _next_event(conn, reader, client)
    client.partial = False
    if isinstance(request, h11.ConnectionClosed):
        return None
    if not isinstance(request, h11.Request):
        raise h11.RemoteProtocolError(f"expected a request, got {type(request).__name__}")
    body = bytearray()
    async with asyncio.timeout(limits.body_timeout):
        while not isinstance(event := await _next_event(conn, reader), h11.EndOfMessage):
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > limits.max_body_bytes:
                    raise _TooLarge("request body too large")
    target = urlsplit(request.target.decode("latin-1"))
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
    return Request(
        request.method.decode("ascii"),
        target.path,
        dict(parse_qsl(target.query)),
        headers,
        bytes(body),
    )


async def _respond(
    conn: h11.Connection, writer: asyncio.StreamWriter, response: HTTPResponse, timeout: float
) -> None:
    body = response.body.encode("utf-8") if isinstance(response.body, str) else response.body
    headers = [
        (k, v)
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "connection")
    ]
    headers += [("content-length", str(len(body))), ("connection", "close")]
    writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
    writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await asyncio.wait_for(writer.drain(), timeout)


@dataclass(slots=True, eq=False)
class _Client:
    writer: asyncio.StreamWriter
    admitted: float
    task: asyncio.Task[Any] | None = None
    receiving: bool = True  # still sending its request: the stage a slow client stalls in
    partial: bool = False  # sent part of its headers and stopped, as slowloris does

    def evictable(self, now: float) -> bool:
        return self.receiving and (self.partial or now - self.admitted >= EVICT_AFTER)


class _Gate:
    """Admission to one plugin's server: at most ``limit`` clients, slowest senders evicted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.clients: dict[_Client, None] = {}  # insertion-ordered: oldest first
        self.lingering = 0  # turned away, dropping their request before the close

    def admit(self, client: _Client) -> bool:
        if len(self.clients) >= self.limit:
            victim = next((c for c in self.clients if c.evictable(client.admitted)), None)
            if victim is None:
                return False
            self.release(victim)
            victim.writer.write(BUSY)
            victim.writer.close()
            if victim.task is not None:
                victim.task.cancel()
        self.clients[client] = None
        return True

    def release(self, client: _Client) -> None:
        self.clients.pop(client, None)

    async def turn_away(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer 503 at once. Closing a socket whose request was not read sends a reset,
        which can destroy the 503 before the client reads it, so read and drop its request
        for up to ``LINGER`` s first, for as many such connections as the server holds."""
        writer.write(BUSY)
        if self.lingering >= self.limit:
            writer.close()
            return
        self.lingering += 1
        try:
            with contextlib.suppress(OSError, TimeoutError):
                writer.write_eof()
                async with asyncio.timeout(LINGER):
                    while await reader.read(65536):
                        pass
        finally:
            self.lingering -= 1
            writer.close()


_active: set[asyncio.Task[Any]] = set()


def _client(
    handler: Handler, limits: ServeLimits, gate: _Gate
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        client = _Client(writer, asyncio.get_running_loop().time(), task=task)
        if not gate.admit(client):
            await gate.turn_away(reader, writer)
            return
        if task is not None:
            _active.add(task)
            task.add_done_callback(_active.discard)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        try:
            request = await _read(conn, reader, client, limits)
            client.receiving = False
            if request is None:
                return
            try:
                response = _to_response(await handler(request))
            except Exception:
                log.exception("inbound handler failed for %s %s", request.method, request.path)
                response = HTTPResponse(500, "internal error")
            await _respond(conn, writer, response, limits.write_timeout)
        except (h11.RemoteProtocolError, ValueError, TimeoutError, ConnectionError) as exc:
            client.receiving = False
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                if isinstance(exc, TimeoutError):
                    status, text = 408, "request timeout"
                elif isinstance(exc, _TooLarge):
                    status, text = 413, "request too large"
                else:
                    status, text = 400, "bad request"
                with contextlib.suppress(h11.LocalProtocolError, ConnectionError, TimeoutError):
                    await _respond(conn, writer, HTTPResponse(status, text), limits.write_timeout)
        finally:
            gate.release(client)
            writer.close()

    return serve_one


async def start_servers(
    listeners: list[socket.socket], handler: Handler, limits: ServeLimits | None = None
) -> list[asyncio.Server]:
    """Serve ``handler`` on every listener, under one set of ``limits`` shared by all."""
    limits = limits or ServeLimits()
    serve_one = _client(handler, limits, _Gate(limits.max_connections))
    return [await asyncio.start_server(serve_one, sock=sock) for sock in listeners]


async def stop_servers(servers: list[asyncio.Server], grace: float) -> None:
    """Stop accepting (a blue/green successor shares the socket and takes what is queued),
    then give requests already accepted up to ``grace`` seconds to finish."""
    for server in servers:
        server.close()
    if _active:
        await asyncio.wait(list(_active), timeout=grace)
