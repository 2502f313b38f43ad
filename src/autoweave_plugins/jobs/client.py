"""``JobQueue``: put jobs on the queue and wait for their answers, from any Python program.

::

    async with JobQueue("redis://localhost:6379/0") as queue:
        job_id = await queue.submit("word-counter", "onJobReceived", {"text": "a b"})
        result = await queue.result(job_id, timeout=30)

``result`` returns the hook's value, or raises what a local ``manager.call`` would have raised
(``HookError`` with the plugin's traceback, ``HookTimeout``...), or ``JobDeadLettered`` when the
job was given up, or ``JobResultTimeout`` when no answer came in time. Waiting costs no polling:
the host that records an answer publishes on ``autoweave:done:<id>``, which the queue
subscribes to before it first looks for the answer, so an answer is never missed between the
two. A slow look every second covers notices lost to a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from types import TracebackType
from typing import Any, cast

from redis import exceptions as redis_errors
from redis.asyncio.client import PubSub

from autoweave_plugins.errors import (
    UnknownPlugin,
)
from autoweave_plugins.jobs import keys
from autoweave_plugins.jobs.codec import JOB_ID, Answer, Job, decode_answer, decode_job, encode_job
from autoweave_plugins.jobs.errors import (
    InvalidJob,
    JobQueueFull,
    JobResultTimeout,
    JobsUnavailable,
)
from autoweave_plugins.jobs.link import CONNECTION_ERRORS, connect, redact
from autoweave_plugins.jobs.scripts import Scripts
from autoweave_plugins.jobs_config import JobsConfig, check_redis_url
from autoweave_plugins.manifest.validate import NAME_RE

__all__ = ["JobQueue"]

NOTICE_ERRORS: tuple[type[Exception], ...] = (
    *CONNECTION_ERRORS,
    redis_errors.RedisError,
    RuntimeError,
)
"""A lost pub/sub connection (RuntimeError: redis-py's "connection not set" after a reset)."""
LOOK_AGAIN = 1.0
"""Seconds between looks at the answer while waiting, in case a notice was lost."""


class _Waiters:
    """Who waits on one job's channel: subscribed once, woken by each notice."""

    def __init__(self) -> None:
        self.count = 0
        self.subscribed = asyncio.Event()
        self.notified = asyncio.Event()


class JobQueue:
    """A client of the job queue at ``url`` (``redis://HOST:PORT/DB``)."""

    def __init__(self, url: str | None = None, *, config: JobsConfig | None = None) -> None:
        self.config = config or JobsConfig()
        self.url = url or self.config.url
        if self.url is None:
            raise InvalidJob("url", "JobQueue needs a redis:// URL")
        check_redis_url(self.url, "url")
        self.redis = connect(self.url, max_connections=64)
        self._scripts = Scripts(self.redis)
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[bytes, _Waiters] = {}
        self.counts: Counter[str] = Counter()

    async def __aenter__(self) -> JobQueue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.redis.aclose()

    # --- submitting --------------------------------------------------------------------------

    async def submit(
        self, plugin: str, hook: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> str:
        """Queue ``hook(*args, **kwargs)`` for ``plugin``; returns the job id.

        Raises ``InvalidJob`` for arguments that are not JSON, ``JobQueueFull`` when the plugin's
        stream holds ``max_len`` jobs, ``JobsUnavailable`` when Redis cannot be reached.
        """
        if not isinstance(plugin, str) or not NAME_RE.match(plugin):
            raise UnknownPlugin(str(plugin))
        job = Job(uuid.uuid4().hex, hook, list(args), kwargs, timeout, time.time())
        fields = encode_job(job)
        # refuse here what a host would refuse
        decode_job({k.encode(): v for k, v in fields.items()}, self.config.max_message_bytes)
        try:
            entry = await self._scripts.submit(
                keys.jobs_stream(plugin), self.config.max_len, fields
            )
        except CONNECTION_ERRORS as exc:
            raise JobsUnavailable(f"cannot submit to {redact(self.url or '')}: {exc}") from None
        if entry is None:
            raise JobQueueFull(
                f"the stream of {plugin!r} holds {self.config.max_len} jobs (jobs.max_len)"
            )
        self.counts["submitted"] += 1
        return job.id

    # --- answers -----------------------------------------------------------------------------

    async def answer(self, job_id: str) -> Answer | None:
        """The recorded answer of a job, or None if there is none (yet, or any more)."""
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise InvalidJob("id", f"not a job id: {job_id!r}")
        raw = await self.redis.get(keys.result_key(job_id))
        if raw is None:
            return None
        return decode_answer(cast(bytes, raw), 2 * self.config.max_result_bytes)

    async def result(self, job_id: str, timeout: float = 30.0) -> Any:
        """Wait up to ``timeout`` seconds for the job's answer; its value, or its typed error."""
        deadline = time.monotonic() + timeout
        channel = keys.done_channel(job_id).encode()
        unreachable: BaseException | None = None
        async with self._waiting(channel) as waiters:
            with contextlib.suppress(TimeoutError):  # no subscription: look every second
                await asyncio.wait_for(waiters.subscribed.wait(), max(0.0, min(timeout, 5.0)))
            while True:
                waiters.notified.clear()
                try:
                    found = await self.answer(job_id)
                except CONNECTION_ERRORS as exc:
                    unreachable, found = exc, None
                else:
                    unreachable = None
                if found is not None:
                    if found.ok:
                        return found.value
                    assert found.error is not None
                    raise found.error
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiters.notified.wait(), min(left, LOOK_AGAIN))
        if unreachable is not None:
            raise JobsUnavailable(f"{redact(self.url or '')}: {unreachable}")
        raise JobResultTimeout(f"no answer to job {job_id} within {timeout:g} s")

    @contextlib.asynccontextmanager
    async def _waiting(self, channel: bytes) -> Any:
        waiters = self._waiters.get(channel)
        if waiters is None:
            waiters = self._waiters[channel] = _Waiters()
            await self._subscribe(channel, waiters)
        waiters.count += 1
        try:
            yield waiters
        finally:
            waiters.count -= 1
            if waiters.count == 0 and self._waiters.get(channel) is waiters:
                del self._waiters[channel]
                if self._pubsub is not None:
                    with contextlib.suppress(*CONNECTION_ERRORS):
                        await self._pubsub.unsubscribe(channel)

    async def _subscribe(self, channel: bytes, waiters: _Waiters) -> None:
        if self._pubsub is None:
            self._pubsub = self.redis.pubsub()
        try:
            await self._pubsub.subscribe(channel)
        except CONNECTION_ERRORS:
            waiters.subscribed.set()  # no notices: the answer is looked for every second
            return
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read_notices())

    async def _read_notices(self) -> None:
        assert self._pubsub is not None
        pubsub = self._pubsub
        failures = 0
        while self._waiters:
            try:
                message = await pubsub.get_message(timeout=LOOK_AGAIN)
            except NOTICE_ERRORS:
                failures += 1  # a lost connection: waiters look every second meanwhile
                await asyncio.sleep(min(5.0, 0.05 * 2**failures))
                continue
            failures = 0
            if message is None:
                continue
            waiters = self._waiters.get(cast(bytes, message.get("channel")))
            if waiters is None:
                continue
            if message.get("type") == "subscribe":
                waiters.subscribed.set()
            elif message.get("type") == "message":
                waiters.notified.set()

    # --- inspection --------------------------------------------------------------------------

    async def dead_letters(self, plugin: str, count: int = 100) -> list[dict[str, str]]:
        """The newest ``count`` dead letters of a plugin, newest first, as text fields."""
        entries = await self.redis.xrevrange(keys.dead_stream(plugin), count=count)
        return [
            {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
            for _, fields in cast(list[Any], entries)
        ]

    async def stats(self, plugin: str) -> dict[str, int]:
        """The counters all hosts keep for a plugin: done, failed, dead, duplicate, redelivered."""
        raw = await self.redis.hgetall(keys.stats_key(plugin))
        return {k.decode(): int(v) for k, v in cast(dict[bytes, bytes], raw).items()}
