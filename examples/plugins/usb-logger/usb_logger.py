"""Log every matching USB device that comes and goes, one line each, to a file."""

import time

import autoweave

LOG = "/tmp/autoweave-usb-log/devices.log"


async def _append(event, device):
    line = f"{time.time():.3f} {event} {device['vendor_id']}:{device['product_id']}\n"
    try:
        previous = await autoweave.read_file(LOG)
    except FileNotFoundError:
        previous = ""
    await autoweave.write_file(LOG, previous + line)
    autoweave.metric("usb.events", 1, event=event)


async def attached(device):
    await _append("attach", device)


async def detached(device):
    await _append("detach", device)
