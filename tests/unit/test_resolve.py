"""The broker's resolver: c-ares against real UDP on loopback, and the per-plugin cap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pycares
import pytest

from autoweave_plugins.broker.resolve import CaresResolver, LookupLimiter, shared_resolver
from tests.security._dns_scenario import SilentDNS, silent_dns


@pytest.fixture
async def silent() -> AsyncIterator[tuple[SilentDNS, str]]:
    async with silent_dns("127.0.0.1", 0, enough=1) as (dns, port):
        yield dns, f"127.0.0.1:{port}"


async def test_hosts_file_names_need_no_nameserver(silent: tuple[SilentDNS, str]) -> None:
    dns, server = silent
    resolver = CaresResolver((server,), timeout=0.5, tries=1)
    addresses = await asyncio.wait_for(resolver("localhost", 80), 1.0)
    assert "127.0.0.1" in addresses
    assert dns.queries == 0  # answered from /etc/hosts (or c-ares' own localhost rule)


async def test_a_silent_nameserver_is_a_bounded_failure(silent: tuple[SilentDNS, str]) -> None:
    dns, server = silent
    resolver = CaresResolver((server,), timeout=0.3, tries=2)
    started = time.perf_counter()
    with pytest.raises(OSError, match=r"[Tt]imeout"):
        await resolver("hang.example.org", 80)
    elapsed = time.perf_counter() - started
    assert dns.queries >= 2  # the query really went out over UDP, and was retried
    assert 0.3 <= elapsed < 5.0


def test_one_channel_per_configuration() -> None:
    assert shared_resolver(("127.0.0.1:9",), 1.0, 1) is shared_resolver(("127.0.0.1:9",), 1.0, 1)
    assert shared_resolver(("127.0.0.1:9",), 1.0, 1) is not shared_resolver((), 1.0, 1)


async def test_abandoned_lookups_keep_their_slot_until_they_finish() -> None:
    """Cancelling a fetch must not let a plugin start more lookups than its cap."""
    release = asyncio.Event()
    both_started = asyncio.Event()
    started: list[str] = []

    async def slow(host: str, port: int) -> list[str]:
        started.append(host)
        if len(started) == 2:
            both_started.set()
        await release.wait()
        return ["192.0.2.1"]

    limiter = LookupLimiter(slow, max_in_flight=2)
    first = [asyncio.ensure_future(limiter(f"h{i}", 80)) for i in range(2)]
    await asyncio.wait_for(both_started.wait(), 1.0)
    for task in first:
        task.cancel()
    await asyncio.gather(*first, return_exceptions=True)
    assert all(task.cancelled() for task in first)
    assert limiter._slots.locked()  # the abandoned lookups still hold both slots
    third = asyncio.ensure_future(limiter("h2", 80))
    release.set()
    assert await asyncio.wait_for(third, 1.0) == ["192.0.2.1"]
    assert started == ["h0", "h1", "h2"]


async def test_a_failed_lookup_frees_its_slot() -> None:
    async def broken(host: str, port: int) -> list[str]:
        raise OSError("no such name")

    limiter = LookupLimiter(broken, max_in_flight=1)
    for _ in range(3):
        with pytest.raises(OSError, match="no such name"):
            await asyncio.wait_for(limiter("x", 80), 1.0)


class _NoWatches:
    def __init__(self, **options: object) -> None:
        raise pycares.AresError(pycares.errno.ARES_ENOMEM, "out of inotify watches")


async def test_without_c_ares_lookups_fall_back_to_libc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pycares, "Channel", _NoWatches)
    assert "127.0.0.1" in await asyncio.wait_for(CaresResolver()("localhost", 80), 5.0)
    configured = CaresResolver(("127.0.0.1:9",))
    with pytest.raises(OSError, match="the host's resolver is broken"):
        await configured("localhost", 80)
