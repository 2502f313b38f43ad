"""The client commands end to end, against a real ``autoweave-plugins run`` in a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cli import console_script, wait_for
from tests.helpers.net import free_port

SCRIPT = console_script()

CODE = """
import autoweave

def initialize():
    pass

def add(a, b):
    return a + b

def fail():
    raise ValueError("bad input")

def blob():
    return b"\\x00\\x01"
"""


def make_plugin(root: Path, name: str, version: str = "1.0.0") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    manifest = {
        "name": name,
        "version": version,
        "entry": "main.py",
        "hooks": {"onLoad": "initialize", "onAdd": "add", "onFail": "fail", "onBlob": "blob"},
    }
    (folder / "autoweave.plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(CODE)
    return folder


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    """A private runtime dir (short: socket paths are capped at 107 bytes)."""
    runtime = tempfile.mkdtemp(prefix="aw", dir="/tmp")
    environment = {**os.environ, "XDG_RUNTIME_DIR": runtime}
    environment.pop("AUTOWEAVE_PLUGINS_HOST", None)
    yield environment
    shutil.rmtree(runtime, ignore_errors=True)


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert SCRIPT is not None
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


class Host:
    def __init__(self, env: dict[str, str], directory: Path, log: Path, *extra: str) -> None:
        assert SCRIPT is not None
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [SCRIPT, "run", str(directory), "--plain", "--usb", "simulated", *extra],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for(log, "control socket")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in started:
        if host.process.poll() is None:
            host.process.kill()
            host.process.wait()


def test_call_status_lifecycle_and_events(
    tmp_path: Path, env: dict[str, str], hosts: list[Host]
) -> None:
    plugins = tmp_path / "plugins"
    make_plugin(plugins, "adder")
    bad = plugins / "broken"
    bad.mkdir()
    (bad / "autoweave.plugin.json").write_text('{"name": "broken", "version": "1"}')
    hosts.append(Host(env, plugins, tmp_path / "run.log", "--metrics-port", "0"))

    done = cli(env, "call", "adder", "onAdd", "[2, 3]")
    assert (done.returncode, done.stdout.strip()) == (0, "5"), done.stderr
    single = cli(env, "call", "adder", "onAdd", '["a", "b"]', "--timeout", "5")
    assert json.loads(single.stdout) == "ab"
    assert json.loads(cli(env, "call", "adder", "onBlob").stdout) == {"$bytes": "AAE="}
    failed = cli(env, "call", "adder", "onFail")
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith(
        "HookError: plugin 'adder': onFail raised ValueError: bad input"
    )
    assert "Traceback" in failed.stderr
    unknown = cli(env, "call", "broken", "onAdd")
    assert unknown.returncode == 1
    assert "has a plugin named 'broken' but was rejected" in unknown.stderr
    assert cli(env, "call", "adder", "onAdd", "[1", "--timeout", "1").returncode == 2
    assert cli(env, "call", "adder", "onAdd", "--timeout", "0").returncode == 2

    status = json.loads(cli(env, "status", "--json").stdout)
    assert status["version"] == 1 and status["host"]["directory"] == str(plugins.resolve())
    [row] = status["plugins"]
    assert {k: row[k] for k in ("name", "version", "state", "workers", "calls", "errors")} == {
        "name": "adder",
        "version": "1.0.0",
        "state": "idle",
        "workers": 1,
        "calls": 4,
        "errors": 1,
    }
    assert row["rss_bytes"] > 1_000_000 and row["last_error"].startswith("HookError")
    assert status["rejected"] == [
        {
            "folder": str(bad),
            "name": "broken",
            "state": "invalid",
            "error": "$.entry: is required",
        }
    ]
    assert status["stats"]["plugins"]["invalid"] == 1
    table = cli(env, "status").stdout
    assert "adder" in table and "invalid" in table and "last error" in table

    assert cli(env, "unload", "adder").stdout.strip() == "adder: dormant (1.0.0)"
    assert cli(env, "load", "adder").stdout.strip() == "adder: idle (1.0.0)"
    assert cli(env, "reload", "adder").stdout.strip() == "adder: idle (1.0.0)"
    assert cli(env, "load", "nope").returncode == 1

    lines = [json.loads(line) for line in cli(env, "events", "--json").stdout.splitlines()]
    kinds = [(line["plugin"], line["kind"]) for line in lines]
    assert ("adder", "loaded") in kinds and ("adder", "unloaded") in kinds
    assert ("adder", "reloaded") in kinds and (None, "rejected") in kinds
    assert all(set(line) == {"time", "event", "plugin", "level", "kind", "text"} for line in lines)
    assert "adder: loaded 1.0.0" in cli(env, "events").stdout

    assert SCRIPT is not None
    follow = subprocess.Popen(
        [SCRIPT, "events", "--follow", "--json"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert follow.stdout is not None
        while "host started" not in follow.stdout.readline():  # the backlog comes first
            pass
        assert cli(env, "unload", "adder").returncode == 0
        while True:
            line = json.loads(follow.stdout.readline())
            if line["kind"] == "unloaded":
                break
    finally:
        follow.kill()
        follow.wait()
    assert hosts[0].stop() == 0
    gone = cli(env, "status")
    assert gone.returncode == 3 and "no autoweave-plugins host is running" in gone.stderr
    assert cli(env, "call", "adder", "onAdd", "[1, 2]").returncode == 3


def test_which_host_and_a_second_host_on_the_same_directory(
    tmp_path: Path, env: dict[str, str], hosts: list[Host]
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    make_plugin(one, "first")
    make_plugin(two, "second")
    hosts.append(Host(env, one, tmp_path / "one.log", "--metrics-port", "0"))
    port = free_port()
    hosts.append(Host(env, two, tmp_path / "two.log", "--name", "lab", "--metrics-port", str(port)))

    ambiguous = cli(env, "status")
    assert ambiguous.returncode == 2
    assert "2 hosts are running" in ambiguous.stderr and str(one) in ambiguous.stderr
    assert "lab" in ambiguous.stderr
    by_dir = json.loads(cli(env, "status", "--json", "--host", str(one)).stdout)
    assert [p["name"] for p in by_dir["plugins"]] == ["first"]
    by_name = json.loads(cli(env, "status", "--json", "--host", "lab").stdout)
    assert [p["name"] for p in by_name["plugins"]] == ["second"]
    from_env = cli({**env, "AUTOWEAVE_PLUGINS_HOST": "lab"}, "call", "second", "onAdd", "[1, 1]")
    assert from_env.stdout.strip() == "2"
    assert cli(env, "status", "--host", "nope").returncode == 3

    again = cli(env, "run", str(one), "--plain", "--metrics-port", "0", timeout=30)
    assert again.returncode == 2
    assert f"already running (pid {hosts[0].process.pid})" in again.stderr
    # The first host's socket was neither taken over nor deleted.
    assert cli(env, "call", "first", "onAdd", "[2, 2]", "--host", str(one)).stdout.strip() == "4"

    taken = cli(
        env, "run", str(tmp_path / "one" / "first"), "--metrics-port", str(port), timeout=30
    )
    assert taken.returncode == 2
    assert "Traceback" not in taken.stderr
    [line] = [x for x in taken.stderr.splitlines() if x.startswith("autoweave-plugins run:")]
    assert f"127.0.0.1:{port} is already in use" in line  # one line saying what to do


def test_run_from_a_config_file_and_usb_through_the_host(
    tmp_path: Path, env: dict[str, str], hosts: list[Host]
) -> None:
    plugins = tmp_path / "plugins"
    folder = plugins / "watcher"
    folder.mkdir(parents=True)
    manifest = {
        "name": "watcher",
        "version": "1.0.0",
        "entry": "main.py",
        "hooks": {"onUSBAttach": "attached"},
        "permissions": {"usb": {"vendor_ids": ["0x1234"]}},
    }
    (folder / "autoweave.plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text("def attached(device):\n    return device['product_id']\n")
    config = tmp_path / "host.toml"
    config.write_text(f'plugin_directory = "{plugins}"\n')
    assert SCRIPT is not None
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [SCRIPT, "run", "--config", str(config), "--plain", "--metrics-port", "0", "-v"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(log, "control socket")
        assert " DEBUG " in log.read_text()  # -v after the subcommand counts
        usb = cli(env, "usb", "attach", "--vendor", "0x1234", "--product", "0x00ff")
        assert json.loads(usb.stdout)["delivered"] == {
            "watcher": {"ok": True, "value": "0x00ff", "error": None}
        }
        assert "udev" in log.read_text()  # it says what became of udev
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    no_dir = cli(env, "run", "--plain")
    assert no_dir.returncode == 2 and "give the plugin directory DIR" in no_dir.stderr


def test_papercuts(tmp_path: Path, env: dict[str, str]) -> None:
    version = cli(env, "--version")
    assert version.returncode == 0 and version.stdout.startswith("autoweave-plugins ")
    module = subprocess.run(
        [sys.executable, "-m", "autoweave_plugins", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert module.stdout == version.stdout
    missing = cli(env, "validate", "/nonexistent/plugins")
    assert missing.returncode == 2 and "/nonexistent/plugins" in missing.stderr
    nowhere = cli(env, "run", "/nonexistent/plugins")
    assert nowhere.returncode == 2 and "/nonexistent/plugins" in nowhere.stderr
    assert cli(env, "validate", str(tmp_path), "-v").returncode == 1  # -v after the command
    for bad in ("0", "-1", "nan"):
        refused = cli(env, "run", str(tmp_path), "--hook-timeout", bad)
        assert refused.returncode == 2 and "--hook-timeout" in refused.stderr
    usb_help = cli(env, "usb", "--help").stdout
    assert "attach" in usb_help and "onUSBAttach" in usb_help and "onUSBDetach" in usb_help
    # `new` prints commands that work exactly as typed.
    created = cli(env, "new", "fresh-one", "--directory", str(tmp_path / "made"))
    assert created.returncode == 0, created.stderr
    [validate_line] = [line for line in created.stdout.splitlines() if " validate " in line]
    typed = subprocess.run(
        validate_line.strip(), shell=True, capture_output=True, text=True, env=env, check=False
    )
    assert typed.returncode == 0 and "ok" in typed.stdout
    assert any(
        line.strip().endswith(f"run {tmp_path / 'made'}") for line in created.stdout.splitlines()
    )


def test_validate_checks_hooks_against_the_entry(tmp_path: Path, env: dict[str, str]) -> None:
    folder = make_plugin(tmp_path / "plugins", "typo")
    manifest = json.loads((folder / "autoweave.plugin.json").read_text())
    manifest["hooks"]["onAdd"] = "ad"
    (folder / "autoweave.plugin.json").write_text(json.dumps(manifest))
    result = cli(env, "validate", "--json", str(folder))
    assert result.returncode == 1
    [report] = json.loads(result.stdout)
    assert report["errors"] == [
        {
            "path": "$.hooks.onAdd",
            "message": "names 'ad', which main.py does not define; did you mean 'add'? "
            "(functions defined: add, blob, fail, initialize)",
        }
    ]


def test_the_control_socket_bounds_what_it_reads(
    tmp_path: Path, env: dict[str, str], hosts: list[Host]
) -> None:
    plugins = tmp_path / "plugins"
    make_plugin(plugins, "adder")
    hosts.append(Host(env, plugins, tmp_path / "run.log", "--metrics-port", "0"))
    [path] = Path(env["XDG_RUNTIME_DIR"], "autoweave-plugins").glob("*.sock")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.sendall(b"x" * (5 << 20))  # over MAX_REQUEST, and no newline: cut off
        reply = json.loads(client.makefile().readline())
    assert reply["ok"] is False and "bad request" in reply["error"]["message"]
    idle = [socket.socket(socket.AF_UNIX) for _ in range(16)]
    try:
        for client in idle:
            client.connect(str(path))  # clients that never send a request hold their slot
        busy = cli(env, "status")
        assert busy.returncode == 1 and "serving 16 clients" in busy.stderr
    finally:
        for client in idle:
            client.close()
    assert cli(env, "call", "adder", "onAdd", "[1, 2]").stdout.strip() == "3"
