"""The event bus: sync and async listeners, a raising listener, and bounded streams."""

from __future__ import annotations

import asyncio
import logging

import pytest

from autoweave_plugins.errors import UnknownEvent
from autoweave_plugins.events import Event, EventBus


async def test_sync_async_and_wildcard_listeners() -> None:
    bus = EventBus()
    seen: list[str] = []

    async def later(event: Event) -> None:
        await asyncio.sleep(0)
        seen.append("async:" + event.name)

    bus.on("plugin:loaded", lambda e: seen.append("sync:" + e.name))
    bus.on("plugin:loaded", later)
    bus.on("*", lambda e: seen.append("all:" + e.name))
    event = bus.emit("plugin:loaded", None, pid=7)
    assert event.data == {"pid": 7} and event.plugin is None
    await bus.drain()
    assert seen == ["sync:plugin:loaded", "all:plugin:loaded", "async:plugin:loaded"]


async def test_a_raising_listener_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[str] = []

    def bad(event: Event) -> None:
        raise RuntimeError("listener bug")

    async def bad_async(event: Event) -> None:
        raise RuntimeError("async listener bug")

    bus.on("manager:started", bad)
    bus.on("manager:started", bad_async)
    bus.on("manager:started", lambda e: seen.append(e.name))
    with caplog.at_level(logging.ERROR):
        bus.emit("manager:started")
        await bus.drain()
        await asyncio.sleep(0)
    assert seen == ["manager:started"]
    messages = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert "listener bug" in messages and "async listener bug" in messages


def test_unknown_event_names_are_refused() -> None:
    bus = EventBus()
    with pytest.raises(UnknownEvent, match="plugin:loaded"):
        bus.on("plugin:lodaed", print)
    with pytest.raises(UnknownEvent):
        bus.off("nope", print)


async def test_off_removes_a_listener() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.on("plugin:error", seen.append)
    bus.off("plugin:error", seen.append)
    bus.off("plugin:error", seen.append)  # removing twice is harmless
    bus.emit("plugin:error")
    assert seen == []


async def test_a_stream_ends_on_close_and_a_slow_one_drops_the_oldest() -> None:
    bus = EventBus()
    stream = bus.stream(maxsize=2)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # subscribed
    bus.emit("worker:created", None, pid=1)
    assert (await first).data == {"pid": 1}
    for pid in (2, 3, 4):
        bus.emit("worker:created", None, pid=pid)
    assert [(await anext(stream)).data["pid"] for _ in range(2)] == [3, 4]  # 2 was dropped
    bus.close()
    assert [event async for event in stream] == []
