"""Host settings that reach a worker: imports per plugin and globally, BLAS threads, the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoweave_plugins.errors import ConfigError
from autoweave_plugins.settings import ManagerConfig, PluginHostConfig

TOML = """
[worker_pool]
extra_imports = ["subprocess", "pty"]
denied_imports = ["ctypes", "xml.dom"]
blas_threads = 2

[plugins.reporter]
extra_imports = ["ctypes"]
denied_imports = ["pty", "sqlite3"]

[plugin_config.reporter]
endpoint = "https://example.com"
"""


def test_plugins_tables_are_read_next_to_the_global_settings(tmp_path: Path) -> None:
    path = tmp_path / "autoweave.toml"
    path.write_text(TOML)
    config = ManagerConfig.from_toml(path)
    assert config.plugins == {
        "reporter": PluginHostConfig(extra_imports=("ctypes",), denied_imports=("pty", "sqlite3"))
    }
    assert config.plugin_config["reporter"] == {"endpoint": "https://example.com"}
    own = config.worker_options("reporter")
    # [plugins.NAME] decides over [worker_pool] for the same prefix.
    assert set(own["extra_imports"]) == {"subprocess", "ctypes"}
    assert set(own["denied_imports"]) == {"xml.dom", "pty", "sqlite3"}
    assert own["blas_threads"] == 2 and own["policy"] is config.policy
    other = config.worker_options("someone-else")
    assert set(other["extra_imports"]) == {"subprocess", "pty"}
    assert set(other["denied_imports"]) == {"ctypes", "xml.dom"}


def test_a_denial_wins_over_a_grant_in_the_same_place() -> None:
    config = ManagerConfig.from_mapping(
        {"plugins": {"p": {"extra_imports": ["ctypes"], "denied_imports": ["ctypes"]}}}
    )
    assert config.worker_options("p")["denied_imports"] == ("ctypes",)
    assert config.worker_options("p")["extra_imports"] == ()


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"plugins": {"p": {"extra_import": ["x"]}}}, "config.plugins.p.extra_import"),
        ({"plugins": {"p": {"denied_imports": ["not a module"]}}}, "denied_imports[0]"),
        ({"plugins": {"p": ["x"]}}, "config.plugins.p"),
        ({"worker_pool": {"blas_threads": 0}}, "worker_pool.blas_threads"),
        ({"worker_pool": {"extra_imports": ["a..b"]}}, "worker_pool.extra_imports[0]"),
    ],
)
def test_bad_settings_name_their_key(mapping: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ManagerConfig.from_mapping(mapping)
    assert key in caught.value.key
