"""The ``[jobs]`` section of the host config: where the queue is and how deliveries behave.

It lives beside ``settings``, outside the ``jobs`` package, so that the manager's config can
carry the section without an arrow from ``settings`` into ``jobs`` (whose consumer depends on
the manager: that would be a loop), and without importing redis-py unless a queue is used.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from autoweave_plugins.config import require

__all__ = ["JobsConfig", "check_redis_url", "default_consumer_name"]

_NAME = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces: it is shown in XINFO
SCHEMES = ("redis", "rediss", "unix")


def default_consumer_name() -> str:
    """``hostname:pid``: unique per running host, and says which machine held a job."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_redis_url(url: str, key: str) -> None:
    """Raise ``ConfigError`` for ``key`` unless ``url`` is a redis://, rediss:// or unix:// URL."""
    parts = urlsplit(url)
    require(
        parts.scheme in SCHEMES,
        key,
        f"must be redis://HOST:PORT/DB, rediss://... or unix:///PATH, not {url!r}",
    )
    require(
        parts.scheme == "unix" or bool(parts.hostname),
        key,
        f"names no host: {url!r} (redis://HOST:PORT/DB)",
    )
    require(parts.scheme != "unix" or bool(parts.path), key, f"names no socket path: {url!r}")


@dataclass(frozen=True, slots=True)
class JobsConfig:
    url: str | None = None
    """The Redis server of the queue, ``redis://HOST:PORT/DB`` (``rediss://`` for TLS,
    ``unix:///path/redis.sock?db=0``). None: this host joins no queue (``--jobs`` sets it)."""
    name: str | None = None
    """This host's consumer name in the group ``autoweave``; None means ``hostname:pid``. Two
    running hosts must not share a name: each would take over the other's leases."""
    lease: float = 30.0
    """Seconds a delivery is held without a heartbeat before another host may reclaim it
    (XAUTOCLAIM with this as the minimum idle time). A host that dies or hangs loses its jobs
    after this long."""
    heartbeat: float = 10.0
    """Seconds between lease renewals of the jobs in flight (XCLAIM ... JUSTID, which resets
    their idle time); also how often expired leases are looked for. Must be under ``lease / 2``
    so that one late renewal does not lose a lease."""
    max_deliveries: int = 5
    """Deliveries a job gets (first run plus redeliveries after crashes or expired leases).
    The next one sends it to ``autoweave:dead:<plugin>`` with its last error instead."""
    result_ttl: float = 86400.0
    """Seconds a recorded answer (``autoweave:result:<id>``) stays readable."""
    max_len: int = 100_000
    """Jobs a plugin's stream may hold (queued plus in flight). ``submit`` refuses beyond it
    with ``JobQueueFull``, and every XADD carries ``MAXLEN ~`` this as a backstop against other
    producers."""
    batch_size: int = 16
    """Most jobs one read takes from a stream; a read never takes more than the free capacity
    (pool ``max_workers`` times ``scale_out_queue``, and per plugin its ``memory.max_workers``
    times ``scale_out_queue``)."""
    max_message_bytes: int = 1 << 20
    """Largest job message (all its fields together) a host accepts; a larger one is
    dead-lettered as malformed."""
    max_result_bytes: int = 1 << 20
    """Largest answer (its JSON) a host records; a larger one is recorded as an error."""
    dead_max_len: int = 10_000
    """Entries kept in each dead-letter stream (``MAXLEN ~``)."""
    drain_timeout: float = 30.0
    """At SIGTERM, seconds the jobs in flight get to finish and be answered. Jobs still running
    then are released at once for another host to take."""

    def validate(self, prefix: str) -> None:
        if self.url is not None:
            check_redis_url(self.url, f"{prefix}.url")
        if self.name is not None:
            require(
                bool(_NAME.fullmatch(self.name)),
                f"{prefix}.name",
                "must be 1 to 128 printable ASCII characters without spaces",
            )
        for key in ("lease", "heartbeat", "result_ttl", "drain_timeout"):
            require(getattr(self, key) > 0, f"{prefix}.{key}", "must be > 0 seconds")
        require(self.heartbeat * 2 < self.lease, f"{prefix}.heartbeat", "must be under lease / 2")
        require(self.max_deliveries >= 1, f"{prefix}.max_deliveries", "must be >= 1")
        require(self.max_len >= 1, f"{prefix}.max_len", "must be >= 1")
        require(self.dead_max_len >= 1, f"{prefix}.dead_max_len", "must be >= 1")
        require(1 <= self.batch_size <= 1000, f"{prefix}.batch_size", "must be from 1 to 1000")
        for key in ("max_message_bytes", "max_result_bytes"):
            value = getattr(self, key)
            require(1024 <= value <= 64 << 20, f"{prefix}.{key}", "must be from 1 KiB to 64 MiB")

    @property
    def consumer_name(self) -> str:
        return self.name or default_consumer_name()
