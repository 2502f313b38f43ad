"""Grant policy: caps and denials, each refusal naming the manifest permission."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from autoweave_plugins.config import from_mapping
from autoweave_plugins.errors import ConfigError, PolicyRefused
from autoweave_plugins.manifest import Manifest, parse_manifest_bytes
from autoweave_plugins.permissions.policy import GrantPolicy


def manifest(**permissions: Any) -> Manifest:
    doc = {"name": "asker", "version": "1.0.0", "entry": "main.py", "permissions": permissions}
    return parse_manifest_bytes(json.dumps(doc).encode())


def refused(policy: GrantPolicy, m: Manifest) -> list[str]:
    return [r.permission for r in policy.refusals(m)]


def test_default_policy_grants_an_ordinary_manifest() -> None:
    m = manifest(
        filesystem=[{"path": "/tmp/plugin-data", "mode": "readwrite"}],
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
        allowed_path_roots=("/srv",),
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


def test_caps_name_the_permission() -> None:
    m = manifest(memory={"max_heap_mb": 2048, "max_workers": 8})
    policy = GrantPolicy(max_heap_mb=512, max_workers=2)
    assert refused(policy, m) == [
        "$.permissions.memory.max_heap_mb",
        "$.permissions.memory.max_workers",
    ]
    with pytest.raises(PolicyRefused) as caught:
        policy.enforce(m)
    assert caught.value.plugin == "asker" and "2048" in str(caught.value)


def test_paths_outside_allowed_roots_and_denied_paths() -> None:
    m = manifest(
        filesystem=[
            {"path": "/srv/data/in", "mode": "read"},
            {"path": "/var/tmp/x", "mode": "write"},
            {"path": "/etc/ssh/keys", "mode": "read"},
            {"path": "/etc", "mode": "read"},  # contains a denied path
        ]
    )
    policy = GrantPolicy(allowed_path_roots=("/srv/data", "/etc"))
    assert refused(policy, m) == [
        "$.permissions.filesystem[1].path",
        "$.permissions.filesystem[2].path",
        "$.permissions.filesystem[3].path",
    ]


def test_allowed_root_is_compared_by_component() -> None:
    m = manifest(filesystem=[{"path": "/srv/data-secret", "mode": "read"}])
    assert refused(GrantPolicy(allowed_path_roots=("/srv/data",)), m) == [
        "$.permissions.filesystem[0].path"
    ]


def test_a_declared_symlink_is_judged_by_its_target(tmp_path: Path) -> None:
    link = tmp_path / "innocent"
    os.symlink("/etc/ssh", link)
    m = manifest(filesystem=[{"path": str(link), "mode": "read"}])
    [refusal] = GrantPolicy().refusals(m)
    assert "resolves to /etc/ssh" in refusal.message


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
    policy = from_mapping(
        GrantPolicy, {"max_heap_mb": 512, "allowed_path_roots": ["/srv"]}, "policy"
    )
    assert policy.allowed_path_roots == ("/srv",)
    with pytest.raises(
        ConfigError, match=r"policy\.max_heap_md: unknown key; did you mean 'max_heap_mb'"
    ):
        from_mapping(GrantPolicy, {"max_heap_md": 1}, "policy")
    with pytest.raises(ConfigError, match=r"policy\.max_heap_mb: must be an integer, not str"):
        from_mapping(GrantPolicy, {"max_heap_mb": "512"}, "policy")
    with pytest.raises(ConfigError, match=r"policy\.allowed_path_roots\[0\]"):
        from_mapping(GrantPolicy, {"allowed_path_roots": ["relative"]}, "policy")
    with pytest.raises(ConfigError, match=r"policy\.inbound_ports"):
        from_mapping(GrantPolicy, {"inbound_ports": [2000, 1000]}, "policy")


def test_write_access_to_code_outside_the_sandbox_is_never_granted(tmp_path: Path) -> None:
    import sysconfig

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
    refusals = GrantPolicy(denied_paths=()).refusals(m, plugin_root=str(plugins))
    assert [r.permission for r in refusals] == [
        "$.permissions.filesystem[0].path",
        "$.permissions.filesystem[1].path",
    ]
    assert "outside the sandbox" in refusals[0].message
    reading = manifest(filesystem=[{"path": site, "mode": "read"}])
    assert GrantPolicy(denied_paths=()).refusals(reading) == []
