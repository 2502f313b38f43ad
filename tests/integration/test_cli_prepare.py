"""The real console script: `prepare` builds plugins' environments, `new --requirements`.

uv really runs, offline, from a wheelhouse generated in the test and named in the TOML config,
exactly as an air-gapped host would configure it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoweave_plugins import PluginManager
from autoweave_plugins.settings import ManagerConfig
from tests.wheelhouse import write_wheel

SCRIPT = shutil.which("autoweave-plugins", path=str(Path(sys.executable).parent))


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT is not None
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, "tinypkg", "1.0")
    write_wheel(wheels, "tinypkg", "2.0")
    path = tmp_path / "host.toml"
    path.write_text(
        f'[environments]\nfind_links = "{wheels}"\noffline = true\n'
        f'cache_dir = "{tmp_path / "envs"}"\n'
    )
    return path


def plugin(root: Path, name: str, *requirements: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    doc = {"name": name, "version": "1.0.0", "entry": "main.py", "requirements": list(requirements)}
    (folder / "autoweave.plugin.json").write_text(json.dumps(doc))
    (folder / "main.py").write_text("")


async def test_prepare_builds_each_environment_and_says_which_failed(
    tmp_path: Path, config: Path
) -> None:
    root = tmp_path / "plugins"
    plugin(root, "good", "tinypkg==1.0")
    plugin(root, "bad", "tinypkg>=3")
    plugin(root, "none")
    run = cli(tmp_path, "prepare", str(root), "--config", str(config), "--json")
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)["plugins"]
    assert sorted(report) == ["bad", "good"]  # a plugin without requirements needs nothing
    good = report["good"]
    assert good["ok"] and not good["cached"]
    wheelhouse = (tmp_path / "wheels").as_uri()
    assert good["environment"]["packages"] == [
        {"name": "tinypkg", "version": "1.0", "source": wheelhouse}
    ]
    bad = report["bad"]
    assert not bad["ok"] and bad["culprits"] == ["tinypkg>=3"]
    assert "cannot resolve 'tinypkg>=3'" in bad["error"]

    # What prepare built, run finds ready: no uv at all, so no network either.
    shutil.rmtree(root / "bad")
    again = cli(tmp_path, "prepare", str(root), "--config", str(config))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "good: cached" in again.stdout and "tinypkg 1.0 from" in again.stdout

    manager = PluginManager(root, config=ManagerConfig.from_toml(config))
    async with manager:
        assert manager.records["good"].environment is not None
        assert manager.environments.stats.uv_runs == 0


def test_prepare_prune_removes_what_no_plugin_uses(tmp_path: Path, config: Path) -> None:
    root = tmp_path / "plugins"
    plugin(root, "keeper", "tinypkg==2.0")
    plugin(root, "leaver", "tinypkg==1.0")
    assert cli(tmp_path, "prepare", str(root), "--config", str(config)).returncode == 0
    built = sorted(os.listdir(tmp_path / "envs" / "envs"))
    assert len(built) == 2
    shutil.rmtree(root / "leaver")
    run = cli(tmp_path, "prepare", str(root), "--config", str(config), "--prune", "--json")
    assert run.returncode == 0, run.stderr
    [removed] = json.loads(run.stdout)["pruned"]
    assert sorted(os.listdir(tmp_path / "envs" / "envs")) == [k for k in built if k != removed]


def test_prepare_reports_usage_errors(tmp_path: Path, config: Path) -> None:
    missing = cli(tmp_path, "prepare", str(tmp_path / "nowhere"), "--config", str(config))
    assert missing.returncode == 2 and "DIR" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[environments]\noffline = true\n")
    refused = cli(tmp_path, "prepare", str(tmp_path), "--config", str(bad))
    assert refused.returncode == 2 and "environments.offline: needs find_links" in refused.stderr


def test_new_scaffolds_a_plugin_with_requirements(tmp_path: Path, config: Path) -> None:
    made = cli(
        tmp_path, "new", "needs-tiny", "--directory", str(tmp_path / "p"),
        "--requirements", "tinypkg>=2", "--requirements", "Tinypkg<3",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "p" / "needs-tiny"
    manifest = json.loads((folder / "autoweave.plugin.json").read_text())
    assert manifest["requirements"] == ["tinypkg>=2", "Tinypkg<3"]
    assert "tinypkg>=2, Tinypkg<3" in (folder / "main.py").read_text()
    assert cli(tmp_path, "validate", str(folder)).returncode == 0
    run = cli(tmp_path, "prepare", str(tmp_path / "p"), "--config", str(config), "--json")
    assert run.returncode == 0, run.stderr
    packages = json.loads(run.stdout)["plugins"]["needs-tiny"]["environment"]["packages"]
    assert [(p["name"], p["version"]) for p in packages] == [("tinypkg", "2.0")]
    refused = cli(tmp_path, "new", "x", "--directory", str(tmp_path), "--requirements", "a @ b")
    assert refused.returncode == 2 and "direct URL" in refused.stderr
    assert not (tmp_path / "x").exists()
