"""The host's connection to Redis: up or down, with backoff, said in its status.

Losing Redis must not crash the host: every loop of the consumer and the hotplug source runs
its Redis steps through ``RedisLink.retry``, which waits with exponential backoff (and jitter,
so that many hosts do not reconnect in step) while the server is unreachable, and marks the link
``down`` for ``status()`` and the metrics. redis-py's pool reconnects by itself on the next
command; this module only decides when to try again and what to tell the operator.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["CONNECTION_ERRORS", "RedisLink", "connect", "redact"]

log = logging.getLogger("autoweave_plugins.jobs")

T = TypeVar("T")
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    ConnectionError,
    OSError,
)
"""What means "the server is unreachable or not ready", as opposed to a refused command."""
BACKOFF_BASE = 0.05
BACKOFF_CAP = 5.0


def redact(url: str) -> str:
    """The URL without its password, for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str, *, name: str | None = None, max_connections: int = 32) -> Redis:
    """A client for ``url`` whose commands fail fast when the server is gone (the callers
    retry with backoff), whose connections carry the host's name in CLIENT LIST, and whose pool
    makes a busy caller wait for a connection rather than fail."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=None,
        socket_timeout=10.0,
        socket_connect_timeout=5.0,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
        health_check_interval=30,
    )
    return Redis.from_pool(pool)


class RedisLink:
    """One Redis client and what is known of its health."""

    def __init__(self, url: str, *, name: str | None = None, max_connections: int = 32) -> None:
        self.url = url
        self.redis = connect(url, name=name, max_connections=max_connections)
        self.state = "connecting"
        self.since = time.time()
        self.last_error = ""
        self.disconnects = 0
        self._failures = 0
        self._closed = False

    def ok(self) -> None:
        """A command went through."""
        self._failures = 0
        if self.state != "up":
            if self.state == "down":
                log.info("redis %s: reconnected", redact(self.url))
            self.state, self.since = "up", time.time()

    def failed(self, exc: BaseException) -> float:
        """A command found the server unreachable; returns how long to wait before retrying."""
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if self.state != "down":
            self.disconnects += 1
            log.warning(
                "redis %s unreachable (%s); retrying with backoff, local calls go on",
                redact(self.url),
                self.last_error,
            )
            self.state, self.since = "down", time.time()
        self._failures += 1
        delay = min(BACKOFF_CAP, BACKOFF_BASE * float(2 ** min(self._failures, 16)))
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not secrecy

    async def retry(self, step: Callable[[], Awaitable[T]], *, until: Callable[[], bool]) -> T:
        """Run ``step`` until it reaches the server; between tries, back off. Gives up (raises
        the last connection error) only once ``until()`` is true, e.g. when the host stops."""
        while True:
            try:
                value = await step()
            except CONNECTION_ERRORS as exc:
                if self._closed or until():
                    raise
                await asyncio.sleep(self.failed(exc))
                continue
            self.ok()
            return value

    def status(self) -> dict[str, Any]:
        return {
            "url": redact(self.url),
            "state": self.state,
            "since": self.since,
            "last_error": self.last_error,
            "disconnects": self.disconnects,
        }

    async def close(self) -> None:
        self._closed = True
        self.state, self.since = "closed", time.time()
        await self.redis.aclose()
