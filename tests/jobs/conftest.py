"""A real redis-server for the job-queue tests: one per session, emptied before each test.

No skip: if the server cannot be had, every test here fails with what to install.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.redisserver import RedisServer, find_redis_server


@pytest.fixture(scope="session")
def redis_binary() -> str:
    try:
        return find_redis_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def redis_server(
    redis_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url
