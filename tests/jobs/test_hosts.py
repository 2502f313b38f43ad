"""Two real hosts (``autoweave-plugins run --jobs``) on one queue: a host killed with -9, a
host frozen past its lease, SIGTERM draining, and the ``submit`` command."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from autoweave_plugins.jobs.keys import GROUP, jobs_stream, result_key, stats_key

from ._hosts import SCRIPT, Host, wait, worker_plugin

STREAM = jobs_stream("worker")


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


def submit(client: redis.Redis, count: int, sleep: float, first: int = 0) -> list[str]:
    ids = []
    for n in range(first, first + count):
        job_id = f"job-{n}"
        client.xadd(
            STREAM,
            {"id": job_id, "hook": "onJobReceived", "args": json.dumps([{"n": n, "sleep": sleep}])},
        )
        ids.append(job_id)
    return ids


def stats(client: redis.Redis) -> dict[str, int]:
    raw = cast(dict[bytes, bytes], client.hgetall(stats_key("worker")))
    return {k.decode(): int(v) for k, v in raw.items()}


def answers(client: redis.Redis, ids: list[str]) -> dict[str, dict[str, object]]:
    raw = client.mget([result_key(i) for i in ids])
    return {i: json.loads(r) for i, r in zip(ids, raw, strict=True) if r is not None}


def held_by(client: redis.Redis, consumer: str) -> list[bytes]:
    try:
        entries = cast(
            list[dict[str, Any]], client.xpending_range(STREAM, GROUP, "-", "+", 1000, consumer)
        )
    except redis.ResponseError as exc:  # NOGROUP: no host has created the group yet
        assert "NOGROUP" in str(exc)
        return []
    return [e["message_id"] for e in entries]


def test_two_hosts_share_300_jobs_and_one_is_killed_midway(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    worker_plugin(tmp_path)
    ids = submit(client, 300, 0.01)
    a, b = Host(tmp_path, redis_url, "host-a"), Host(tmp_path, redis_url, "host-b")
    try:
        wait(
            lambda: stats(client).get("done", 0) >= 100 and held_by(client, "host-a"),
            what="a third",
        )
        a.signal(signal.SIGKILL)
        a.process.wait()
        wait(lambda: stats(client).get("done", 0) >= 300, what="all answers")
        found = answers(client, ids)
        assert sorted(found) == sorted(ids)  # none lost
        assert all(found[f"job-{n}"]["value"] == {"n": n, "double": 2 * n} for n in range(300))
        assert {str(v["host"]) for v in found.values()} == {"host-a", "host-b"}
        counters = stats(client)
        assert counters["done"] == 300  # each recorded once
        assert counters.get("redelivered", 0) >= 1  # the killed host's jobs were reclaimed
        assert client.xlen(STREAM) == 0 and client.xpending(STREAM, GROUP)["pending"] == 0
        status = b.status()["jobs"]
        assert status["link"]["state"] == "up" and status["consumer"] == "host-b"
        assert 'autoweave_jobs_total{outcome="done",plugin="worker"}' in b.metrics()
    finally:
        a.close()
        b.close()


def test_a_frozen_host_loses_its_jobs_and_its_late_answers_are_dropped(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    worker_plugin(tmp_path)
    a = Host(tmp_path, redis_url, "host-a")
    b = None
    try:
        ids = submit(client, 4, 1.5)
        frozen = wait(
            lambda: len(held_by(client, "host-a")) == 4 and held_by(client, "host-a"),
            what="a holds 4",
        )
        a.signal(signal.SIGSTOP)  # past its 2 s lease: its workers finish, it cannot answer
        b = Host(tmp_path, redis_url, "host-b")
        wait(lambda: stats(client).get("done", 0) == 4, what="b answers them")
        assert {v["host"] for v in answers(client, ids).values()} == {"host-b"}
        a.signal(signal.SIGCONT)
        wait(lambda: stats(client).get("duplicate", 0) >= 4, what="a's late answers dropped")
        assert stats(client)["done"] == 4  # not doubled
        assert {v["host"] for v in answers(client, ids).values()} == {"host-b"}

        def counted() -> str | None:
            text = a.metrics()
            return text if 'outcome="duplicate",plugin="worker"} 4.0' in text else None

        text = wait(counted, what="a counts 4 duplicates")
        assert 'autoweave_jobs_total{outcome="done",plugin="worker"} 0.0' in text
        assert len(frozen) == 4
    finally:
        a.close()
        if b is not None:
            b.close()


def test_sigterm_drains_and_submit_prints_ids_and_results(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    worker_plugin(tmp_path, max_workers=1)  # capacity 2 for this plugin
    a = Host(tmp_path, redis_url, "host-a")
    try:
        assert SCRIPT is not None
        run = subprocess.run(
            [SCRIPT, "submit", "--jobs", redis_url, "worker", "onJobReceived", '{"n": 21}', "--wait", "30"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout) == {"n": 21, "double": 42}
        failing = subprocess.run(
            [SCRIPT, "submit", "--jobs", redis_url, "worker", "onJobReceived", '{"x": 1}', "--wait", "30"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert failing.returncode == 1
        error = json.loads(failing.stdout)["error"]
        assert error["class"] == "HookError" and "KeyError" in error["traceback"]
        queued = subprocess.run(
            [SCRIPT, "submit", "--jobs", redis_url, "worker", "onJobReceived", '{"n": 1, "sleep": 1.0}'],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert queued.returncode == 0 and re.fullmatch(r"[0-9a-f]{32}\n", queued.stdout)
        ids = submit(client, 5, 1.0, first=100)
        wait(lambda: len(held_by(client, "host-a")) == 2, what="two in flight")
        a.signal(signal.SIGTERM)
        assert a.process.wait(timeout=30) == 0
        assert "draining 2 job(s) in flight" in a.text()
        assert held_by(client, "host-a") == []  # answered and acknowledged, none left held
        assert stats(client)["done"] == 3  # the --wait job and the two in flight
        assert client.xlen(STREAM) == 4  # the rest untouched, for another host
        assert len(answers(client, [*ids, queued.stdout.strip()])) == 2
    finally:
        a.close()
