"""Inbound ports: the host binds them and hands the listening sockets to the worker.

The plugin itself can neither bind nor connect (Landlock and seccomp forbid both); it only
accepts on sockets the host chose to give it, passed over the RPC socketpair with SCM_RIGHTS.
The host keeps the sockets for the plugin's whole life, so a restart or a blue/green reload
reuses the same port without a window where it is unbound.
"""

from __future__ import annotations

import contextlib
import errno
import socket

from autoweave_plugins.errors import LoadError
from autoweave_plugins.permissions.inbound import InboundSpec

__all__ = ["bind_inbound", "close_all"]


def bind_inbound(plugin: str, spec: InboundSpec) -> list[socket.socket]:
    """Listening TCP sockets for ``spec`` (IPv4 and, where the host has it, IPv6)."""
    bound: list[socket.socket] = []
    for address in spec.bind_addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, spec.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if family == socket.AF_INET6 and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                continue  # this host has no IPv6 there; IPv4 alone serves
            for other in bound:
                other.close()
            if exc.errno == errno.EADDRINUSE:
                raise LoadError(
                    f"inbound port {spec.port} is already in use on {address}", plugin
                ) from None
            raise LoadError(
                f"cannot listen on {address}:{spec.port}: {exc.strerror}", plugin
            ) from None
        bound.append(sock)
    return bound


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
    sockets.clear()
