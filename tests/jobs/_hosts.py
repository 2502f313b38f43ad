"""Real hosts for the multi-host tests: ``autoweave-plugins run --jobs`` in subprocesses."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoweave_plugins.control import request
from tests.redisserver import free_port

SCRIPT = shutil.which("autoweave-plugins", path=str(Path(sys.executable).parent))
WORK = """
import time

def work(job):
    time.sleep(job.get("sleep", 0.005))
    return {"n": job["n"], "double": job["n"] * 2}
"""
CONFIG = """
[worker_pool]
min_workers = 0
max_workers = 4

[jobs]
lease = 2.0
heartbeat = 0.5
max_deliveries = 5
drain_timeout = 20.0
"""


def worker_plugin(root: Path, max_workers: int = 2) -> Path:
    folder = root / "plugins" / "worker"
    folder.mkdir(parents=True)
    manifest = {
        "name": "worker",
        "version": "1.0.0",
        "entry": "main.py",
        "hooks": {"onJobReceived": "work"},
        "permissions": {"memory": {"max_workers": max_workers}},
    }
    (folder / "autoweave.plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(WORK)
    (root / "host.toml").write_text(CONFIG)
    return root / "plugins"


def wait(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Check ``condition()`` every 20 ms until it is true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


class Host:
    """One ``autoweave-plugins run`` process joined to the queue as ``name``."""

    def __init__(self, root: Path, url: str, name: str) -> None:
        assert SCRIPT is not None
        self.name = name
        self.log = root / f"{name}.log"
        self.control = root / f"{name}.sock"
        self.metrics_port = free_port()
        command = [
            SCRIPT, "run", str(root / "plugins"), "--plain", "--no-watch", "--usb", "simulated",
            "--config", str(root / "host.toml"), "--jobs", url, "--name", name,
            "--control", str(self.control), "--metrics-port", str(self.metrics_port),
        ]  # fmt: skip
        with self.log.open("w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait(lambda: self.control.exists() or self.process.poll() is not None, what="host up")
        assert self.process.poll() is None, self.log.read_text()

    def text(self) -> str:
        return self.log.read_text()

    def status(self) -> dict[str, Any]:
        reply = asyncio.run(request(str(self.control), {"command": "status"}))
        assert reply["ok"], reply
        status: dict[str, Any] = reply["status"]
        return status

    def metrics(self) -> str:
        import urllib.request

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text: str = response.read().decode()
            return text

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait()
