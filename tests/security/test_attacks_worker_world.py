"""Attack class: what a real worker sees of the machine, all sandbox layers on.

``test_attacks_world.py`` holds the namespace layer to account alone; here real workers
(started the way ``AUTOWEAVE_START_METHOD`` says, through the same code the manager uses)
enter their world, and a hostile plugin looks for the host's and a sibling's files, the
host's processes and a network. The verdict comes from outside, through the host's own
``/proc``: the plugin process's namespaces, its network devices, its root and its ``/proc``
as the kernel shows them to the host, and the secrets that never came back. The fallback
(namespaces refused, as on a kernel without them) runs the same plugin: there the worker
shares the host's namespaces, which proves each oracle can see the difference.
"""

from __future__ import annotations

import functools
import os
import secrets
import sys
from pathlib import Path

import pytest

from autoweave_plugins.errors import SandboxUnavailable
from autoweave_plugins.forked import fork_from
from autoweave_plugins.loader import build_spec
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.sandbox.world import NAMESPACES, WorldOptions
from autoweave_plugins.template import Template
from tests.helpers.workers import START_METHOD, write_plugin
from tests.security._support import PRELUDE

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces"),
]

LOOK_CODE = (
    PRELUDE
    + '''
def look(paths, host_pid):
    """Everything a plugin might try to reach the host's files and processes."""
    found = {path: attempt(lambda p=path: open(p).read()) for path in paths}
    found["root"] = attempt(os.listdir, "/")
    found["host_proc"] = attempt(lambda: open(f"/proc/{host_pid}/cmdline", "rb").read())
    found["pid"] = os.getpid()
    return found
'''
)


async def _start(world: WorldOptions) -> WorkerProcess:
    if START_METHOD == "spawn":
        return await WorkerProcess.spawn(world=world)
    template = Template(world=world)
    await template.start()
    try:
        return await WorkerProcess.start(functools.partial(fork_from, template))
    finally:
        await template.close()  # its workers live on without it


def _namespace(pid: int, name: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{name}")


def _devices(pid: int) -> list[str]:
    with open(f"/proc/{pid}/net/dev") as dev:
        return sorted(line.split(":")[0].strip() for line in dev.readlines()[2:])


class Scene:
    """A plugin beside a sibling with a secret, and a host config with another."""

    def __init__(self, root: Path) -> None:
        self.token = secrets.token_hex(12)
        plugins = root / "plugins"
        self.plugin = write_plugin(plugins, "looker", LOOK_CODE, hooks={"onLook": "look"})
        sibling = plugins / "sibling"
        sibling.mkdir()
        self.sibling_secret = sibling / "secret.txt"
        self.sibling_secret.write_text(f"SIBLING-{self.token}")
        self.host_config = root / "host.toml"
        self.host_config.write_text(f'api_key = "HOST-{self.token}"\\n')

    @property
    def secrets(self) -> list[str]:
        return [str(self.sibling_secret), str(self.host_config)]


@pytest.mark.parametrize("mode", ["world", "fallback"])
async def test_the_worker_sees_only_its_world(tmp_path: Path, mode: str) -> None:
    scene = Scene(tmp_path)
    world = WorldOptions() if mode == "world" else WorldOptions(disabled=frozenset(NAMESPACES))
    worker = await _start(world)
    try:
        await worker.assign(build_spec(scene.plugin), timeout=30)
        pid = worker.plugin_pid
        assert pid is not None
        seen = await worker.call("onLook", scene.secrets, os.getpid(), timeout=15)
        leaked = [path for path in scene.secrets if seen[path]["ok"]]
        assert leaked == [], seen  # no layer lets either secret through
        own = os.getpid()
        if mode == "fallback":  # the oracles see the host's world when there is none
            assert all(_namespace(pid, n) == _namespace(own, n) for n in ("pid", "net", "mnt"))
            assert _devices(pid) == _devices(own)
            assert seen["pid"] == pid
            return
        # Every namespace is the worker's own, as the host's kernel shows it.
        for name in ("pid", "net", "ipc", "mnt", "uts", "user"):
            assert _namespace(pid, name) != _namespace(own, name), name
        assert _devices(pid) == ["lo"]  # no interface but its own loopback
        # Spawned, pid 1 is a holder that runs no plugin code; a template clones the worker
        # straight into its PID namespace, where it is pid 1 itself.
        inner = "2" if START_METHOD == "spawn" else "1"
        assert seen["pid"] == int(inner)
        view = Path(f"/proc/{pid}/root")
        # The host's files and the sibling's do not exist in its view, whatever Landlock says.
        for path in scene.secrets:
            assert not (view / path.lstrip("/")).exists(), path
        assert not (view / str(tmp_path).lstrip("/") / "host.toml").exists()
        assert not (view / "home").exists() and not (view / "etc/shadow").exists()
        assert (view / scene.plugin.folder.lstrip("/") / "main.py").exists()
        # Its /proc holds only its own processes: itself, and the holder if spawned.
        expected = ["1", "2"] if START_METHOD == "spawn" else ["1"]
        assert sorted(p for p in os.listdir(view / "proc") if p.isdigit()) == expected
        assert seen["host_proc"]["ok"] is False
    finally:
        await worker.stop()


async def test_strict_refuses_a_worker_without_namespaces(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    worker = await _start(WorldOptions(disabled=frozenset({"net"})))
    try:
        with pytest.raises(SandboxUnavailable) as refused:
            await worker.assign(build_spec(scene.plugin, strict=True), timeout=30)
        assert refused.value.missing == ("net_namespace",)
        assert "net namespace disabled by the host" in str(refused.value)
    finally:
        await worker.stop()
