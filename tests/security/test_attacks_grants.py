"""Escapes through the grant policy: writing where code runs as root, reading the siblings.

A real ``PluginManager`` judges each manifest with the host's policy, read from a TOML config
file as ``autoweave-plugins run --config`` reads it. Evidence lives outside the hostile plugin:
a marker file that only a running plugin could write, the manager's count of workers it ever
created, and secrets planted in another plugin's folder, another plugin's data, and the config
file, which must never appear in anything the attacker returned or left on disk.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import sysconfig
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from autoweave_plugins import PluginManager
from autoweave_plugins.errors import PolicyRefused
from autoweave_plugins.settings import ManagerConfig
from tests.helpers.workers import grant_folder, in_world
from tests.security._support import CALL_TIMEOUT, PRELUDE

pytestmark = pytest.mark.asyncio(loop_scope="module")

MARKER_CODE = """
def mark(path):
    with open(path, "w") as handle:
        handle.write("the plugin ran")
"""

TRIPLET = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"


def _plugin(root: Path, name: str, code: str, **manifest: Any) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    doc = {"name": name, "version": "1.0.0", "entry": "main.py", **manifest}
    (folder / "autoweave.plugin.json").write_text(json.dumps(doc))
    (folder / "main.py").write_text(code)
    return folder


def _config(tmp_path: Path, body: str) -> ManagerConfig:
    path = tmp_path / "autoweave.toml"
    path.write_text(
        f'plugin_directory = "{tmp_path / "plugins"}"\n'
        "[worker_pool]\nmin_workers = 0\n"
        "[watcher]\nenabled = false\n" + body
    )
    return ManagerConfig.from_toml(path)


@pytest.mark.parametrize(
    "target",
    [
        "/usr/sbin",
        "/usr",
        "/usr/bin",
        f"/usr/lib/{TRIPLET}",
        "/etc/ld.so.cache",
        "/etc/cron.d",
        "/etc/passwd",
        "/var/lib",
        "/root",
        "/boot",
    ],
)
async def test_a_grant_on_code_that_runs_as_root_is_refused(tmp_path: Path, target: str) -> None:
    """The red team's route: /usr/sbin readwrite, replace ldconfig, crash, wait for a restart.
    With the default policy the plugin never gets a worker at all."""
    data = tmp_path / "data"
    data.mkdir()
    marker = data / "ran"
    _plugin(
        tmp_path / "plugins",
        "rooter",
        MARKER_CODE,
        hooks={"onMark": "mark"},
        permissions={
            "filesystem": [
                {"path": str(data), "mode": "readwrite"},
                {"path": target, "mode": "readwrite"},
            ]
        },
    )
    config = _config(tmp_path, f'[policy]\nallowed_roots = ["{data}"]\n')
    async with PluginManager(config=config) as manager:
        with pytest.raises(PolicyRefused) as caught:
            await manager.call("rooter", "onMark", str(marker), timeout=CALL_TIMEOUT)
        created = manager.get_manager_stats()["workers"]["created"]
    # Evidence: no worker was ever started, and the plugin never ran.
    assert created == 0
    assert not marker.exists()
    assert caught.value.permission == "$.permissions.filesystem[1].path"
    assert target in caught.value.message and "never granted" in caught.value.message


# --- siblings: another plugin's folder, data grant and config -------------------------------

ATTACK_CODE = (
    PRELUDE
    + '''
import autoweave


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def symlink_then_read(target, link):
    os.symlink(target, link)
    return read(link)


def link_then_read(target, link):
    os.link(target, link)
    return read(link)


async def sdk(path):
    try:
        return {"ok": True, "value": await autoweave.read_file(path, encoding=None)}
    except BaseException as exc:
        return {"ok": False, "error": type(exc).__name__, "detail": str(exc)[:300]}


async def steal(targets, own, shared, host_pid, victim_pid, roots):
    """Every route to every target; each outcome is reported, none raises."""
    report = {"config": dict(autoweave.config)}
    for name, target in targets.items():
        base = os.path.basename(target)
        relative = os.path.relpath(target, own)
        routes = {
            "open": lambda: read(target),
            "dotdot": lambda: read(own + "/" + relative),
            "symlink_in_own_grant": lambda: symlink_then_read(target, f"{own}/ln-{name}"),
            "planted_symlink": lambda: read(f"{own}/planted-{name}"),  # left there by the test
            "hardlink_in_shared_grant": lambda: link_then_read(target, f"{shared}/hl-{name}"),
            "proc_host_root": lambda: read(f"/proc/{host_pid}/root{target}"),
            "proc_host_cwd": lambda: read(f"/proc/{host_pid}/cwd/" + os.path.relpath(target, roots["host_cwd"])),
            "proc_victim_root": lambda: read(f"/proc/{victim_pid}/root{target}"),
            "proc_victim_cwd": lambda: read(f"/proc/{victim_pid}/cwd{target}"),
            "proc_self_root": lambda: read(f"/proc/self/root{target}"),
        }
        for route, step in routes.items():
            report[f"{name}:{route}"] = attempt(step)
        report[f"{name}:sdk"] = await sdk(target)
    for name, folder in roots.items():
        report[f"list:{name}"] = attempt(os.listdir, folder)
    return report
'''
)

VICTIM_CODE = """
import os

def pid():
    return os.getpid()
"""


@dataclass
class Siblings:
    manager: PluginManager
    tmp: Path
    secrets: dict[str, str]
    targets: dict[str, str]
    own: Path
    shared: Path


@pytest_asyncio.fixture(loop_scope="module")
async def siblings(tmp_path: Path) -> AsyncIterator[Siblings]:
    plugins = tmp_path / "plugins"
    data = tmp_path / "data"
    shared = tmp_path / "shared"
    planted = {k: f"SECRET-{k}-{secrets.token_hex(12)}" for k in ("code", "data", "config")}
    victim = _plugin(plugins, "victim", VICTIM_CODE, hooks={"onPid": "pid"})
    (victim / "shipped-secret.txt").write_text(planted["code"])
    (data / "victim").mkdir(parents=True)
    (data / "victim" / "private.txt").write_text(planted["data"])
    own = grant_folder(data / "attacker")
    grant_folder(shared)
    _plugin(
        plugins,
        "attacker",
        ATTACK_CODE,
        hooks={"onSteal": "steal"},
        permissions={
            "filesystem": [
                {"path": str(own), "mode": "readwrite"},
                {"path": str(shared), "mode": "readwrite"},
            ]
        },
    )
    config = _config(
        tmp_path,
        f'[policy]\nallowed_roots = ["{data}/{{plugin}}", "{shared}"]\n'
        f'[plugin_config.victim]\ntoken = "{planted["config"]}"\n'
        '[plugin_config.attacker]\nmine = "ok"\n',
    )
    targets = {
        "code": str(victim / "shipped-secret.txt"),
        "data": str(data / "victim" / "private.txt"),
        "config": str(tmp_path / "autoweave.toml"),
    }
    for name, target in targets.items():  # a symlink the attacker did not have to make
        (own / f"planted-{name}").symlink_to(target)
    async with PluginManager(config=config) as manager:
        yield Siblings(manager, tmp_path, planted, targets, own, shared)


def _on_disk(*folders: Path) -> bytes:
    """Everything the attacker could have written: every file in its writable grants."""
    found = b""
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():  # the test's planted links aside
                found += path.read_bytes()
    return found


async def test_a_plugin_never_reads_its_siblings(siblings: Siblings) -> None:
    manager = siblings.manager
    await manager.call("victim", "onPid", timeout=CALL_TIMEOUT)  # loaded and serving
    # The host's pid of the victim's plugin process: in its own world the victim would say 2,
    # which in the attacker's PID namespace is the attacker itself.
    [victim_worker] = manager.records["victim"].workers
    victim_pid = victim_worker.plugin_pid
    roots = {
        "plugins": str(siblings.tmp / "plugins"),
        "victim_folder": str(siblings.tmp / "plugins" / "victim"),
        "data_root": str(siblings.tmp / "data"),
        "victim_data": str(siblings.tmp / "data" / "victim"),
        "host_cwd": os.getcwd(),
    }
    report = await manager.call(
        "attacker",
        "onSteal",
        siblings.targets,
        str(siblings.own),
        str(siblings.shared),
        os.getpid(),
        victim_pid,
        roots,
        timeout=CALL_TIMEOUT,
    )
    # The control: the attacker's own config is there, and its grants work (it wrote links).
    assert report.pop("config") == {"mine": "ok"}
    # Evidence: no planted secret in anything it returned or left in its writable grants.
    returned = repr(report)
    written = _on_disk(siblings.own, siblings.shared)
    for secret in siblings.secrets.values():
        assert secret not in returned, report
        assert secret.encode() not in written
    [attacker] = manager.records["attacker"].workers
    for step, outcome in report.items():
        if step == "list:host_cwd":  # only there to build the cwd route's relative paths
            continue
        if step.startswith("list:") and outcome["ok"] and in_world(attacker):
            # Its view is built from its grants (the mount layer): the folders leading to its
            # own plugin folder and data grant exist in it, here inside its private /tmp
            # (where the test's folders lie), holding nothing but those. The host's listing
            # holds the victim too; the attacker's never does.
            assert set(ast.literal_eval(outcome["value"])) <= {"attacker"}, (step, outcome)
            continue
        assert outcome["ok"] is False, (step, outcome)
    # No hard link to a sibling's file was made in the shared grant either.
    assert not list(siblings.shared.glob("hl-*"))
    await manager.call("victim", "onPid", timeout=CALL_TIMEOUT)  # the victim is fine


@pytest.mark.parametrize("what", ["victim_folder", "plugins", "victim_data", "data_root", "config"])
async def test_a_manifest_asking_for_a_siblings_files_is_refused(tmp_path: Path, what: str) -> None:
    plugins = tmp_path / "plugins"
    data = tmp_path / "data"
    (data / "victim").mkdir(parents=True)
    _plugin(plugins, "victim", VICTIM_CODE, hooks={"onPid": "pid"})
    marker_home = data / "asker"
    marker_home.mkdir()
    asked = {
        "victim_folder": plugins / "victim",
        "plugins": plugins,
        "victim_data": data / "victim",
        "data_root": data,
        "config": tmp_path / "autoweave.toml",
    }[what]
    _plugin(
        plugins,
        "asker",
        MARKER_CODE,
        hooks={"onMark": "mark"},
        permissions={
            "filesystem": [
                {"path": str(marker_home), "mode": "readwrite"},
                {"path": str(asked), "mode": "read"},
            ]
        },
    )
    config = _config(tmp_path, f'[policy]\nallowed_roots = ["{data}/{{plugin}}"]\n')
    async with PluginManager(config=config) as manager:
        with pytest.raises(PolicyRefused) as caught:
            await manager.call("asker", "onMark", str(marker_home / "ran"), timeout=CALL_TIMEOUT)
        assert manager.get_manager_stats()["workers"]["created"] == 0
    assert not (marker_home / "ran").exists()
    assert caught.value.permission == "$.permissions.filesystem[1].path"
    assert str(asked) in caught.value.message
