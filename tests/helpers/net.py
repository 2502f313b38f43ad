"""Ports and throwaway servers on 127.0.0.1 for tests that need something to connect to."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

__all__ = ["free_port", "tcp_server"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server started elsewhere)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def tcp_server(handle: Handler) -> AsyncIterator[int]:
    """Serve ``handle`` on an ephemeral 127.0.0.1 port (yielded); closed, bounded, on exit."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
