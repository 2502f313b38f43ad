"""One host in-process on a real redis-server, with real sandboxed workers: answers, typed
errors, dead letters, malformed messages, capacity, and a lost server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from autoweave_plugins.errors import HookError, HookTimeout
from autoweave_plugins.jobs import JobQueue
from autoweave_plugins.jobs.errors import JobDeadLettered
from autoweave_plugins.jobs.keys import jobs_stream
from tests.redisserver import free_port

from ._support import crasher, host, until, word_counter


async def test_answers_and_typed_errors(tmp_path: Path, redis_url: str) -> None:
    word_counter(tmp_path)
    async with host(tmp_path, redis_url) as (_, consumer, events), JobQueue(redis_url) as queue:
        job = await queue.submit("word-counter", "onJobReceived", {"text": "a b c"})
        assert (await queue.result(job, timeout=30))["words"] == 3
        failing = await queue.submit("word-counter", "onBoom", "oops")
        with pytest.raises(HookError) as raised:
            await queue.result(failing, timeout=30)
        assert (
            raised.value.error_type == "ValueError" and "bad input oops" in raised.value.traceback
        )
        assert raised.value.plugin == "word-counter" and raised.value.hook == "onBoom"
        slow = await queue.submit("word-counter", "onSlow", 30, timeout=0.5)
        with pytest.raises(HookTimeout):
            await queue.result(slow, timeout=30)
        assert await queue.stats("word-counter") == {"done": 1, "failed": 2}
        names = [e.name for e in events]
        assert names.count("job:started") == 3 and names.count("job:done") == 1
        assert names.count("job:failed") == 2
        status = consumer.status()
        assert status["link"]["state"] == "up"
        assert status["plugins"]["word-counter"]["done"] == 1


async def test_a_plugin_that_always_crashes_is_dead_lettered(
    tmp_path: Path, redis_url: str
) -> None:
    crasher(tmp_path)
    async with (
        host(tmp_path, redis_url, max_deliveries=3) as (_, consumer, events),
        JobQueue(redis_url) as queue,
    ):
        job = await queue.submit("crasher", "onJobReceived", {"n": 1})
        with pytest.raises(JobDeadLettered) as raised:
            await queue.result(job, timeout=60)
        assert raised.value.deliveries == 3 and "max_deliveries (3)" in raised.value.reason
        assert "PluginCrashed" in raised.value.last_error
        [letter] = await queue.dead_letters("crasher")
        assert letter["id"] == job and letter["deliveries"] == "3"
        assert "PluginCrashed" in letter["last_error"] and letter["args"] == '[{"n":1}]'
        stats = await queue.stats("crasher")
        assert stats["dead"] == 1 and stats["redelivered"] == 2 and "done" not in stats
        assert [e.name for e in events].count("job:started") == 3
        assert [e.data["job_id"] for e in events if e.name == "job:dead"] == [job]
        assert consumer.status()["plugins"]["crasher"]["released"] == 2
        async with aioredis.Redis.from_url(redis_url) as client:
            assert await client.xlen(jobs_stream("crasher")) == 0


async def test_malformed_messages_are_dead_lettered_and_the_host_goes_on(
    tmp_path: Path, redis_url: str
) -> None:
    word_counter(tmp_path)
    stream = jobs_stream("word-counter")
    bad = {
        "bad-json": {"id": "bad-json", "hook": "onJobReceived", "args": "[{"},
        "unknown-hook": {"id": "unknown-hook", "hook": "onNothing", "args": "[]"},
        "oversized": {"id": "oversized", "hook": "onJobReceived", "args": '["' + "x" * 4000 + '"]'},
        "not-a-list": {"id": "not-a-list", "hook": "onJobReceived", "args": '{"a": 1}'},
        "extra-field": {"id": "extra-field", "hook": "onJobReceived", "colour": "red"},
        "reserved": {"id": "reserved", "hook": "onJobReceived", "kwargs": '{"timeout": 1}'},
    }
    async with (
        host(tmp_path, redis_url, max_message_bytes=2048) as (_, consumer, _e),
        JobQueue(redis_url) as queue,
        aioredis.Redis.from_url(redis_url) as client,
    ):
        for fields in bad.values():
            await client.xadd(stream, fields)  # type: ignore[arg-type]
        await client.xadd(stream, {"hook": "onJobReceived", "args": "[]"})  # no id: no answer
        await client.xadd(stream, {"id": "bad id!", "hook": "onJobReceived"})
        good = await queue.submit("word-counter", "onJobReceived", {"text": "still here"})
        assert (await queue.result(good, timeout=30))["words"] == 2
        for job_id, field in (
            ("bad-json", "args"), ("unknown-hook", "hook"), ("oversized", "message"),
            ("not-a-list", "args"), ("extra-field", "colour"), ("reserved", "kwargs"),
        ):  # fmt: skip
            with pytest.raises(JobDeadLettered) as raised:
                await queue.result(job_id, timeout=30)
            assert raised.value.reason.startswith(f"malformed message: job {field}:"), raised.value
            assert raised.value.deliveries == 1
        letters = await queue.dead_letters("word-counter")
        assert len(letters) == 8
        assert all(len(letter["args"]) <= 1024 for letter in letters)
        assert consumer.status()["plugins"]["word-counter"]["malformed"] == 8
        assert await client.xlen(stream) == 0  # none left to be retried
        assert consumer.status()["link"]["state"] == "up"


async def test_a_host_reads_no_more_than_its_capacity(tmp_path: Path, redis_url: str) -> None:
    word_counter(tmp_path, max_workers=1)  # per plugin: 1 worker x 2 calls
    async with (
        host(tmp_path, redis_url, max_workers=4, per_worker=2) as (_, consumer, _e),
        JobQueue(redis_url) as queue,
        aioredis.Redis.from_url(redis_url) as client,
    ):
        stream = jobs_stream("word-counter")
        jobs = [await queue.submit("word-counter", "onSlow", 0.3) for _ in range(8)]
        pending_seen = []
        deadline = time.monotonic() + 60
        while await client.xlen(stream) and time.monotonic() < deadline:
            summary = await client.xpending(stream, "autoweave")
            pending_seen.append(summary["pending"])
            await asyncio.sleep(0.05)
        assert max(pending_seen) == 2, pending_seen  # the other six waited in the stream
        assert [await queue.result(j, timeout=30) for j in jobs] == [0.3] * 8
        assert consumer.status()["plugins"]["word-counter"]["capacity"] == 2


async def test_losing_redis_does_not_stop_local_calls_and_status_says_so(tmp_path: Path) -> None:
    word_counter(tmp_path)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    async with host(tmp_path, nowhere) as (manager, consumer, _e):
        await until(lambda: consumer.status()["link"]["state"] == "down", what="link down")
        assert "Error" in consumer.status()["link"]["last_error"]
        assert (await manager.call("word-counter", "onJobReceived", {"text": "a"}))["words"] == 1
        assert consumer.status()["reading"]
