"""``aw:hotplug`` as a USB event source: only matching plugins get events, in order per
device; malformed entries are dropped and acknowledged; a dead reader's entries are reclaimed."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins import PluginManager
from autoweave_plugins.errors import InvalidUSBEvent
from autoweave_plugins.jobs import RedisHotplugSource
from autoweave_plugins.jobs.hotplug import event_from_fields
from autoweave_plugins.jobs.keys import HOTPLUG_GROUP, HOTPLUG_STREAM
from autoweave_plugins.usb import USBDispatcher

from ._support import plugin, until

USB = """
import asyncio
import random
events = []

async def attached(device):
    await asyncio.sleep(random.random() / 50)  # a slow attach must still finish before its detach
    events.append(("attach", device["device_id"], device["serial"]))

def detached(device):
    events.append(("detach", device["device_id"], device["serial"]))

def seen():
    return events
"""
HOOKS = {"onUSBAttach": "attached", "onUSBDetach": "detached", "onSeen": "seen"}


async def test_hotplug_events_reach_only_matching_plugins_in_order_per_device(
    tmp_path: Path, redis_url: str
) -> None:
    plugin(tmp_path, "logitech", USB, HOOKS, usb={"vendor_ids": ["0x046d"]})
    plugin(tmp_path, "other", USB, HOOKS, usb={"vendor_ids": ["0x9999"]})
    async with aioredis.Redis.from_url(redis_url) as client:
        await client.xgroup_create(HOTPLUG_STREAM, HOTPLUG_GROUP, id="$", mkstream=True)
        await client.xadd(
            HOTPLUG_STREAM,
            {
                "action": "attach",
                "vendor_id": "046d",
                "product_id": "c52b",
                "device_id": "dead-1",
                "serial": "0",
            },
        )
        await client.xreadgroup(HOTPLUG_GROUP, "dead-reader", {HOTPLUG_STREAM: ">"}, count=1)
        expected: dict[str, list[tuple[str, str, str]]] = {"dead-1": [("attach", "dead-1", "0")]}
        for step in range(10):
            for device in ("kbd", "mouse"):
                action = "attach" if step % 2 == 0 else "detach"
                fields = {"action": action, "vendor_id": "0x046D", "product_id": "0xc52b",
                          "device_id": device, "serial": str(step), "timestamp": "123"}  # fmt: skip
                await client.xadd(HOTPLUG_STREAM, fields)  # type: ignore[arg-type]
                expected.setdefault(device, []).append((action, device, str(step)))
        await client.xadd(
            HOTPLUG_STREAM, {"action": "plug", "vendor_id": "046d", "product_id": "c52b"}
        )
        await client.xadd(
            HOTPLUG_STREAM,
            {
                "action": "attach",
                "vendor_id": "9999",
                "product_id": "0001",
                "device_id": "x",
                "serial": "s",
            },
        )
        manager = PluginManager(
            tmp_path, worker_pool={"min_workers": 0}, watcher={"enabled": False}
        )
        async with manager:
            source = RedisHotplugSource(redis_url, consumer="host-a", lease=0.5)
            task = asyncio.ensure_future(source.run(USBDispatcher(manager)))
            try:
                await until(lambda: source.counts["acked"] == 23, what="all 23 acknowledged")
                seen: list[Any] = await manager.call("logitech", "onSeen")
                by_device: dict[str, list[tuple[str, str, str]]] = {}
                for action, device, serial in seen:
                    by_device.setdefault(device, []).append((action, device, serial))
                assert by_device == expected  # every event, in order per device
                assert await manager.call("other", "onSeen") == [["attach", "x", "s"]]
                assert source.counts["malformed"] == 1 and source.counts["reclaimed"] == 1
                pending = await client.xpending(HOTPLUG_STREAM, HOTPLUG_GROUP)
                assert pending["pending"] == 0
                assert source.status()["link"]["state"] == "up"
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await source.close()


hex4 = st.from_regex(r"(0[xX])?[0-9a-fA-F]{4}", fullmatch=True)


@given(action=st.sampled_from(["attach", "detach", "add", "remove"]), vendor=hex4, product=hex4)
def test_valid_entries_parse_with_normalised_ids(action: str, vendor: str, product: str) -> None:
    event = event_from_fields(
        {b"action": action.encode(), b"vendor_id": vendor.encode(), b"product_id": product.encode()}
    )
    assert event.action == ("attach" if action in ("attach", "add") else "detach")
    assert event.vendor_id == "0x" + vendor[-4:].lower()


@given(st.dictionaries(st.binary(max_size=12), st.binary(max_size=40), max_size=6))
def test_any_entry_parses_or_is_refused_with_invalid_usb_event(fields: dict[bytes, bytes]) -> None:
    with contextlib.suppress(InvalidUSBEvent):
        event_from_fields(fields)


def test_malformed_entries_name_the_field() -> None:
    for fields, field in (
        ({b"action": b"attach", b"vendor_id": b"12345", b"product_id": b"0001"}, "vendor_id"),
        ({b"action": b"attach", b"vendor_id": b"1234", b"product_id": b"0001", b"bus": b"-1"}, "bus"),
        ({b"action": b"attach", b"vendor_id": b"1234", b"product_id": b"0001", b"serial": b"s" * 300}, "serial"),
        ({b"action": b"\xff"}, "entry"),
    ):  # fmt: skip
        with pytest.raises(InvalidUSBEvent) as raised:
            event_from_fields(fields)
        assert raised.value.field == field
