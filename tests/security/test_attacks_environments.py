"""Plugins' own environments: one plugin never sees another's, and none can change its own.

A real ``PluginManager`` builds two environments with the real uv from a generated wheelhouse.
The owner's holds a package with a secret planted in it; the prober knows the exact paths (the
host hands them over as arguments) and tries to read, list and import them. The evidence is
outside the prober: the secret never appears in anything it returned, the owner (positive
control) reads the same file through the same code, and the files on disk are unchanged.
"""

from __future__ import annotations

import errno
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from autoweave_plugins import PluginManager
from tests.helpers.workers import in_world
from tests.security._support import CALL_TIMEOUT, PRELUDE
from tests.wheelhouse import write_wheel

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROBE = (
    PRELUDE
    + """
def read(path):
    with open(path) as handle:
        return handle.read()


def write(path):
    with open(path, "w") as handle:
        handle.write("planted")


def import_from(env_path):
    sys.path.insert(0, env_path)
    try:
        import secretpkg
        return secretpkg.SECRET
    finally:
        sys.path.remove(env_path)


def probe(env_path, env_root):
    module = os.path.join(env_path, "secretpkg", "__init__.py")
    return {
        "read": attempt(read, module),
        "list": attempt(os.listdir, env_path),
        "list_root": attempt(os.listdir, env_root),
        "lock": attempt(read, os.path.join(env_root, "lock.txt")),
        "import": attempt(import_from, env_path),
        "write": attempt(write, os.path.join(env_path, "planted.py")),
        "write_module": attempt(write, module),
    }
"""
)


def _plugin(root: Path, name: str, **manifest: Any) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    doc = {"name": name, "version": "1.0.0", "entry": "main.py", "hooks": {"onProbe": "probe"}}
    (folder / "autoweave.plugin.json").write_text(json.dumps({**doc, **manifest}))
    (folder / "main.py").write_text(PROBE)


async def test_a_plugin_never_sees_another_plugins_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "ENV-SECRET-" + secrets.token_hex(12)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, "secretpkg", "1.0", {"secretpkg/__init__.py": f"SECRET = {secret!r}\n"})
    write_wheel(wheels, "tinypkg", "1.0")
    root = tmp_path / "plugins"
    _plugin(root, "owner", requirements=["secretpkg==1.0"])
    _plugin(root, "prober", requirements=["tinypkg==1.0"])  # an environment of its own, too
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    environments = {
        "find_links": str(wheels),
        "offline": True,
        "cache_dir": str(tmp_path / "envs"),
        "prune_interval": 0,
    }
    async with PluginManager(
        root, worker_pool={"min_workers": 0}, watcher={"enabled": False}, environments=environments
    ) as host:
        await host.load_many(["owner", "prober"])
        owner_env = host.records["owner"].environment
        assert owner_env is not None and host.records["prober"].environment is not None
        target = (str(owner_env.path), str(owner_env.root))
        module = owner_env.path / "secretpkg" / "__init__.py"
        before = module.read_bytes()

        own = await host.call("owner", "onProbe", *target, timeout=CALL_TIMEOUT)
        stolen = await host.call("prober", "onProbe", *target, timeout=CALL_TIMEOUT)
        [prober] = host.records["prober"].workers
        # In its own world the owner's tree is not in the prober's view (the mount layer:
        # ENOENT); without one, Landlock refuses every path into it (EACCES).
        refusal = errno.ENOENT if in_world(prober) else errno.EACCES

    # Positive control: the same code, in the owner, reads and imports its own environment.
    assert own["read"]["ok"] and secret in own["read"]["value"]
    assert own["import"] == {"ok": True, "value": secret}
    assert own["list"]["ok"] and own["lock"]["ok"]
    # The prober gets nothing: the kernel refuses every path into the owner's tree.
    assert secret not in json.dumps(stolen)
    for step in ("read", "list", "list_root", "lock"):
        assert not stolen[step]["ok"], (step, stolen[step])
        assert stolen[step]["errno"] == refusal, (step, stolen[step])
    assert not stolen["import"]["ok"]
    # Neither may change an environment: not the owner its own, not the prober the owner's.
    for report in (own, stolen):
        assert not report["write"]["ok"] and not report["write_module"]["ok"]
    assert not (owner_env.path / "planted.py").exists()
    assert module.read_bytes() == before
