"""Grant policy: caps and denials, each refusal naming the manifest permission.

Filesystem grants are deny-by-default (DESIGN §3): only paths under ``policy.allowed_roots``
are granted, system locations and the host's own files never are, and a config that tries to
allow them is a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

import autoweave_plugins
from autoweave_plugins.config import from_mapping
from autoweave_plugins.errors import ConfigError, PolicyRefused
from autoweave_plugins.manifest import Manifest, parse_manifest_bytes
from autoweave_plugins.policy import GrantPolicy
from autoweave_plugins.roots import default_data_root
from autoweave_plugins.settings import ManagerConfig


def manifest(name: str = "asker", **permissions: Any) -> Manifest:
    doc = {"name": name, "version": "1.0.0", "entry": "main.py", "permissions": permissions}
    return parse_manifest_bytes(json.dumps(doc).encode())


def refused(policy: GrantPolicy, m: Manifest, plugin_root: str | None = None) -> list[str]:
    return [r.permission for r in policy.refusals(m, plugin_root)]


def grants(*paths: str, mode: str = "readwrite") -> list[dict[str, str]]:
    return [{"path": path, "mode": mode} for path in paths]


def policy_with(**values: Any) -> GrantPolicy:
    return from_mapping(GrantPolicy, values, "policy")


# --- the default: one data root, one folder per plugin ----------------------------------------


def test_default_data_root_follows_xdg_then_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/xdg")
    assert default_data_root() == "/srv/xdg/autoweave-plugins"
    monkeypatch.delenv("XDG_DATA_HOME")
    if os.geteuid() == 0:
        assert default_data_root() == "/var/lib/autoweave-plugins"
    else:
        assert default_data_root() == os.path.expanduser("~/.local/share/autoweave-plugins")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec: ignore relative paths
    assert default_data_root() != "relative/ignored/autoweave-plugins"


def test_default_policy_has_one_root_with_a_folder_per_plugin() -> None:
    policy = GrantPolicy()
    assert policy.allowed_roots == (default_data_root() + "/{plugin}",)
    own = default_data_root() + "/asker"
    GrantPolicy().enforce(manifest(filesystem=grants(own, own + "/cache/deep")))


def test_default_policy_grants_an_ordinary_manifest() -> None:
    m = manifest(
        filesystem=grants(default_data_root() + "/asker"),
        network={"outbound": ["https://api.example.com/*"], "inbound": {"port": 8080}},
        usb={"vendor_ids": ["0x1234"]},
        memory={"max_heap_mb": 256},
    )
    assert refused(GrantPolicy(), m) == []
    GrantPolicy().enforce(m)  # raises PolicyRefused on any refusal
    # Control: the same manifest is judged, section by section, by a stricter policy.
    strict = GrantPolicy(
        max_heap_mb=128,
        allow_usb=False,
        allowed_roots=("/srv",),
        allow_outbound=False,
        inbound_ports=(10000, 20000),
    )
    assert refused(strict, m) == [
        "$.permissions.filesystem[0].path",
        "$.permissions.memory.max_heap_mb",
        "$.permissions.network.outbound[0]",
        "$.permissions.network.inbound.port",
        "$.permissions.usb",
    ]


def test_another_plugins_data_is_refused_naming_the_root_that_would_allow_it() -> None:
    other = default_data_root() + "/other-plugin"
    for mode in ("read", "readwrite"):
        [refusal] = GrantPolicy().refusals(manifest(filesystem=grants(other, mode=mode)))
        assert refusal.permission == "$.permissions.filesystem[0].path"
        assert other in refusal.message
        assert default_data_root() + "/asker" in refusal.message  # where asker may have data


SYSTEM_PATHS = [
    "/usr/sbin",
    "/usr",
    "/usr/bin",
    f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}",
    "/sbin",
    "/bin",
    "/lib",
    "/lib64",
    "/etc/ld.so.cache",
    "/etc/cron.d",
    "/etc/passwd",
    "/boot",
    "/root/.bashrc",
    "/home/alice/.bashrc",
    "/home/alice/.ssh/authorized_keys",
    "/var/lib/dpkg/info",
    "/var/spool/cron",
    "/sys/kernel",
    "/dev/shm/x",
    "/run/systemd",
]


@pytest.mark.parametrize("path", SYSTEM_PATHS)
@pytest.mark.parametrize("mode", ["read", "write", "readwrite"])
def test_default_policy_refuses_system_locations(path: str, mode: str) -> None:
    [refusal] = GrantPolicy().refusals(manifest(filesystem=grants(path, mode=mode)))
    assert refusal.permission == "$.permissions.filesystem[0].path"
    assert path in refusal.message


@pytest.mark.parametrize("path", SYSTEM_PATHS)
def test_system_locations_are_never_granted_write_even_under_a_broad_root(path: str) -> None:
    """Whatever the roots say, a grant that overlaps a system location is refused."""
    top = "/" + path.split("/")[1]
    policy = GrantPolicy(allowed_roots=(top,))  # built directly: skips the config check
    [refusal] = policy.refusals(manifest(filesystem=grants(path)))
    assert "never" in refusal.message


def test_tmp_subpaths_are_granted_only_when_listed(tmp_path: Path) -> None:
    m = manifest(filesystem=grants("/tmp/plugin-data"))
    [refusal] = GrantPolicy().refusals(m)
    assert "policy.allowed_roots" in refusal.message and "/tmp/plugin-data" in refusal.message
    policy_with(allowed_roots=["/tmp/plugin-data"]).enforce(m)
    assert refused(policy_with(allowed_roots=["/tmp/plugin-data"]), manifest()) == []


def test_allowed_root_is_compared_by_component() -> None:
    m = manifest(filesystem=grants("/srv/data-secret", mode="read"))
    assert refused(policy_with(allowed_roots=["/srv/data"]), m) == [
        "$.permissions.filesystem[0].path"
    ]


def test_a_declared_symlink_is_judged_by_its_target(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    link = root / "innocent"
    os.symlink("/etc/ssh", link)
    m = manifest(filesystem=grants(str(link), mode="read"))
    [refusal] = policy_with(allowed_roots=[str(root)]).refusals(m)
    assert "resolves to /etc/ssh" in refusal.message


def test_a_symlink_into_the_root_does_not_grant_what_it_points_at(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(root, tmp_path / "alias")
    m = manifest(filesystem=grants(str(tmp_path / "alias"), mode="read"))
    assert refused(policy_with(allowed_roots=[str(root)]), m) == [
        "$.permissions.filesystem[0].path"
    ]


# --- the host's own files: the plugin directory and the config file ---------------------------


def test_the_plugin_directory_is_never_granted_even_for_reading(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    (plugins / "sibling").mkdir(parents=True)
    policy = GrantPolicy(allowed_roots=(str(tmp_path),))  # too broad, but the check still holds
    for path in (plugins, plugins / "sibling", plugins / "sibling" / "secret.txt", tmp_path):
        m = manifest(filesystem=grants(str(path), mode="read"))
        [refusal] = policy.refusals(m, plugin_root=str(plugins))
        assert "plugin directory" in refusal.message, refusal.message


def test_the_config_file_is_never_granted(tmp_path: Path) -> None:
    config = tmp_path / "autoweave.toml"
    data = tmp_path / "data"
    config.write_text(f'[policy]\nallowed_roots = ["{data}"]\n')
    loaded = ManagerConfig.from_toml(config).policy
    assert refused(loaded, manifest(filesystem=grants(str(data / "x")))) == []
    m = manifest(filesystem=grants(str(config), mode="read"))
    [refusal] = GrantPolicy(allowed_roots=(str(tmp_path),), denied_paths=(str(config),)).refusals(m)
    assert str(config) in refusal.message
    assert str(config) in loaded.denied_paths


def test_a_config_whose_roots_contain_the_host_files_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "autoweave.toml"
    config.write_text(f'[policy]\nallowed_roots = ["{tmp_path}"]\n')
    with pytest.raises(ConfigError, match=r"policy\.allowed_roots\[0\].*config file"):
        ManagerConfig.from_toml(config)
    with pytest.raises(ConfigError, match=r"policy\.allowed_roots\[0\].*plugin directory"):
        ManagerConfig.from_mapping(
            {
                "plugin_directory": str(tmp_path / "plugins"),
                "policy": {"allowed_roots": [str(tmp_path)]},
            }
        )


def test_write_access_to_code_outside_the_sandbox_is_never_granted(tmp_path: Path) -> None:
    site = sysconfig.get_paths()["purelib"]
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    m = manifest(
        filesystem=[
            {"path": site, "mode": "readwrite"},
            {"path": str(plugins / "other-plugin"), "mode": "write"},
            {"path": str(tmp_path / "data"), "mode": "write"},
        ]
    )
    everything = GrantPolicy(allowed_roots=(str(tmp_path), site))  # direct: no config check
    refusals = everything.refusals(m, plugin_root=str(plugins))
    assert [r.permission for r in refusals] == [
        "$.permissions.filesystem[0].path",
        "$.permissions.filesystem[1].path",
    ]
    assert "outside the sandbox" in refusals[0].message
    reading = manifest(filesystem=[{"path": site, "mode": "read"}])
    assert refused(everything, reading) == ["$.permissions.filesystem[0].path"]


# --- config: roots that can never be allowed are a ConfigError naming the key ----------------


@pytest.mark.parametrize(
    "root",
    [
        "/usr",
        "/usr/local/bin",
        "/usr/sbin",
        "/etc",
        "/etc/cron.d",
        "/var/lib",
        "/var/lib/dpkg",
        "/var",  # contains /var/lib
        "/home/alice/.ssh",
        "/home/alice",  # contains dot-files
        "/home",
        "/root",
        "/boot",
        "/proc/self",
        "/sys/fs",
        "/dev/shm/data",
        "/tmp",  # every other user's and plugin's files too
        "/var/tmp",
        sys.prefix,
        sysconfig.get_paths()["purelib"],
        str(Path(autoweave_plugins.__file__ or "").resolve().parent.parent),
        "relative/path",
        "/srv/{plugin}x",
        "/srv/{other}",
    ],
)
def test_a_config_listing_a_system_location_is_a_config_error(root: str) -> None:
    with pytest.raises(ConfigError) as caught:
        policy_with(allowed_roots=["/srv/fine", root])
    assert caught.value.key == "policy.allowed_roots[1]", caught.value


@pytest.mark.parametrize(
    "root",
    [
        "/var/lib/autoweave-plugins",
        "/var/lib/autoweave-plugins/{plugin}",
        "/tmp/plugin-data",
        "/srv/autoweave/{plugin}/data",
        os.path.expanduser("~/.local/share/autoweave-plugins"),
    ],
)
def test_data_roots_are_accepted(root: str) -> None:
    assert policy_with(allowed_roots=[root]).allowed_roots == (root,)


def test_the_data_root_under_var_lib_does_not_open_var_lib() -> None:
    policy = policy_with(allowed_roots=["/var/lib/autoweave-plugins"])
    m = manifest(filesystem=grants("/var/lib/autoweave-plugins/asker", "/var/lib/dpkg"))
    assert refused(policy, m) == ["$.permissions.filesystem[1].path"]


def test_a_placeholder_root_partitions_plugins(tmp_path: Path) -> None:
    policy = policy_with(allowed_roots=[f"{tmp_path}/{{plugin}}"])
    mine = manifest("alpha", filesystem=grants(f"{tmp_path}/alpha/db"))
    theirs = manifest("alpha", filesystem=grants(f"{tmp_path}/beta/db", f"{tmp_path}"))
    assert refused(policy, mine) == []
    assert refused(policy, theirs) == [
        "$.permissions.filesystem[0].path",
        "$.permissions.filesystem[1].path",
    ]


# --- caps and the rest ------------------------------------------------------------------------


def test_caps_name_the_permission() -> None:
    m = manifest(memory={"max_heap_mb": 2048, "max_workers": 8, "max_threads": 512})
    policy = GrantPolicy(max_heap_mb=512, max_workers=2, max_threads=128)
    assert refused(policy, m) == [
        "$.permissions.memory.max_heap_mb",
        "$.permissions.memory.max_workers",
        "$.permissions.memory.max_threads",
    ]
    with pytest.raises(PolicyRefused) as caught:
        policy.enforce(m)
    assert caught.value.plugin == "asker" and "2048" in str(caught.value)


def test_paths_under_denied_paths_are_refused() -> None:
    policy = policy_with(allowed_roots=["/srv/data"], denied_paths=["/srv/data/private"])
    m = manifest(
        filesystem=[
            {"path": "/srv/data/in", "mode": "read"},
            {"path": "/var/tmp/x", "mode": "write"},
            {"path": "/srv/data/private/keys", "mode": "read"},
            {"path": "/srv/data", "mode": "read"},  # contains a denied path
        ]
    )
    assert refused(policy, m) == [
        "$.permissions.filesystem[1].path",
        "$.permissions.filesystem[2].path",
        "$.permissions.filesystem[3].path",
    ]


def test_network_denials() -> None:
    m = manifest(
        network={
            "outbound": [
                "https://*/*",
                "http://localhost:8080/*",
                "http://10.0.0.5/*",
                "https://ok.example.com/*",
            ],
            "inbound": {"port": 8080, "interface": "all"},
        }
    )
    assert refused(GrantPolicy(allow_private_network=False), m) == [
        "$.permissions.network.outbound[0]",
        "$.permissions.network.outbound[1]",
        "$.permissions.network.outbound[2]",
        "$.permissions.network.inbound.interface",
    ]
    permissive = GrantPolicy(allow_any_host=True, allow_inbound_all_interfaces=True)
    assert refused(permissive, m) == []
    assert len(refused(GrantPolicy(allow_outbound=False), m)) == 5


def test_inbound_port_range_and_usb_switch() -> None:
    m = manifest(network={"inbound": {"port": 9000}}, usb={"vendor_ids": ["0x1234"]})
    policy = GrantPolicy(inbound_ports=(10000, 20000), allow_usb=False)
    assert refused(policy, m) == ["$.permissions.network.inbound.port", "$.permissions.usb"]


def test_policy_from_mapping_names_bad_keys() -> None:
    policy = policy_with(max_heap_mb=512, allowed_roots=["/srv"])
    assert policy.allowed_roots == ("/srv",)
    with pytest.raises(
        ConfigError, match=r"policy\.max_heap_md: unknown key; did you mean 'max_heap_mb'"
    ):
        policy_with(max_heap_md=1)
    with pytest.raises(ConfigError, match=r"policy\.max_heap_mb: must be an integer, not str"):
        policy_with(max_heap_mb="512")
    with pytest.raises(ConfigError, match=r"policy\.allowed_roots\[0\]"):
        policy_with(allowed_roots=["relative"])
    with pytest.raises(ConfigError, match=r"policy\.inbound_ports"):
        policy_with(inbound_ports=[2000, 1000])
    with pytest.raises(ConfigError, match=r"policy\.max_threads"):
        policy_with(max_threads=0)
    with pytest.raises(ConfigError, match=r"policy\.denied_paths\[0\]"):
        policy_with(denied_paths=["relative"])
