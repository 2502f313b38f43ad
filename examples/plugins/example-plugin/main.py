"""The seed's example plugin: on a USB attach, read a config file and report the device."""

import json

import autoweave


async def initialize():
    autoweave.metric("plugin.started", 1)
    autoweave.log.info("example-plugin ready")


async def handleUSBDevice(device):
    if device["vendor_id"] != "0x1234":
        return {"handled": False}
    config = json.loads(await autoweave.read_file("/tmp/plugin-data/config.json"))
    try:
        response = await autoweave.fetch(
            config.get("endpoint", "https://api.example.com/device"),
            method="POST",
            body=json.dumps(device),
        )
    except autoweave.FetchError as exc:  # allowed, but the network may not reach it
        autoweave.log.warning("could not post the device: %s", exc)
        return {"handled": True, "status": None}
    return {"handled": True, "status": response.status}


def cleanup():
    autoweave.log.info("example-plugin stopping")
