"""The namespace layer with real processes: what a worker gets, what it keeps, what it loses.

Each test starts ``tests/world_child.py``, which enters a world with the same two calls a
worker makes, then runs a small "plugin part". Facts are checked from outside wherever the
outside can see them (files on the host, exit statuses, the host's process table); the
plugin part's own account is used only for what exists solely inside its world.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autoweave_plugins.sandbox.namespaces import NAMESPACES, worker_pid
from tests.worlds import (
    NOBODY,
    as_unprivileged,
    next_event,
    run_world,
    shared_dir,
    start_world,
    write_grant,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces")

VIEW = """
import os, socket
result["pid"] = os.getpid()
result["uid"] = os.getuid()
result["proc"] = sorted(e for e in os.listdir("/proc") if e.isdigit())
result["interfaces"] = [name for _, name in socket.if_nameindex()]
result["hostname"] = socket.gethostname()
result["cwd"] = os.getcwd()
result["uid_map"] = open("/proc/self/uid_map").read().split()
"""


def folder(root: Path, name: str = "plugin") -> Path:
    path = root / "plugins" / name
    path.mkdir(parents=True)
    (path / "main.py").write_text("def hook():\n    return 1\n")
    return path


def config(plugin: Path, code: str = VIEW, **world: Any) -> dict[str, Any]:
    return {"world": {"folder": str(plugin), **world}, "code": code}


async def test_worker_gets_every_namespace_and_its_own_view(tmp_path: Path) -> None:
    plugin = folder(tmp_path)
    outcome = await run_world(config(plugin))
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.report["active"] == list(NAMESPACES)
    assert outcome.report["lost"] == {}
    view = outcome.result
    assert view["proc"] == ["1", "2"] and view["pid"] == 2
    assert view["interfaces"] == ["lo"]
    assert view["hostname"] == "autoweave" != socket.gethostname()
    assert view["cwd"] == str(plugin)
    if os.geteuid() == 0:  # root host: 0 inside is an unprivileged uid outside
        assert outcome.report["outside_uid"] == NOBODY
        assert view["uid_map"] == ["0", str(NOBODY), "1"]


async def test_runtime_and_system_data_work_after_the_pivot(tmp_path: Path) -> None:
    code = """
import json, mimetypes, sqlite3, ssl, zoneinfo, datetime, decimal
context = ssl.create_default_context()
result["ca_certificates"] = context.cert_store_stats()["x509_ca"]
paris = datetime.datetime(2024, 7, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
result["paris_offset"] = paris.utcoffset().total_seconds()
result["mime"] = mimetypes.guess_type("data.json")[0]
result["sqlite"] = sqlite3.connect(":memory:").execute("select 41 + 1").fetchone()[0]
result["decimal"] = str(decimal.Decimal("0.1") + decimal.Decimal("0.2"))
"""
    outcome = await run_world(config(folder(tmp_path), code))
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.result["ca_certificates"] > 10
    assert outcome.result["paris_offset"] == 7200
    assert outcome.result["mime"] == "application/json"
    assert outcome.result["sqlite"] == 42
    assert outcome.result["decimal"] == "0.3"


async def test_grants_keep_their_modes_and_writes_reach_the_host(tmp_path: Path) -> None:
    readable = tmp_path / "shared-in"
    readable.mkdir()
    (readable / "input.txt").write_text("from the host")
    writable = write_grant(tmp_path / "shared-out")
    code = f"""
import errno
result["read"] = open({str(readable / "input.txt")!r}).read()
try:
    open({str(readable / "new.txt")!r}, "w")
except OSError as exc:
    result["read_only_write"] = errno.errorcode[exc.errno]
with open({str(writable / "output.txt")!r}, "w") as out:
    out.write("from the worker")
"""
    grants = [(str(readable), "read"), (str(writable), "readwrite")]
    outcome = await run_world(config(folder(tmp_path), code, grants=grants))
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.result == {"read": "from the host", "read_only_write": "EROFS"}
    assert not (readable / "new.txt").exists()
    written = writable / "output.txt"
    assert written.read_text() == "from the worker"
    if os.geteuid() == 0:
        assert written.stat().st_uid == NOBODY  # never a root-owned file made by a plugin


@pytest.mark.skipif(os.geteuid() != 0, reason="the root host maps workers to another uid")
async def test_a_write_grant_the_workers_uid_cannot_write_is_refused_at_load(
    tmp_path: Path,
) -> None:
    rooted = tmp_path / "root-owned"
    rooted.mkdir(mode=0o755)
    outcome = await run_world(config(folder(tmp_path), grants=[(str(rooted), "write")]))
    assert outcome.returncode == 3
    assert outcome.final["error"] == "WorldError"
    assert f"uid {NOBODY}, the worker on the host, cannot write it" in outcome.final["message"]


async def test_private_tmp_is_fresh_per_worker_and_capped(tmp_path: Path) -> None:
    marker = f"aw-private-{os.getpid()}-{tmp_path.name}"
    code = f"""
import errno, os
result["inherited"] = os.path.exists("/tmp/{marker}")
open("/tmp/{marker}", "w").write("mine")
try:
    with open("/tmp/fill", "wb") as fill:
        for _ in range(64):
            fill.write(b"x" * 65536)
            fill.flush()
except OSError as exc:
    result["full"] = errno.errorcode[exc.errno]
"""
    plugin = folder(tmp_path)
    first = await run_world(config(plugin, code, tmp_bytes=1 << 20))
    second = await run_world(config(plugin, code, tmp_bytes=1 << 20))
    for outcome in (first, second):
        assert outcome.returncode == 0, outcome.stderr
        assert outcome.result == {"inherited": False, "full": "ENOSPC"}
    assert not Path("/tmp", marker).exists()


async def test_the_world_is_sealed(tmp_path: Path) -> None:
    code = """
import errno, os, socket
from autoweave_plugins.sandbox import kernel

def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "ok"

result["dev"] = sorted(os.listdir("/dev"))
result["write_dev_null"] = errno_of(lambda: open("/dev/null", "w").write("x"))
result["create_in_dev"] = errno_of(lambda: open("/dev/extra", "w"))
result["create_in_root"] = errno_of(lambda: open("/extra", "w"))
result["mount"] = errno_of(kernel.mount, "tmpfs", "/tmp", "tmpfs", 0)
result["umount"] = errno_of(kernel.umount2, "/tmp", 0)
result["hostname"] = errno_of(kernel.sethostname, "escaped")
result["old_root"] = os.path.lexists("/.oldroot")
result["home"] = os.path.lexists("/home")
"""
    outcome = await run_world(config(folder(tmp_path), code))
    assert outcome.returncode == 0, outcome.stderr
    view = outcome.result
    devices = ["fd", "full", "null", "random", "stderr", "stdin", "stdout", "urandom", "zero"]
    assert view["dev"] == devices
    assert view["write_dev_null"] == "ok"
    assert view["create_in_dev"] == view["create_in_root"] == "EROFS"
    assert view["mount"] == view["umount"] == view["hostname"] == "EPERM"
    assert view["old_root"] is False and view["home"] is False


async def test_threads_are_capped_per_worker_not_per_uid(tmp_path: Path) -> None:
    code = """
import sys, threading
hold = threading.Event()
threads = []
while True:
    thread = threading.Thread(target=hold.wait)
    try:
        thread.start()
    except RuntimeError:
        break
    threads.append(thread)
result["started"] = len(threads)
emit({"holding": len(threads)})
sys.stdin.readline()
hold.set()
for thread in threads:
    thread.join()
"""
    plugin = folder(tmp_path)
    worlds = [await start_world(config(plugin, code, max_threads=16)) for _ in range(2)]
    try:
        # Both hold 15 threads (16 with their main thread) at the same time: 32 tasks of the
        # same host uid, so the cap is per worker, as the kernel counts per user namespace.
        held = [await next_event(world) for world in worlds]
        assert held == [{"holding": 15}, {"holding": 15}]
        for world in worlds:
            out, err = await asyncio.wait_for(world.communicate(b"\n"), 30)
            assert world.returncode == 0, err.decode()
            final = json.loads(out.decode().splitlines()[-1])
            assert final["report"]["max_threads"] == 16
    finally:
        for world in worlds:
            if world.returncode is None:
                world.kill()
                await world.wait()


async def test_exit_status_is_the_workers_own(tmp_path: Path) -> None:
    plugin = folder(tmp_path)
    exited = await run_world(config(plugin, "import os\nos._exit(7)"))
    assert exited.returncode == 7
    crashed = await run_world(
        config(plugin, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    )
    assert crashed.returncode == -signal.SIGSEGV


async def test_signals_reach_the_worker_and_the_channel_is_its_alone(tmp_path: Path) -> None:
    host_end, worker_end = socket.socketpair()
    code = f"""
import json, os, signal, sys
def leave(signum, frame):  # os.write: the signal may land while emit() is mid-write
    os.write(1, json.dumps({{"signal": signum}}).encode() + b"\\n")
    os._exit(0)
signal.signal(signal.SIGTERM, leave)
os.close({worker_end.fileno()})  # the worker lets go of its channel...
emit({{"closed": True}})
signal.pause()
"""
    world = await start_world(config(folder(tmp_path), code), pass_fds=(worker_end.fileno(),))
    worker_end.close()
    try:
        assert await next_event(world) == {"closed": True}
        # ...and the host sees EOF at once: neither W nor pid 1 kept a copy.
        host_end.settimeout(10)
        assert host_end.recv(1) == b""
        assert world.pid is not None
        outer = world.pid
        assert worker_pid(outer) != outer  # the plugin runs in W's second child
        os.kill(outer, signal.SIGTERM)
        assert await next_event(world) == {"signal": signal.SIGTERM}
        assert await asyncio.wait_for(world.wait(), 10) == 0
    finally:
        host_end.close()
        if world.returncode is None:
            world.kill()
            await world.wait()


async def test_without_namespaces_the_worker_falls_back_and_says_what_is_lost(
    tmp_path: Path,
) -> None:
    plugin = folder(tmp_path)
    refused = {**config(plugin), "disabled": ["mount"]}
    outcome = await run_world(refused)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.report["active"] == []
    assert set(outcome.report["lost"]) == set(NAMESPACES)
    assert len(outcome.result["proc"]) > 2  # really the host's view: today's layers alone
    strict = {**config(plugin, strict=True), "disabled": ["net"]}
    refusal = await run_world(strict)
    assert refusal.returncode == 3
    assert refusal.final["error"] == "SandboxUnavailable"
    assert "net_namespace" in refusal.final["message"]


async def test_a_multithreaded_worker_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    outcome = await run_world({**config(folder(tmp_path)), "thread_first": True})
    assert outcome.returncode == 3
    assert outcome.final["error"] == "WorldError"
    assert "the worker has 2 threads; needs 1" in outcome.final["message"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the root host's path")
async def test_root_host_without_user_namespaces_still_drops_to_its_uid(tmp_path: Path) -> None:
    outcome = await run_world({**config(folder(tmp_path), max_threads=8), "disabled": ["user"]})
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.report["active"] == ["pid", "net", "ipc", "mount", "uts"]
    assert list(outcome.report["lost"]) == ["user"]
    assert outcome.report["max_threads"] is None  # per-uid counting would be machine-wide
    assert outcome.result["uid"] == NOBODY and outcome.result["proc"] == ["1", "2"]


async def test_unprivileged_host_gets_the_same_world() -> None:
    with as_unprivileged() as wrapper, shared_dir() as root:
        plugin = folder(root)
        writable = write_grant(root / "out")
        code = VIEW + f"\nopen({str(writable / 'made')!r}, 'w').write('ok')\n"
        outcome = await run_world(
            config(plugin, code, grants=[(str(writable), "readwrite")], max_threads=8),
            wrapper=wrapper,
        )
        assert outcome.returncode == 0, outcome.stderr
        assert outcome.report["active"] == list(NAMESPACES)
        assert outcome.result["proc"] == ["1", "2"]
        assert outcome.result["interfaces"] == ["lo"]
        assert outcome.result["uid_map"] == ["0", "0", "1"]  # nested: owns nothing of its world
        assert (writable / "made").read_text() == "ok"
        refused = await run_world({**config(plugin), "disabled": ["user"]}, wrapper=wrapper)
        assert refused.returncode == 0, refused.stderr
        assert set(refused.report["lost"]) == set(NAMESPACES)


def doctor(wrapper: tuple[str, ...]) -> dict[str, Any]:
    command = [sys.executable, "-I", "-m", "autoweave_plugins.cli", "doctor", "--json"]
    done = subprocess.run([*wrapper, *command], capture_output=True, timeout=120, check=False)
    assert done.returncode in (0, 1), done.stderr.decode()
    found: dict[str, Any] = json.loads(done.stdout)
    return found


@pytest.mark.parametrize("unprivileged", [False, True], ids=["host", "unprivileged"])
def test_doctor_reports_each_namespace_by_trying(unprivileged: bool) -> None:
    if unprivileged:
        with as_unprivileged() as wrapper:
            found = doctor(wrapper)
    else:
        found = doctor(())
    for name in NAMESPACES:
        assert found[f"namespace_{name}"]["available"], found[f"namespace_{name}"]
    assert found["world"]["available"], found["world"]
