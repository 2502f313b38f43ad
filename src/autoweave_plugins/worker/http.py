"""A minimal HTTP/1.1 server for ``autoweave.serve``, on listening sockets the host handed over.

Parsing is h11's (already installed with httpx); this module only adds limits and the
handler contract. One request per connection, bounded headers, body and time, so a slow or
hostile client can tie up a connection, not the plugin. The types a handler sees and returns
(``Request``, ``HTTPResponse``) are the SDK's, defined in ``sdk`` where plugin authors look.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11

from autoweave_plugins.sdk import Handler, HTTPResponse, Request

__all__ = ["start_servers", "stop_servers"]

log = logging.getLogger("autoweave.plugin")

MAX_HEADERS = 64 * 1024
MAX_BODY = 1 << 20
REQUEST_TIMEOUT = 30.0


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


async def _read(conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
    body = bytearray()
    request: h11.Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise ValueError("request body too large")
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            target = urlsplit(request.target.decode("latin-1"))
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
            return Request(
                request.method.decode("ascii"),
                target.path,
                dict(parse_qsl(target.query)),
                headers,
                bytes(body),
            )
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _respond(
    conn: h11.Connection, writer: asyncio.StreamWriter, response: HTTPResponse
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
    await writer.drain()


_active: set[asyncio.Task[Any]] = set()


def _client(
    handler: Handler,
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            _active.add(task)
            task.add_done_callback(_active.discard)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        try:
            request = await asyncio.wait_for(_read(conn, reader), REQUEST_TIMEOUT)
            if request is None:
                return
            try:
                response = _to_response(await handler(request))
            except Exception:
                log.exception("inbound handler failed for %s %s", request.method, request.path)
                response = HTTPResponse(500, "internal error")
            await _respond(conn, writer, response)
        except (h11.RemoteProtocolError, ValueError, TimeoutError, ConnectionError) as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = 413 if "too large" in str(exc) else 400
                with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
                    await _respond(conn, writer, HTTPResponse(status, "bad request"))
        finally:
            writer.close()

    return serve_one


async def start_servers(listeners: list[socket.socket], handler: Handler) -> list[asyncio.Server]:
    return [await asyncio.start_server(_client(handler), sock=sock) for sock in listeners]


async def stop_servers(servers: list[asyncio.Server], grace: float) -> None:
    """Stop accepting (a blue/green successor shares the socket and takes what is queued),
    then give requests already accepted up to ``grace`` seconds to finish."""
    for server in servers:
        server.close()
    if _active:
        await asyncio.wait(list(_active), timeout=grace)
