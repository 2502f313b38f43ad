"""The real `autoweave-plugins` console script in a subprocess: run, usb attach, new."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path

from autoweave_plugins import PluginManager
from tests.helpers.cli import cli, console_script
from tests.helpers.net import free_port
from tests.helpers.plugins import write_plugin_folder
from tests.helpers.processes import descendants, process_exists
from tests.helpers.waiting import wait_until_sync

USB_PLUGIN = """
import autoweave

def attached(device):
    autoweave.log.info("saw device %s:%s serial=%s", device["vendor_id"], device["product_id"], device["serial"])
    return device["serial"]
"""


def logged(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_run_usb_metrics_and_clean_shutdown(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugin_folder(
        plugins,
        "usb-watcher",
        USB_PLUGIN,
        hooks={"onUSBAttach": "attached"},
        permissions={"usb": {"vendor_ids": ["0x1234"]}},
    )
    control = tmp_path / "control.sock"
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("w") as out:
        host = subprocess.Popen(
            [
                console_script(),
                "run",
                str(plugins),
                "--plain",
                "--usb",
                "simulated",
                "--control",
                str(control),
                "--metrics-port",
                str(port),
                "--simulate-usb",
                "attach:0x1234:0xabcd",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        seen = "saw device 0x1234:0xabcd serial=None"
        wait_until_sync(
            lambda: seen in logged(log),
            f"{seen!r} is logged",
            timeout=30,
            interval=0.05,
            detail=lambda: f"log so far:\n{logged(log)}",
        )
        attach = cli("usb", "attach", "--vendor", "0x1234", "--product", "0x0001", "--serial", "SN42", "--control", str(control))  # fmt: skip
        assert attach.returncode == 0, attach.stderr
        assert json.loads(attach.stdout)["delivered"] == {
            "usb-watcher": {"ok": True, "value": "SN42", "error": None}
        }
        bad = cli(
            "usb", "attach", "--vendor", "1234", "--product", "0x0001", "--control", str(control)
        )
        assert bad.returncode == 1 and "vendor_id" in json.loads(bad.stdout)["error"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'autoweave_plugins_calls_total{plugin="usb-watcher"} 2.0' in text
        workers = descendants(host.pid, zombies=True)
        assert workers
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=30) == 0
        assert not [p for p in workers if process_exists(p)]
        assert "manager:stopped" in log.read_text()
        assert not control.exists()
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


def test_bad_config_file_is_reported_with_the_key(tmp_path: Path) -> None:
    config = tmp_path / "host.toml"
    config.write_text("[worker_pool]\nmin_worker = 2\n")
    run = cli("run", str(tmp_path), "--config", str(config))
    assert run.returncode == 2 and "worker_pool.min_worker" in run.stderr


async def test_new_scaffolds_a_plugin_that_validates_and_loads(tmp_path: Path) -> None:
    created = cli("new", "my-plugin", "--directory", str(tmp_path))
    assert created.returncode == 0, created.stderr
    assert cli("validate", str(tmp_path / "my-plugin")).returncode == 0
    async with PluginManager(tmp_path, worker_pool={"min_workers": 0}) as manager:
        assert await manager.call("my-plugin", "onJobReceived", {"x": 1}) == {"received": {"x": 1}}
    again = cli("new", "my-plugin", "--directory", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert cli("new", "Bad Name").returncode == 2
