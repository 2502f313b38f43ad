"""Real USB events from the kernel through udev (``pip install autoweave-plugins[usb]``).

Only ``usb_device`` add/remove events are used (not interfaces). Ids come from udev's
ID_VENDOR_ID/ID_MODEL_ID or, on remove events that lack them, from the kernel's
PRODUCT=vid/pid/bcd property.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from autoweave_plugins.errors import InvalidUSBEvent
from autoweave_plugins.usb.device import USBEvent

__all__ = ["UdevSource", "event_from_udev", "udev_available"]

log = logging.getLogger(__name__)


UDEV_RUNTIME = "/run/udev"


def udev_available(runtime: str = UDEV_RUNTIME) -> str | None:
    """None when udev can deliver events here, else why not. A netlink monitor opens even
    where no udev daemon runs (most containers), and then nothing ever arrives: without
    ``/run/udev`` there is no daemon."""
    if not os.path.isdir(runtime):
        return f"no {runtime}: the udev daemon is not running here (as in most containers)"
    try:
        import pyudev  # noqa: PLC0415 - an optional extra
    except ImportError:
        return "pyudev is not installed (pip install autoweave-plugins[usb])"
    try:
        pyudev.Monitor.from_netlink(pyudev.Context())
    except Exception as exc:  # pyudev raises OSError, ImportError (no libudev) and others
        return f"cannot open a udev monitor: {exc}"
    return None


def _hex_id(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return f"0x{int(value, 16):04x}"
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def event_from_udev(action: str, properties: Mapping[str, str], sys_name: str) -> USBEvent | None:
    """Translate one udev event; None for events that are not a usb device add/remove."""
    if action not in ("add", "remove") or properties.get("DEVTYPE") != "usb_device":
        return None
    vendor, product = (
        _hex_id(properties.get("ID_VENDOR_ID")),
        _hex_id(properties.get("ID_MODEL_ID")),
    )
    if vendor is None or product is None:
        parts = properties.get("PRODUCT", "").split("/")
        if len(parts) >= 2:
            vendor, product = _hex_id(parts[0]), _hex_id(parts[1])
    if vendor is None or product is None:
        return None
    try:
        return USBEvent.create(
            "attach" if action == "add" else "detach",
            vendor,
            product,
            serial=properties.get("ID_SERIAL_SHORT"),
            manufacturer=properties.get("ID_VENDOR"),
            product=properties.get("ID_MODEL"),
            bus=_int(properties.get("BUSNUM")),
            address=_int(properties.get("DEVNUM")),
            port_path=sys_name or None,
        )
    except InvalidUSBEvent as exc:
        log.warning("ignoring a malformed udev event: %s", exc)
        return None


class UdevSource:
    name = "udev"

    def __init__(self) -> None:
        import pyudev  # noqa: PLC0415 - an optional extra

        self._monitor: Any = pyudev.Monitor.from_netlink(pyudev.Context())
        self._monitor.filter_by(subsystem="usb", device_type="usb_device")

    async def events(self) -> AsyncIterator[USBEvent]:
        queue: asyncio.Queue[USBEvent] = asyncio.Queue(maxsize=1024)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            while (device := self._monitor.poll(timeout=0)) is not None:
                event = event_from_udev(
                    device.action or "", dict(device.properties), device.sys_name
                )
                if event is not None and not queue.full():
                    queue.put_nowait(event)

        self._monitor.start()
        loop.add_reader(self._monitor.fileno(), readable)
        try:
            while True:
                yield await queue.get()
        finally:
            loop.remove_reader(self._monitor.fileno())
