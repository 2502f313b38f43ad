"""The real `autoweave-plugins` console script in a subprocess: run, usb attach, new."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from autoweave_plugins import PluginManager

SCRIPT = shutil.which("autoweave-plugins", path=str(Path(sys.executable).parent))
USB_PLUGIN = """
import autoweave

def attached(device):
    autoweave.log.info("saw device %s:%s serial=%s", device["vendor_id"], device["product_id"], device["serial"])
    return device["serial"]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(path: Path, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(
        f"{text!r} not seen in time; log so far:\n{path.read_text() if path.exists() else ''}"
    )


def test_run_usb_metrics_and_clean_shutdown(tmp_path: Path) -> None:
    assert SCRIPT is not None
    plugins = tmp_path / "plugins"
    folder = plugins / "usb-watcher"
    folder.mkdir(parents=True)
    manifest = {
        "name": "usb-watcher",
        "version": "1.0.0",
        "entry": "main.py",
        "hooks": {"onUSBAttach": "attached"},
        "permissions": {"usb": {"vendor_ids": ["0x1234"]}},
    }
    (folder / "autoweave.plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(USB_PLUGIN)
    control = tmp_path / "control.sock"
    port = free_port()
    log = tmp_path / "run.log"
    with log.open("w") as out:
        host = subprocess.Popen(
            [
                SCRIPT,
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
        wait_for(log, "saw device 0x1234:0xabcd serial=None")
        attach = subprocess.run(
            [SCRIPT, "usb", "attach", "--vendor", "0x1234", "--product", "0x0001", "--serial", "SN42", "--control", str(control)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert attach.returncode == 0, attach.stderr
        assert json.loads(attach.stdout)["delivered"] == {
            "usb-watcher": {"ok": True, "value": "SN42", "error": None}
        }
        bad = subprocess.run(
            [
                SCRIPT,
                "usb",
                "attach",
                "--vendor",
                "1234",
                "--product",
                "0x0001",
                "--control",
                str(control),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert bad.returncode == 1 and "vendor_id" in json.loads(bad.stdout)["error"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'autoweave_plugins_calls_total{plugin="usb-watcher"} 2.0' in text
        workers = [c.pid for c in psutil.Process(host.pid).children(recursive=True)]
        assert workers
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=30) == 0
        assert not [
            p
            for p in workers
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        assert "manager:stopped" in log.read_text()
        assert not control.exists()
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


def test_bad_config_file_is_reported_with_the_key(tmp_path: Path) -> None:
    assert SCRIPT is not None
    config = tmp_path / "host.toml"
    config.write_text("[worker_pool]\nmin_worker = 2\n")
    run = subprocess.run(
        [SCRIPT, "run", str(tmp_path), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 2 and "worker_pool.min_worker" in run.stderr


async def test_new_scaffolds_a_plugin_that_validates_and_loads(tmp_path: Path) -> None:
    assert SCRIPT is not None
    created = subprocess.run(
        [SCRIPT, "new", "my-plugin", "--directory", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert (
        subprocess.run(
            [SCRIPT, "validate", str(tmp_path / "my-plugin")],
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode
        == 0
    )
    async with PluginManager(tmp_path, worker_pool={"min_workers": 0}) as manager:
        assert await manager.call("my-plugin", "onJobReceived", {"x": 1}) == {"received": {"x": 1}}
    again = subprocess.run(
        [SCRIPT, "new", "my-plugin", "--directory", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = subprocess.run(
        [SCRIPT, "new", "Bad Name"], capture_output=True, text=True, timeout=30, check=False
    )
    assert bad.returncode == 2
