"""The template start method with real processes: what a forked worker is, and what it is not.

A forked worker must be indistinguishable from a spawned one to the host (the other
integration and security tests run on both methods), and must carry nothing of any plugin that
ran before it: the template never runs plugin code, so a worker forked after plugin A ran (or
crashed) has none of A's memory, descriptors or modules. Evidence is read by the host from
/proc, not reported by the worker. Then the template's own life: killed, replaced after N
forks or when its files change on disk, and the fallback to spawn when it cannot start.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autoweave_plugins import PluginManager, startmethod
from autoweave_plugins import template as template_module
from autoweave_plugins.broker.inbound import bind_inbound, close_all
from autoweave_plugins.forked import fork_from
from autoweave_plugins.loader import build_spec
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.sandbox.namespaces import worker_pid
from autoweave_plugins.settings import LimitsConfig, WorkerPoolConfig
from autoweave_plugins.startmethod import StartMethod
from autoweave_plugins.template import Template, TemplateDied
from tests.helpers.processes import children_of, process_exists
from tests.helpers.workers import grant_folder, write_plugin

SECRET_HOLDER = """
import os, sys
import autoweave

KEPT = {}

def keep():
    secret = autoweave.config["secret"]
    KEPT["text"] = secret * 3
    KEPT["bytes"] = bytearray(secret.encode() * 3)
    KEPT["file"] = open(os.path.join(autoweave.config["data"], "held.txt"), "w")
    return os.getpid()

def crash():
    os._exit(7)
"""
PROBE = """
import os, random, sys, threading, uuid

def look():
    return {
        "modules": sorted(sys.modules),
        "files": sorted(f for m in list(sys.modules.values()) if isinstance(f := getattr(m, "__file__", None), str)),
        "random": random.getrandbits(64),
        "uuid": str(uuid.uuid4()),
        "native_id": [threading.main_thread().native_id, threading.get_native_id()],
    }
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()


def writable_memory_contains(pid: int, needle: bytes) -> bool:
    """Search every writable region of ``pid`` (heap, stacks, anonymous and .data mappings,
    where anything received or computed at run time lives) through /proc/pid/mem."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if "w" not in fields[1] or line.rstrip().endswith(("[vvar]", "[vsyscall]")):
                continue
            low, high = (int(part, 16) for part in fields[0].split("-"))
            try:
                mem.seek(low)
                data = mem.read(high - low)
            except OSError:
                continue
            found = found or needle in data
    return found


def descriptors(pid: int) -> dict[int, str]:
    return {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}


def open_objects(pid: int) -> set[tuple[int, int]]:
    """The sockets, pipes and files ``pid`` holds, by identity (device, inode). Anonymous
    inodes (epoll, eventfd) share one inode machine-wide, and /dev/null is everyone's."""
    held = set()
    for fd, target in descriptors(pid).items():
        if target.startswith(("socket:", "pipe:", "/")) and target != "/dev/null":
            status = os.stat(f"/proc/{pid}/fd/{fd}")
            held.add((status.st_dev, status.st_ino))
    return held


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition the host exposes no event for."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_forked_worker_is_the_hosts_child_in_a_group_of_its_own() -> None:
    template = Template()
    await template.start()
    try:
        worker = await WorkerProcess.start(functools.partial(fork_from, template))
        assert worker.pid is not None and worker.method == "template"
        fields = stat_fields(worker.pid)
        assert int(fields[1]) == os.getpid()  # the parent: the host, not the template
        assert int(fields[2]) == worker.pid  # a process group of its own
        assert int(stat_fields(template.pid or 0)[2]) != worker.pid
        await worker.stop()
        assert worker.returncode == 0 and not process_exists(worker.pid)
    finally:
        await template.close()
    assert template.returncode == 0  # it left when its socket closed


@pytest.mark.parametrize("first_plugin_ends", ["crashed", "still_running"])
async def test_a_worker_forked_after_another_plugin_holds_nothing_of_it(
    tmp_path: Path, first_plugin_ends: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("reading a sandboxed (undumpable) worker's memory needs root")
    secret = "S3CRET-" + secrets.token_hex(16)
    data = grant_folder(tmp_path / "data")
    holder = write_plugin(
        tmp_path / "plugins",
        "holder",
        SECRET_HOLDER,
        hooks={"onKeep": "keep", "onCrash": "crash"},
        permissions={
            "filesystem": [{"path": str(data), "mode": "readwrite"}],
            "network": {"inbound": {"port": free_port()}},
        },
    )
    probe = write_plugin(tmp_path / "plugins", "probe", PROBE, hooks={"onLook": "look"})
    assert holder.manifest.permissions.inbound is not None
    listeners = bind_inbound("holder", holder.manifest.permissions.inbound)
    template = Template()
    await template.start()
    fork = functools.partial(fork_from, template)
    try:
        first = await WorkerProcess.start(fork)
        config = {"secret": secret, "data": str(data)}
        await first.assign(build_spec(holder, config=config), inbound=listeners)
        await first.call("onKeep")
        first_pid = first.plugin_pid
        assert first_pid is not None
        # The oracle works: the secret is found where it is.
        assert writable_memory_contains(first_pid, (secret * 3).encode())
        held = open_objects(first_pid)
        assert len(held) >= 3  # the oracle works: channel, the inbound listener, held.txt
        if first_plugin_ends == "crashed":
            with pytest.raises(Exception, match="exited"):
                await first.call("onCrash")
            await asyncio.wait_for(first.wait_closed(), 5)
            assert first.returncode == 7
        second = await WorkerProcess.start(fork)
        assert second.pid is not None
        await second.ping()  # answered once its plugin-independent preparation is done
        second_pid = worker_pid(second.pid)  # in its world by now: the process that serves
        # Blank, before any assignment: exactly what the host handed over.
        blank = descriptors(second_pid)
        assert sorted(blank) == [0, 1, 2, 3], blank
        assert blank[0] == "/dev/null" and blank[3].startswith("socket:")
        for pid in {second.pid, second_pid, template.pid or 0}:
            assert not writable_memory_contains(pid, secret.encode())
        await second.assign(build_spec(probe))
        seen = await second.call("onLook")
        assert not writable_memory_contains(second_pid, secret.encode())
        assert not open_objects(second_pid) & held
        own = [m for m in seen["modules"] if not m.startswith("autoweave_plugins.")]
        assert own and not [m for m in own if "holder" in m]
        assert not [f for f in seen["files"] if f.startswith(holder.folder)]
        await second.stop()
        await first.stop()
    finally:
        close_all(listeners)
        await template.close()


@pytest.mark.parametrize("delay", [0.0, 0.002])
async def test_a_template_killed_with_forks_in_flight_leaves_no_process_behind(
    delay: float,
) -> None:
    """Each start succeeds (and serves) or fails with TemplateDied, none hangs, and once the
    survivors stop no process is left among the host's children, zombies included."""
    template = Template()
    await template.start()
    assert template.pid is not None
    before = set(children_of(os.getpid()))
    fork = functools.partial(fork_from, template)
    starts = [asyncio.ensure_future(WorkerProcess.start(fork)) for _ in range(8)]
    await asyncio.sleep(delay)
    os.kill(template.pid, signal.SIGKILL)
    results = await asyncio.gather(*starts, return_exceptions=True)
    for result in results:
        assert isinstance(result, WorkerProcess | TemplateDied), repr(result)
        if isinstance(result, WorkerProcess):
            assert (await result.ping())["calls"] == 0
            await result.stop()
    await template.close()
    await until(lambda: set(children_of(os.getpid())) <= before)


async def test_forked_workers_draw_their_own_random_numbers(tmp_path: Path) -> None:
    """What Python's after-fork hooks would make differ per process, and the template's fork
    does itself (``sibling.reseed``): the random state, and the main thread's native id."""
    template = Template()
    await template.start()
    try:
        probe = write_plugin(tmp_path, "probe", PROBE, hooks={"onLook": "look"})
        seen = []
        for _ in range(2):
            worker = await WorkerProcess.start(functools.partial(fork_from, template))
            await worker.assign(build_spec(probe))
            seen.append(await worker.call("onLook"))
            await worker.stop()
        assert seen[0]["random"] != seen[1]["random"] and seen[0]["uuid"] != seen[1]["uuid"]
        for look in seen:
            recorded, live = look["native_id"]
            assert recorded == live  # not the template's thread id
    finally:
        await template.close()


async def test_a_forked_workers_output_reaches_its_plugins_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code = "import sys\ndef talk(x):\n    print('out', x)\n    print('err', x, file=sys.stderr)\n"
    talker = write_plugin(tmp_path, "talker", code, hooks={"onTalk": "talk"})
    expected = {(logging.INFO, "out 42"), (logging.WARNING, "err 42")}

    def logged() -> set[tuple[int, str]]:
        return {(r.levelno, r.getMessage()) for r in caplog.records if r.name.endswith("talker")}

    template = Template()
    await template.start()
    try:
        with caplog.at_level(logging.INFO, logger="autoweave_plugins.plugin.talker"):
            worker = await WorkerProcess.start(functools.partial(fork_from, template))
            await worker.assign(build_spec(talker))
            await worker.call("onTalk", 42)
            await until(lambda: expected <= logged())
            await worker.stop()
    finally:
        await template.close()


def trivial(root: Path, name: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    doc = {"name": name, "version": "1.0.0", "entry": "main.py", "hooks": {"onEcho": "echo"}}
    (folder / "autoweave.plugin.json").write_text(json.dumps(doc))
    (folder / "main.py").write_text("import os\ndef echo(x):\n    return [x, os.getpid()]\n")


def manager(root: Path, **pool: Any) -> PluginManager:
    return PluginManager(
        root,
        worker_pool={"min_workers": 0, "max_workers": 8, "start_method": "template", **pool},
        watcher={"enabled": False},
    )


async def test_a_killed_template_is_replaced_and_its_workers_keep_serving(
    tmp_path: Path,
) -> None:
    for name in ("alpha", "beta"):
        trivial(tmp_path, name)
    async with manager(tmp_path) as m:
        method = m.pool.start_method
        assert method is not None and method.template is not None
        old = method.template.pid
        assert old is not None
        await m.call("alpha", "onEcho", 1)
        alpha_pid = m.records["alpha"].assignments[0].worker.pid
        os.kill(old, signal.SIGKILL)
        await until(lambda: method.replaced["died"] == 1 and method.template is not None)
        assert await m.call("alpha", "onEcho", 2) == [2, 1]  # served ...
        assert m.records["alpha"].assignments[0].worker.pid == alpha_pid  # ... by the same worker
        await m.call("beta", "onEcho", 3)  # a fork from the new template
        beta_pid = m.records["beta"].assignments[0].worker.pid
        assert beta_pid is not None
        assert method.template.pid not in (None, old) and beta_pid != alpha_pid
        assert int(stat_fields(beta_pid)[1]) == os.getpid()
        stats = m.get_manager_stats()["workers"]["start_method"]
        assert stats["active"] == "template" and stats["template_replaced"] == {"died": 1}
    assert not process_exists(old)


async def test_the_template_is_replaced_after_max_forks(tmp_path: Path) -> None:
    names = [f"p{i}" for i in range(5)]
    for name in names:
        trivial(tmp_path, name)
    async with manager(tmp_path, template_max_forks=2) as m:
        method = m.pool.start_method
        assert method is not None
        templates = set()
        for name in names:
            await m.call(name, "onEcho", name)
            assert method.template is not None
            templates.add(method.template.pid)
            await until(lambda: not method.replacing)
        assert len(templates) >= 2 and method.replaced["max_forks"] >= 1
        for name in names:  # workers of the replaced templates still serve
            assert (await m.call(name, "onEcho", name))[0] == name


async def test_a_changed_package_replaces_the_template_before_the_next_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(template_module, "FINGERPRINT_EVERY", 0.0)
    method = StartMethod(WorkerPoolConfig(), LimitsConfig())
    await method.open()
    touched = Path(template_module.__file__).parent / "worker" / "__init__.py"
    before = touched.stat()
    try:
        first = await method()
        assert method.template is not None
        old = method.template.pid
        os.utime(touched, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        second = await method()  # waits for a template that loaded the changed file
        assert method.template.pid != old and method.replaced["package_changed"] == 1
        assert old is not None and not process_exists(old)
        assert second.pid is not None and int(stat_fields(second.pid)[1]) == os.getpid()
        await first.stop()
        await second.stop()
    finally:
        os.utime(touched, ns=(before.st_atime_ns, before.st_mtime_ns))
        await method.close()


class _UnstartableTemplate(Template):
    """A real template process that exits at once, as one would on a platform it refuses."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "python": "/bin/false"})


async def test_the_pool_spawns_when_the_template_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(startmethod, "Template", _UnstartableTemplate)
    trivial(tmp_path, "alpha")
    before = set(children_of(os.getpid()))
    with caplog.at_level(logging.WARNING, logger="autoweave_plugins.startmethod"):
        async with manager(tmp_path) as m:
            await m.call("alpha", "onEcho", 1)
            stats = m.get_manager_stats()["workers"]["start_method"]
            record = m.records["alpha"]
            pid = record.assignments[0].worker.pid
            assert pid is not None and record.assignments[0].worker.method == "spawn"
    assert stats["requested"] == "template" and stats["active"] == "spawn"
    assert "template" in (stats["fallback_reason"] or "")
    assert any("spawning each worker instead" in r.getMessage() for r in caplog.records)
    assert "exited (code 1)" in stats["fallback_reason"]
    assert pid is not None and not process_exists(pid)
    await until(lambda: set(children_of(os.getpid())) <= before)  # the failed template, reaped


def test_sys_executable_and_the_runtime_are_fingerprinted() -> None:
    async def files() -> list[str]:
        template = Template()
        await template.start()
        try:
            return template.files
        finally:
            await template.close()

    paths = asyncio.run(files())
    assert os.path.realpath(sys.executable) in paths
    assert any(p.endswith("autoweave_plugins/worker/runtime.py") for p in paths)


async def test_a_template_worker_is_its_own_pid_1_and_ends_on_the_hosts_signals(
    tmp_path: Path,
) -> None:
    """No holder: the process the host started runs the plugin, as pid 1 of its namespace.
    A pid 1 ignores signals it has no handler for, so the worker installs handlers that end
    it as a relay used to: exit code 128 + N."""
    trivial(tmp_path, "alpha")
    async with manager(tmp_path) as m:
        assert await m.call("alpha", "onEcho", 1) == [1, 1]
        worker = m.records["alpha"].assignments[0].worker
        assert worker.pid is not None and worker.plugin_pid == worker.pid
        assert children_of(worker.pid) == []
        os.kill(worker.pid, signal.SIGTERM)
        await asyncio.wait_for(worker.wait_closed(), 10)
        assert worker.returncode == 128 + signal.SIGTERM
