"""The worker's event loop: uvloop, with the network refusals asyncio's own loop explains.

Why uvloop: a trivial hook's round trip through ``PluginManager.call`` was 1.5-1.7x the
socketpair floor with host and worker on one core, most of it the worker's asyncio loop turn;
under uvloop it is 1.3-1.4x (``bench/template_bench.py --call-only``). It runs under the
seccomp filter because io_uring and AIO answer ENOSYS, from which libuv falls back.

What changes for plugin code: uvloop resolves names and makes sockets in C, past the wrappers
of ``refusals.py`` that turn a refused network call into a ``PermissionDenied`` naming
``autoweave.fetch``. ``WorkerLoop`` puts them back in the way: names are resolved through
``socket.getaddrinfo`` (in the default executor, as asyncio's loop does), and a socket the
kernel refuses gets the same note.
"""

from __future__ import annotations

import socket
from typing import Any

import uvloop

from autoweave_plugins.worker.explain import REFUSED, Explainer, add_note_once

__all__ = ["WorkerLoop"]


class WorkerLoop(uvloop.Loop):
    async def getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:  # fmt: skip
        resolved: list[Any] = await self.run_in_executor(
            None, socket.getaddrinfo, host, port, family, type, proto, flags
        )
        return resolved

    async def create_connection(
        self, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
    ) -> Any:
        if host is not None:  # a name the sandbox cannot resolve says why, as asyncio's does
            await self.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        try:
            return await super().create_connection(protocol_factory, host, port, **kwargs)
        except OSError as exc:
            if exc.errno in REFUSED:
                add_note_once(exc, Explainer.network(host, port))
            raise

    async def create_datagram_endpoint(
        self, protocol_factory: Any, local_addr: Any = None, remote_addr: Any = None,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        for address in (local_addr, remote_addr):
            if isinstance(address, tuple) and len(address) >= 2:
                await self.getaddrinfo(address[0], address[1], type=socket.SOCK_DGRAM)
        try:
            return await super().create_datagram_endpoint(
                protocol_factory, local_addr, remote_addr, **kwargs
            )
        except OSError as exc:
            if exc.errno in REFUSED:
                add_note_once(exc, Explainer.network())
            raise
