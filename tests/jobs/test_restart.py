"""Redis restarted mid-run: the hosts reconnect, say so in status meanwhile, and the queue
drains with every job answered once."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import redis

from autoweave_plugins.jobs.keys import jobs_stream, result_key, stats_key
from tests.redisserver import RedisServer

from ._hosts import Host, wait, worker_plugin


def link_of(host: Host) -> dict[str, Any]:
    link: dict[str, Any] = host.status()["jobs"]["link"]
    return link


def link_is(host: Host, state: str) -> bool:
    return bool(link_of(host)["state"] == state)


def test_hosts_reconnect_after_a_redis_restart_and_the_queue_drains(
    tmp_path: Path, redis_binary: str
) -> None:
    server = RedisServer(redis_binary, tmp_path / "redis", persist=True)
    server.start()
    worker_plugin(tmp_path)
    hosts: list[Host] = []
    try:
        with redis.Redis.from_url(server.url) as client:
            ids = [f"job-{n}" for n in range(120)]
            for n, job_id in enumerate(ids):
                args = json.dumps([{"n": n, "sleep": 0.02}])
                client.xadd(
                    jobs_stream("worker"), {"id": job_id, "hook": "onJobReceived", "args": args}
                )

        def done() -> int:
            with redis.Redis.from_url(server.url) as client:
                return int(client.hget(stats_key("worker"), "done") or 0)

        hosts = [Host(tmp_path, server.url, "host-a"), Host(tmp_path, server.url, "host-b")]
        wait(lambda: done() >= 20, what="some answers")
        server.stop()
        for host in hosts:
            wait(functools.partial(link_is, host, "down"), what="the link down in status")
        server.start()
        wait(lambda: done() >= 120, timeout=90, what="the queue drained")
        with redis.Redis.from_url(server.url) as client:
            assert all(client.exists(result_key(i)) for i in ids)
            assert int(client.hget(stats_key("worker"), "done") or 0) == 120
            assert client.xlen(jobs_stream("worker")) == 0
        for host in hosts:
            wait(functools.partial(link_is, host, "up"), what="the link up again")
            assert link_of(host)["disconnects"] >= 1
            assert "reconnected" in host.text()
    finally:
        for host in hosts:
            host.close()
        server.stop()
