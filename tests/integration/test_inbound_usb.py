"""Inbound sockets handed to plugins, and USB events reaching only the plugins that match."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from autoweave_plugins import PluginManager
from autoweave_plugins.errors import InvalidUSBEvent, LoadError
from autoweave_plugins.usb import SimulatedSource, USBDispatcher, USBEvent
from autoweave_plugins.usb.udev import event_from_udev
from tests.helpers.net import free_port
from tests.helpers.plugins import write_plugin_folder
from tests.helpers.waiting import wait_until

SERVER = """
import autoweave

async def handle(request):
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    return {"path": request.path, "query": dict(request.query), "body": request.body.decode()}

async def start():
    await autoweave.serve(handle)

def try_bind():
    import socket
    try:
        socket.socket().bind(("127.0.0.1", 0))
    except OSError as exc:
        return type(exc).__name__
    return "bound"
"""

USB = """
import asyncio
events = []

async def attached(device):
    await asyncio.sleep(0.05)  # a slow attach must still finish before its detach runs
    events.append(("attach", device["vendor_id"], device["product_id"]))

def detached(device):
    events.append(("detach", device["vendor_id"], device["product_id"]))

def seen():
    return events
"""


async def test_plugin_serves_on_the_port_the_host_bound(tmp_path: Path) -> None:
    port = free_port()
    hooks = {"onLoad": "start", "onBind": "try_bind"}
    write_plugin_folder(
        tmp_path,
        "web",
        SERVER,
        hooks=hooks,
        permissions={"network": {"inbound": {"port": port}}},
    )
    # socket is granted so that the kernel, not the import allow-list, refuses the bind
    pool = {"min_workers": 1, "extra_imports": ["socket"]}
    async with PluginManager(tmp_path, worker_pool=pool) as m:
        await m.load("web")
        async with httpx.AsyncClient() as http:
            response = await http.post(f"http://127.0.0.1:{port}/hello?x=1", content=b"payload")
            assert response.json() == {"path": "/hello", "query": {"x": "1"}, "body": "payload"}
            assert (await http.get(f"http://127.0.0.1:{port}/boom")).status_code == 500
        assert await m.call("web", "onBind") == "PermissionError"  # it still cannot bind itself
        await m.reload("web")  # the new version takes over the same listening socket
        # A new connection: one kept alive from before belongs to the old version, which
        # drops it when it exits, whenever that is.
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/again")).json()["path"] == "/again"


async def test_port_in_use_is_a_clear_load_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_plugin_folder(
            tmp_path,
            "web",
            SERVER,
            hooks={"onLoad": "start"},
            permissions={"network": {"inbound": {"port": port}}},
        )
        async with PluginManager(
            tmp_path, worker_pool={"min_workers": 0}, loader={"load_retries": 0}
        ) as m:
            with pytest.raises(LoadError, match=f"port {port} is already in use"):
                await m.load("web")


async def test_usb_events_reach_only_matching_plugins_in_order(tmp_path: Path) -> None:
    hooks = {"onUSBAttach": "attached", "onUSBDetach": "detached", "onSeen": "seen"}
    write_plugin_folder(
        tmp_path, "vendor-only", USB, hooks=hooks, permissions={"usb": {"vendor_ids": ["0x1234"]}}
    )
    write_plugin_folder(
        tmp_path,
        "exact",
        USB,
        hooks=hooks,
        permissions={"usb": {"vendor_ids": ["0x1234"], "product_ids": ["0xABCD"]}},
    )
    write_plugin_folder(
        tmp_path, "other-vendor", USB, hooks=hooks, permissions={"usb": {"vendor_ids": ["0x9999"]}}
    )
    write_plugin_folder(tmp_path, "no-usb", USB, hooks=hooks)
    async with PluginManager(tmp_path, worker_pool={"min_workers": 1}) as m:
        source = SimulatedSource()
        dispatcher = USBDispatcher(m)
        runner = asyncio.ensure_future(dispatcher.run(source))
        source.inject(USBEvent.create("attach", "0x1234", "0xABCD", bus=1, address=5))
        source.inject(USBEvent.create("detach", "0x1234", "0xabcd", bus=1, address=5))
        source.inject(USBEvent.create("attach", "0x1234", "0x0001", bus=1, address=6))
        await wait_until(
            lambda: dispatcher.deliveries == 5,
            "five deliveries: three to vendor-only, two to exact",
            timeout=4.0,
            detail=lambda: f"{dispatcher.deliveries} deliveries",
        )
        runner.cancel()
        assert await m.call("exact", "onSeen") == [
            ["attach", "0x1234", "0xabcd"],
            ["detach", "0x1234", "0xabcd"],
        ]
        seen = await m.call("vendor-only", "onSeen")
        # Different devices run in parallel; one device's events never overtake each other.
        expected = [
            ("attach", "0x1234", "0xabcd"),
            ("detach", "0x1234", "0xabcd"),
            ("attach", "0x1234", "0x0001"),
        ]
        assert sorted(map(tuple, seen)) == sorted(expected)
        assert seen.index(["attach", "0x1234", "0xabcd"]) < seen.index(
            ["detach", "0x1234", "0xabcd"]
        )
        assert (
            m.state("other-vendor") == "discovered" and m.state("no-usb") == "discovered"
        )  # never loaded


async def test_one_plugin_failing_does_not_block_the_others(tmp_path: Path) -> None:
    write_plugin_folder(
        tmp_path,
        "bad",
        "def attached(device):\n    raise ValueError('nope')\n",
        hooks={"onUSBAttach": "attached"},
        permissions={"usb": {"vendor_ids": ["0x1234"]}},
    )
    write_plugin_folder(
        tmp_path,
        "good",
        "def attached(device):\n    return device['serial']\n",
        hooks={"onUSBAttach": "attached"},
        permissions={"usb": {"vendor_ids": ["0x1234"]}},
    )
    async with PluginManager(tmp_path, worker_pool={"min_workers": 1}) as m:
        results = await USBDispatcher(m).dispatch(
            USBEvent.create("attach", "0x1234", "0x0002", serial="S1")
        )
        assert results["good"].ok and results["good"].value == "S1"
        assert not results["bad"].ok and "nope" in str(results["bad"].error)


def test_usb_event_validation_names_the_field() -> None:
    with pytest.raises(InvalidUSBEvent, match="vendor_id"):
        USBEvent.create("attach", "1234", "0xabcd")
    with pytest.raises(InvalidUSBEvent, match="action"):
        USBEvent.create("plug", "0x1234", "0xabcd")
    with pytest.raises(InvalidUSBEvent, match="bus"):
        USBEvent.create("attach", "0x1234", "0xabcd", bus=-1)


def test_udev_properties_are_translated() -> None:
    add = {
        "DEVTYPE": "usb_device",
        "ID_VENDOR_ID": "046d",
        "ID_MODEL_ID": "C52B",
        "ID_SERIAL_SHORT": "X1",
        "ID_VENDOR": "Logitech",
        "ID_MODEL": "Receiver",
        "BUSNUM": "001",
        "DEVNUM": "004",
    }
    event = event_from_udev("add", add, "1-1.2")
    assert event == USBEvent(
        "attach", "0x046d", "0xc52b", "X1", "Logitech", "Receiver", 1, 4, "1-1.2"
    )
    removed = event_from_udev(
        "remove",
        {"DEVTYPE": "usb_device", "PRODUCT": "46d/c52b/1201", "BUSNUM": "001", "DEVNUM": "004"},
        "1-1.2",
    )
    assert removed is not None and (removed.action, removed.vendor_id, removed.product_id) == (
        "detach",
        "0x046d",
        "0xc52b",
    )
    assert (
        event_from_udev(
            "add",
            {"DEVTYPE": "usb_interface", "ID_VENDOR_ID": "046d", "ID_MODEL_ID": "c52b"},
            "1-1.2:1.0",
        )
        is None
    )
    assert event_from_udev("bind", add, "1-1.2") is None
