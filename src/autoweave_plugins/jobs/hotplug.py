"""USB hotplug events from the Redis stream ``aw:hotplug`` (``run --usb redis://...``).

The USB daemon of the system we replace publishes one entry per attach or detach. This host
reads them in the consumer group ``plugin-loader`` and hands each to the same ``USBDispatcher``
as the udev and simulated sources, so the same filtering (a plugin sees only devices its
``usb`` permission names) and the same per-device ordering apply. Accepted fields, as UTF-8
text (other fields, such as a timestamp the daemon adds, are ignored)::

    action        attach | detach   (udev's add | remove are read as the same)
    vendor_id     4 hex digits, with or without 0x: 0x1234, 1234
    product_id    4 hex digits, with or without 0x
    device_id     optional: identifies the physical device; its events are handled in order
    serial, manufacturer, product, port_path    optional text, at most 256 characters
    bus, address  optional decimal numbers (with no device_id, bus+address identify the device)

Unlike the bridge it replaces, an entry is acknowledged only once every matching plugin's hook
has returned (or failed), and entries left pending by a reader that died are taken over with
XAUTOCLAIM after ``lease`` seconds, so nothing stays pending for ever. A malformed entry is
logged, counted and acknowledged: retrying it cannot make it valid. The group is created at
the stream's end if missing, so a new host does not replay old attaches. Per-device order holds
within one host; for a strict global order, let one host read the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from redis import exceptions as redis_errors

from autoweave_plugins.errors import InvalidUSBEvent
from autoweave_plugins.jobs.keys import HOTPLUG_GROUP, HOTPLUG_STREAM
from autoweave_plugins.jobs.link import CONNECTION_ERRORS, RedisLink
from autoweave_plugins.usb.device import USBEvent

if TYPE_CHECKING:
    from autoweave_plugins.usb.dispatch import USBDispatcher

__all__ = ["RedisHotplugSource", "event_from_fields"]

log = logging.getLogger("autoweave_plugins.jobs.hotplug")

MAX_ENTRY = 16 * 1024
ACTIONS = {"attach": "attach", "add": "attach", "detach": "detach", "remove": "detach"}
_HEX4 = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{4})")
_TEXT = ("device_id", "serial", "manufacturer", "product", "port_path")


def _id(fields: Mapping[str, str], key: str) -> str:
    value = fields.get(key)
    match = _HEX4.fullmatch(value) if value is not None else None
    if match is None:
        raise InvalidUSBEvent(key, f"must be 4 hex digits (0x1234 or 1234), not {value!r}")
    return "0x" + match.group(1).lower()


def event_from_fields(raw: Mapping[bytes, bytes]) -> USBEvent:
    """One ``aw:hotplug`` entry as a USB event; raises InvalidUSBEvent naming the bad field."""
    if sum(len(k) + len(v) for k, v in raw.items()) > MAX_ENTRY:
        raise InvalidUSBEvent("entry", f"is over {MAX_ENTRY} bytes")
    try:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
    except UnicodeDecodeError:
        raise InvalidUSBEvent("entry", "a field is not UTF-8") from None
    action = ACTIONS.get(fields.get("action", ""))
    if action is None:
        raise InvalidUSBEvent("action", f"must be attach or detach, not {fields.get('action')!r}")
    details: dict[str, Any] = {k: fields[k] for k in _TEXT if fields.get(k)}
    for key in ("bus", "address"):
        if fields.get(key):
            if not fields[key].isascii() or not fields[key].isdigit():
                raise InvalidUSBEvent(key, f"must be a decimal number, not {fields[key][:20]!r}")
            details[key] = int(fields[key])
    return USBEvent.create(action, _id(fields, "vendor_id"), _id(fields, "product_id"), **details)


class RedisHotplugSource:
    """Feeds ``aw:hotplug`` to a dispatcher; ``run(dispatcher)`` until cancelled."""

    name = "redis"

    def __init__(
        self, url: str, *, consumer: str, lease: float = 30.0, max_in_flight: int = 64
    ) -> None:
        self.link = RedisLink(url, name=consumer, max_connections=4)
        self.consumer = consumer
        self.lease = lease
        self.counts: Counter[str] = Counter()
        self._room = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._acks: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def run(self, dispatcher: USBDispatcher) -> None:
        """Read, dispatch, acknowledge; reconnects with backoff while Redis is away."""
        history: str | None = "0"  # first our own pending entries (a run before, same name)
        await self.link.retry(self._ensure_group, until=lambda: self._stopping)
        while True:
            try:
                if history is not None:
                    history = await self._read(dispatcher, history)
                else:
                    await self._reclaim(dispatcher)
                    await self._read(dispatcher, ">")
            except CONNECTION_ERRORS as exc:
                await asyncio.sleep(self.link.failed(exc))
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.error("hotplug: reading %s refused: %s", HOTPLUG_STREAM, exc)
                    await asyncio.sleep(self.lease / 4)
                await self._ensure_group()

    async def _ensure_group(self) -> None:
        with contextlib.suppress(redis_errors.ResponseError):  # BUSYGROUP: it exists
            await self.link.redis.xgroup_create(
                HOTPLUG_STREAM, HOTPLUG_GROUP, id="$", mkstream=True
            )

    async def _read(self, dispatcher: USBDispatcher, start: str) -> str | None:
        """One XREADGROUP from ``start`` (``>``: new entries, else our pending ones after that
        id); returns where the history goes on, None when it is done."""
        count = await self._free()
        reply = await self.link.redis.xreadgroup(
            HOTPLUG_GROUP,
            self.consumer,
            {HOTPLUG_STREAM: start},
            count=count,
            block=None if start != ">" else 1000,
        )
        self.link.ok()
        entries = cast(list[Any], reply or [[None, []]])[0][1]
        for entry_id, fields in entries:
            self._handle(dispatcher, entry_id, fields)
        if start == ">" or not entries:
            return None
        return cast(bytes, entries[-1][0]).decode()

    async def _reclaim(self, dispatcher: USBDispatcher) -> None:
        count = await self._free()
        reply = await self.link.redis.xautoclaim(
            HOTPLUG_STREAM, HOTPLUG_GROUP, self.consumer, int(self.lease * 1000), "0-0", count=count
        )
        for entry in reply[1]:
            if entry and entry[0] is not None:
                self.counts["reclaimed"] += 1
                self._handle(dispatcher, entry[0], entry[1])

    async def _free(self) -> int:
        """Wait for room; returns how many entries may be read now."""
        async with self._room:
            pass
        return max(1, self._max_in_flight - len(self._acks))

    def _handle(self, dispatcher: USBDispatcher, entry_id: bytes, fields: Any) -> None:
        try:
            event = event_from_fields(fields or {})
        except InvalidUSBEvent as exc:
            self.counts["malformed"] += 1
            log.warning("hotplug: dropping malformed entry %s: %s", entry_id.decode(), exc)
            self._ack_after(None, entry_id)
            return
        self.counts["events"] += 1
        self._ack_after(dispatcher.submit(event), entry_id)

    def _ack_after(self, dispatched: asyncio.Future[Any] | None, entry_id: bytes) -> None:
        async def ack() -> None:
            async with self._room:
                if dispatched is not None:
                    with contextlib.suppress(Exception):
                        await dispatched
                await self.link.retry(
                    lambda: self.link.redis.xack(HOTPLUG_STREAM, HOTPLUG_GROUP, entry_id),
                    until=lambda: self._stopping,
                )
                self.counts["acked"] += 1

        task = asyncio.ensure_future(ack())
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    def status(self) -> dict[str, Any]:
        return {
            "stream": HOTPLUG_STREAM,
            "group": HOTPLUG_GROUP,
            "consumer": self.consumer,
            "link": self.link.status(),
            "in_flight": len(self._acks),
            **dict(self.counts),
        }

    async def close(self) -> None:
        """Stop acknowledging (unacknowledged entries are reclaimed later) and disconnect."""
        self._stopping = True
        for task in list(self._acks):
            task.cancel()
        await asyncio.gather(*self._acks, return_exceptions=True)
        await self.link.close()
