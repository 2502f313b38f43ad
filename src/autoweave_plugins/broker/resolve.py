"""Name resolution for the fetch broker: asynchronous (c-ares), and capped per plugin.

Why not ``loop.getaddrinfo``: it runs the blocking libc lookup in the loop's shared default
executor, a handful of threads on a small machine. A name whose server never answers holds a
thread for the resolver's whole timeout, so one plugin asking for 16 such names took every
thread, and another plugin's lookup of its own ``localhost`` queued behind them until its fetch
timed out. A private thread pool only moves the wall: N hostile plugins still fill it.

c-ares (through pycares, kept by the aio-libs people and the base of aiodns) needs no thread per
lookup: a query that never gets an answer costs a timer and a socket, so it cannot hold up
anyone else's. It reads ``/etc/hosts`` and ``/etc/resolv.conf`` as libc does (though not
nsswitch modules such as mDNS or LDAP), works offline, gives up after ``timeout`` x ``tries``,
and takes explicit nameservers (``host`` or ``host:port``), which is how a host can choose the
resolver its plugins use, and how tests point it at a server that never answers.

Should c-ares fail to start (its thread watches resolv.conf with inotify, and watches can run
out), lookups fall back to libc in a private pool of ``FALLBACK_THREADS``, logged as an error:
still capped per plugin, but no longer immune to a handful of hostile plugins together.

Each plugin still gets at most ``max_in_flight`` lookups at once (``LookupLimiter``). A lookup
whose fetch gave up keeps its slot until c-ares itself is done with it, so abandoning lookups
cannot pile up more of them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pycares

__all__ = ["CaresResolver", "LookupLimiter", "Resolve", "shared_resolver"]

log = logging.getLogger(__name__)

Resolve = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: what the fetch broker needs from a resolver."""


def _settle(future: asyncio.Future[list[str]], result: Any, error: int | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(OSError(error, pycares.errno.strerror(error)))
    else:
        future.set_result([str(node.addr[0].decode("ascii")) for node in result.nodes])


FALLBACK_THREADS = 16
"""Threads for libc lookups if c-ares cannot start (each plugin still holds at most its cap)."""


@functools.cache
def _fallback_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(FALLBACK_THREADS, "autoweave-dns")


def _libc_lookup(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


class CaresResolver:
    """Lookups through one c-ares channel, whose own thread waits on the sockets of all of them.

    The channel is opened on first use (reading resolv.conf and hosts then) and serves every
    event loop in the process; each answer is handed to the loop that asked for it.
    """

    def __init__(
        self, nameservers: tuple[str, ...] = (), timeout: float = 2.0, tries: int = 2
    ) -> None:
        self.nameservers = nameservers
        self.timeout = timeout
        self.tries = tries
        self._channel: pycares.Channel | None = None
        self._broken: str | None = None  # why the channel could not be opened

    def _open(self) -> pycares.Channel | None:
        if self._channel is None and self._broken is None:
            try:
                self._channel = pycares.Channel(
                    servers=list(self.nameservers) or None, timeout=self.timeout, tries=self.tries
                )
            except (pycares.AresError, ValueError, TypeError) as exc:
                # c-ares' own thread watches resolv.conf with inotify; out of watches (the
                # host's file watcher uses them too), it cannot start.
                self._broken = f"{type(exc).__name__}: {exc}"
                log.error(
                    "c-ares resolver unavailable (%s); %s",
                    self._broken,
                    f"falling back to libc lookups in a private pool of {FALLBACK_THREADS} threads"
                    if not self.nameservers
                    else "lookups through the configured nameservers fail",
                )
        return self._channel

    def lookup(self, host: str, port: int) -> asyncio.Future[list[str]]:
        """A future that c-ares settles: with the addresses, or ``OSError`` (not found, timeout).

        Cancelling the future abandons the answer; the query itself runs until c-ares gives up.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[str]] = loop.create_future()

        def answered(result: Any, error: int | None) -> None:  # on the c-ares thread
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, result, error)

        channel = self._open()
        if channel is None:
            if self.nameservers:
                future.set_exception(OSError(f"the host's resolver is broken ({self._broken})"))
                return future
            return loop.run_in_executor(_fallback_pool(), _libc_lookup, host, port)
        try:
            channel.getaddrinfo(host, port, type=socket.SOCK_STREAM, callback=answered)
        except (pycares.AresError, UnicodeError, ValueError) as exc:
            future.set_exception(OSError(f"cannot look up {host!r}: {exc}"))
        return future

    async def __call__(self, host: str, port: int) -> list[str]:
        return await self.lookup(host, port)


@functools.lru_cache(maxsize=8)
def shared_resolver(
    nameservers: tuple[str, ...] = (), timeout: float = 2.0, tries: int = 2
) -> CaresResolver:
    """The process's resolver for one configuration (one c-ares channel and thread for all)."""
    return CaresResolver(nameservers, timeout, tries)


def _retrieve(task: asyncio.Future[list[str]]) -> None:
    if not task.cancelled():
        task.exception()  # an abandoned lookup's failure is nobody's concern


class LookupLimiter:
    """One plugin's share of the resolver: at most ``max_in_flight`` lookups unfinished at once.

    A slot is freed when the underlying lookup finishes, not when its caller stops waiting.
    Callers over the cap wait for a slot, inside their own fetch deadline.
    """

    def __init__(self, resolve: Resolve, max_in_flight: int) -> None:
        self._resolve = resolve
        self._slots = asyncio.Semaphore(max_in_flight)

    async def __call__(self, host: str, port: int) -> list[str]:
        await self._slots.acquire()
        try:
            task = asyncio.ensure_future(self._resolve(host, port))
        except BaseException:
            self._slots.release()
            raise
        task.add_done_callback(lambda _: self._slots.release())
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)
