"""Serving a worker's REQUEST frames: the brokered capabilities, a bounded number at a time.

A worker asks the host to act for it (today only ``fetch``) with ``[REQUEST, id, op,
payload]``. Each request runs as its own task, so a slow fetch never holds up the channel, and
at most ``max_concurrent_requests`` run at once per worker, because each may buffer a whole
response: a request over the cap is refused at once. Every answer goes back through the
channel (``Replies``), which alone decides what an error may carry over the wire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from autoweave_plugins.broker.fetch import FetchBroker, FetchLimits
from autoweave_plugins.errors import (
    AutoweaveError,
    FetchError,
    InvalidURL,
    PermissionDenied,
    WorkerError,
)
from autoweave_plugins.permissions.urls import OutboundPolicy
from autoweave_plugins.ratelimit import TokenBucket

__all__ = ["MAX_CONCURRENT_REQUESTS", "Replies", "RequestService"]

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 16
"""Brokered requests one worker may have in flight; each may buffer a whole response."""
REFUSALS_PER_SECOND = 2.0
"""Refusals reported to ``on_refused`` per worker (burst 10); the rest are only counted."""


def _ignore(error: AutoweaveError) -> None:
    pass


class Replies(Protocol):
    """Where answers go: the worker's channel."""

    def reply(self, ident: int, value: Any) -> None: ...
    def reply_error(self, ident: int, error: AutoweaveError) -> None: ...


class RequestService:
    """One worker's brokered requests. ``fetch`` stays None until the host grants outbound HTTP."""

    def __init__(
        self, replies: Replies, *, max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS
    ) -> None:
        self.replies = replies
        self.max_concurrent_requests = max_concurrent_requests
        self.fetch: FetchBroker | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_refused: Callable[[AutoweaveError], None] = _ignore
        """Told of each request refused by a permission (``PermissionDenied``, ``InvalidURL``),
        rate-limited: the operator sees what a plugin was denied."""
        self.refusals = TokenBucket(REFUSALS_PER_SECOND, 10)

    def grant(
        self,
        manifest: dict[str, Any],
        http: httpx.AsyncClient | None,
        limits: FetchLimits | None = None,
        on_refused: Callable[[AutoweaveError], None] | None = None,
    ) -> None:
        """Serve an assigned plugin: ``fetch`` against its manifest's outbound patterns, through
        ``http`` (without it, ``fetch`` stays refused); ``on_refused`` hears of refusals."""
        if on_refused is not None:
            self.on_refused = on_refused
        if http is not None:
            patterns = manifest.get("permissions", {}).get("network", {}).get("outbound", [])
            self.fetch = FetchBroker(OutboundPolicy(patterns), http, limits or FetchLimits())

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(self, ident: int, op: str, payload: Any) -> None:
        """Start serving one REQUEST frame, or refuse it if too many are in flight."""
        if len(self._tasks) >= self.max_concurrent_requests:
            self.replies.reply_error(
                ident, FetchError(f"more than {self.max_concurrent_requests} requests at once")
            )
            return
        task = asyncio.ensure_future(self._serve(ident, op, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_all(self) -> None:
        """The worker is gone: nobody is left to read the answers."""
        for task in list(self._tasks):
            task.cancel()

    async def _serve(self, ident: int, op: str, payload: Any) -> None:
        try:
            if op != "fetch" or not isinstance(payload, dict):  # the channel checked; never quoted
                raise WorkerError("unknown request")
            if self.fetch is None:
                raise PermissionDenied("network.outbound", "this host offers no outbound HTTP")
            reply = await self.fetch.fetch(payload)
        except AutoweaveError as exc:
            self.replies.reply_error(ident, exc)
            if isinstance(exc, PermissionDenied | InvalidURL) and self.refusals.allow():
                self.on_refused(exc)
        except Exception as exc:  # the broker is trusted code, but a bug must not kill the host
            log.exception("fetch broker failed")  # the details stay in the host's log
            self.replies.reply_error(ident, FetchError(f"host error ({type(exc).__name__})"))
        else:
            self.replies.reply(ident, reply)
