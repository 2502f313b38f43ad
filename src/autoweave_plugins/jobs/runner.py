"""One delivery of one job: check it, run the hook, and settle it in Redis.

A delivery ends in exactly one of four ways, each one atomic script (see ``scripts``):

- **answered**: the hook returned, or raised its own error (``HookError``, ``HookTimeout``...):
  the answer is recorded once and the entry acknowledged. A hook's error is final, never
  retried, because running it again would most likely fail again, and the hook may not be
  safe to repeat.
- **released**: the worker died under it, the plugin's breaker is open, or it would not load on
  this host: the entry is given back for a redelivery, with the error kept for its dead letter.
- **dead-lettered**: the message is malformed, or this delivery is past ``max_deliveries``.
- **cancelled**: the host stops before the hook ends: released, as above, so that another host
  takes the job at once instead of after a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autoweave_plugins.errors import (
    AutoweaveError,
    LoadError,
    PluginCrashed,
    PluginFailed,
    ProtocolError,
    UnknownPlugin,
)
from autoweave_plugins.jobs import keys
from autoweave_plugins.jobs.codec import Job, decode_job, encode_answer, job_id_of
from autoweave_plugins.jobs.errors import InvalidJob, JobDeadLettered
from autoweave_plugins.jobs.link import RedisLink
from autoweave_plugins.jobs.scripts import Scripts
from autoweave_plugins.jobs_config import JobsConfig
from autoweave_plugins.rpc.wire_errors import MAX_MESSAGE, clip

if TYPE_CHECKING:
    from autoweave_plugins.manager import PluginManager

__all__ = ["Delivery", "JobRunner"]

log = logging.getLogger("autoweave_plugins.jobs")

REDELIVER = (PluginCrashed, PluginFailed, LoadError, ProtocolError, UnknownPlugin)
"""Errors of the host or the worker, not of the job: another delivery may well succeed."""
DEAD_PREVIEW = 1024
"""Bytes of a dead job's arguments copied into its dead letter (a malformed one may be huge)."""


class Delivery:
    """A job entry this host holds: which plugin, which entry, which delivery of it."""

    __slots__ = ("deliveries", "entry_id", "fields", "job_id", "plugin", "previous")

    def __init__(
        self,
        plugin: str,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        deliveries: int,
        previous: str = "",
    ) -> None:
        self.plugin = plugin
        self.entry_id = entry_id
        self.fields = fields
        self.deliveries = deliveries
        self.previous = previous
        self.job_id = job_id_of(fields)


class JobRunner:
    def __init__(
        self,
        manager: PluginManager,
        config: JobsConfig,
        link: RedisLink,
        name: str,
        counters: Callable[[str], Counter[str]],
        on_release: Callable[[], None],
    ) -> None:
        self.manager = manager
        self.config = config
        self.link = link
        self.scripts = Scripts(link.redis)
        self.name = name
        self.counters = counters
        self.on_release = on_release
        self.closing = False
        """Set when the host gives up on Redis: settling steps stop retrying."""

    def _emit(self, event: str, plugin: str, **data: Any) -> None:
        record = self.manager.records.get(plugin)
        self.manager.bus.emit(event, record.view() if record else None, **data)

    async def _settle(self, step: Callable[[], Any]) -> Any:
        return await self.link.retry(step, until=lambda: self.closing)

    def _check(self, delivery: Delivery) -> Job:
        job = decode_job(delivery.fields, self.config.max_message_bytes)
        record = self.manager.records.get(delivery.plugin)
        if record is None:
            raise UnknownPlugin(delivery.plugin)
        hooks = record.plugin.manifest.hooks
        if job.hook not in hooks:
            declared = ", ".join(sorted(hooks)) or "none"
            raise InvalidJob("hook", f"{job.hook!r} is not declared (declared: {declared})")
        return job

    async def run(self, delivery: Delivery) -> None:
        """Settle one delivery; never raises except on cancellation."""
        try:
            job = self._check(delivery)
        except InvalidJob as exc:
            self.counters(delivery.plugin)["malformed"] += 1
            await self.dead(delivery, f"malformed message: {exc}", "")
            return
        except UnknownPlugin as exc:  # removed from this host since the read: let others take it
            await self.release(delivery, str(exc))
            return
        if delivery.deliveries > self.config.max_deliveries:
            last = await self._settle(lambda: self.link.redis.get(keys.error_key(job.id)))
            if last is None and delivery.previous:
                last = f"its lease expired while {delivery.previous} held it (crashed or hung)"
            await self.dead(
                delivery,
                f"max_deliveries ({self.config.max_deliveries}) reached",
                last.decode(errors="replace") if isinstance(last, bytes) else (last or ""),
            )
            return
        await self._call(delivery, job)

    async def _call(self, delivery: Delivery, job: Job) -> None:
        plugin = delivery.plugin
        self.counters(plugin)["started"] += 1
        self._emit(
            "job:started", plugin, job_id=job.id, hook=job.hook, delivery=delivery.deliveries
        )
        started = time.monotonic()
        error: AutoweaveError | None = None
        value: Any = None
        try:
            value = await self.manager.call(
                plugin, job.hook, *job.args, timeout=job.timeout, **job.kwargs
            )
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.release(delivery, "the host stopped mid-job"), 2.0)
            raise
        except REDELIVER as exc:
            await self._redeliver(delivery, exc)
            return
        except AutoweaveError as exc:
            error = exc
        except Exception as exc:  # a bug of the host: never lose the job over it
            log.exception("job %s of %s: unexpected error", job.id, plugin)
            await self._redeliver(delivery, exc)
            return
        seconds = time.monotonic() - started
        await self.answer(delivery, job, value, error, seconds)

    async def _redeliver(self, delivery: Delivery, exc: BaseException) -> None:
        text = clip(f"{type(exc).__name__}: {exc}", MAX_MESSAGE)
        if delivery.deliveries >= self.config.max_deliveries:
            await self.dead(
                delivery, f"max_deliveries ({self.config.max_deliveries}) reached", text
            )
        else:
            await self.release(delivery, text)

    async def answer(
        self,
        delivery: Delivery,
        job: Job,
        value: Any,
        error: AutoweaveError | None,
        seconds: float,
    ) -> None:
        body, ok = encode_answer(
            value,
            error,
            host=self.name,
            deliveries=delivery.deliveries,
            max_bytes=self.config.max_result_bytes,
        )
        outcome = "done" if ok else "failed"
        stream = keys.jobs_stream(delivery.plugin)
        recorded = await self._settle(
            lambda: self.scripts.finish(
                [stream, keys.result_key(job.id), keys.stats_key(delivery.plugin), keys.error_key(job.id)],
                [keys.GROUP, delivery.entry_id, self.name, body, self._ttl_ms(), outcome, keys.done_channel(job.id)],
            )
        )  # fmt: skip
        counters = self.counters(delivery.plugin)
        if recorded != 1:
            counters["duplicate"] += 1
            log.info(
                "job %s of %s: answer dropped, %s",
                job.id,
                delivery.plugin,
                "another host holds it now" if recorded == 0 else "it was answered already",
            )
            return
        counters[outcome] += 1
        if ok:
            self._emit("job:done", delivery.plugin, job_id=job.id, seconds=round(seconds, 6))
        else:
            self._emit("job:failed", delivery.plugin, job_id=job.id, error=error)

    async def release(self, delivery: Delivery, error: str) -> None:
        """Give the entry back for another delivery, at once rather than after a lease."""
        if delivery.job_id is None:
            return
        job_id = delivery.job_id
        released = await self._settle(
            lambda: self.scripts.release(
                [keys.jobs_stream(delivery.plugin), keys.error_key(job_id)],
                [keys.GROUP, delivery.entry_id, self.name, self._lease_ms(), error, self._ttl_ms()],
            )
        )
        if released:
            self.counters(delivery.plugin)["released"] += 1
            self.on_release()

    async def dead(self, delivery: Delivery, reason: str, last_error: str) -> None:
        job_id = delivery.job_id or ""
        answer = b""
        last_error = clip(last_error, MAX_MESSAGE)  # it may come from Redis, written by anyone
        if job_id:
            dead = JobDeadLettered(job_id, delivery.plugin, reason, last_error, delivery.deliveries)
            answer, _ = encode_answer(
                None,
                dead,
                host=self.name,
                deliveries=delivery.deliveries,
                max_bytes=self.config.max_result_bytes,
            )
        fields = self._dead_fields(delivery, reason, last_error)
        plugin = delivery.plugin
        done = await self._settle(
            lambda: self.scripts.dead(
                [keys.jobs_stream(plugin), keys.dead_stream(plugin), keys.result_key(job_id), keys.stats_key(plugin), keys.error_key(job_id)],
                [keys.GROUP, delivery.entry_id, self.name, answer, self._ttl_ms(), self.config.dead_max_len, keys.done_channel(job_id), *fields],
            )
        )  # fmt: skip
        if not done:
            self.counters(plugin)["duplicate"] += 1
            return
        self.counters(plugin)["dead"] += 1
        log.warning("job %s of %s dead-lettered: %s %s", job_id or "?", plugin, reason, last_error)
        self._emit("job:dead", plugin, job_id=job_id, reason=reason, last_error=last_error)

    def _dead_fields(self, delivery: Delivery, reason: str, last_error: str) -> list[Any]:
        def preview(key: bytes) -> bytes:
            value = delivery.fields.get(key, b"")
            return value[:DEAD_PREVIEW]

        out: dict[str, Any] = {
            "id": (delivery.job_id or "").encode(),
            "entry": delivery.entry_id,
            "hook": preview(b"hook")[:128],
            "args": preview(b"args"),
            "kwargs": preview(b"kwargs"),
            "reason": clip(reason, MAX_MESSAGE),
            "last_error": last_error,
            "deliveries": delivery.deliveries,
            "host": self.name,
            "time": repr(time.time()),
            "size": sum(len(k) + len(v) for k, v in delivery.fields.items()),
        }
        return [item for pair in out.items() for item in pair]

    def _ttl_ms(self) -> int:
        return int(self.config.result_ttl * 1000)

    def _lease_ms(self) -> int:
        return int(self.config.lease * 1000)
