"""The small pieces that wire the namespace layer into workers: the options a worker is started
with, the clone flags a template asks for, the parsing of a refused sandbox on the host, the
view's bookkeeping, and who owns the folders the host makes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins.config import from_mapping
from autoweave_plugins.errors import ConfigError, ProtocolError, SandboxUnavailable
from autoweave_plugins.manifest import parse_manifest_bytes
from autoweave_plugins.policy import GrantPolicy, ensure_declared_paths
from autoweave_plugins.rpc import sandbox_unavailable
from autoweave_plugins.sandbox import _outermost, kernel
from autoweave_plugins.sandbox.cloned import clone_flags
from autoweave_plugins.sandbox.mounts import Scaffold
from autoweave_plugins.sandbox.namespaces import outer_pid
from autoweave_plugins.sandbox.world import NAMESPACES, WORKER_IDENTITY, WorldOptions
from autoweave_plugins.settings import ManagerConfig, WorkerPoolConfig

names = st.frozensets(st.sampled_from(NAMESPACES))


@given(st.booleans(), names)
def test_world_options_travel_as_one_argument(enabled: bool, disabled: frozenset[str]) -> None:
    options = WorldOptions(enabled, disabled if enabled else frozenset())
    assert WorldOptions.from_arg(options.to_arg()) == options


@pytest.mark.parametrize("text", ["user,bogus", "NET", "pid;net"])
def test_an_unknown_namespace_in_the_argument_is_a_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError, match="unknown namespaces"):
        WorldOptions.from_arg(text)


def test_config_names_the_bad_namespace() -> None:
    with pytest.raises(ConfigError, match=r"worker_pool\.disabled_namespaces\[1\]"):
        ManagerConfig.from_mapping({"worker_pool": {"disabled_namespaces": ["net", "network"]}})
    pool = from_mapping(WorkerPoolConfig, {"disabled_namespaces": ["net"]}, "worker_pool")
    assert pool.world() == WorldOptions(True, frozenset({"net"}))
    assert from_mapping(WorkerPoolConfig, {"namespaces": False}, "worker_pool").world() == (
        WorldOptions(False)
    )


def test_the_template_clones_into_a_pid_namespace_and_no_more() -> None:
    assert clone_flags(WorldOptions(), root=True) == kernel.CLONE_NEWPID
    unprivileged = kernel.CLONE_NEWPID | kernel.CLONE_NEWUSER
    assert clone_flags(WorldOptions(), root=False) == unprivileged
    # Optional namespaces disabled: still cloned, the worker records them as lost itself.
    assert clone_flags(WorldOptions(disabled=frozenset({"net"})), root=True) == kernel.CLONE_NEWPID
    for needed in ("pid", "mount"):
        assert clone_flags(WorldOptions(disabled=frozenset({needed})), root=True) is None
    assert clone_flags(WorldOptions(disabled=frozenset({"user"})), root=False) is None
    assert clone_flags(WorldOptions(False), root=True) is None


@pytest.mark.parametrize(
    ("missing", "detail"),
    [
        (("net_namespace",), "net namespace disabled by the host"),
        (("landlock", "seccomp"), ""),
        (("user_namespace", "pid_namespace"), "clone refused: (a) nested (parens)"),
    ],
)
def test_the_host_reads_back_which_layers_a_worker_lacks(
    missing: tuple[str, ...], detail: str
) -> None:
    again = sandbox_unavailable(str(SandboxUnavailable(missing, detail)))
    assert again.missing == missing
    assert str(again) == str(SandboxUnavailable(missing, detail))


def test_an_unreadable_refusal_still_says_what_it_got() -> None:
    again = sandbox_unavailable("something else entirely")
    assert again.missing == ("unknown",) and "something else entirely" in str(again)


@given(st.lists(st.sampled_from(["/usr", "/usr/lib", "/etc/ssl", "/opt/a/b"]), max_size=4))
def test_a_path_is_provided_exactly_when_a_bind_holds_it(binds: list[str]) -> None:
    scaffold = Scaffold()
    scaffold.binds.update(binds)
    for path in ["/usr/lib/x", "/usr", "/etc/ssl/certs/c.pem", "/etc", "/opt/a", "/opt/a/b/c", "/"]:
        expected = any(path == b or path.startswith(b + "/") for b in binds)
        assert scaffold.provided(path) is expected, (path, binds)


def test_outer_pid_is_the_hosts_pid_outside_any_namespace() -> None:
    assert outer_pid() == os.getpid()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving folders to another uid needs root")
def test_the_folders_the_host_makes_go_to_the_workers_identity(tmp_path: Path) -> None:
    root = tmp_path / "data" / "maker"
    wanted = root / "cache" / "deep"
    doc = {
        "name": "maker",
        "version": "1.0.0",
        "entry": "main.py",
        "permissions": {"filesystem": [{"path": str(wanted), "mode": "readwrite"}]},
    }
    manifest = parse_manifest_bytes(json.dumps(doc).encode())
    policy = from_mapping(GrantPolicy, {"allowed_roots": [str(root)]}, "policy")
    made = ensure_declared_paths(manifest, policy, WORKER_IDENTITY)
    assert made == [str(root), str(root / "cache"), str(wanted)]
    for folder in made:
        info = os.stat(folder)
        assert (info.st_uid, info.st_gid) == WORKER_IDENTITY
    assert (tmp_path / "data").stat().st_uid == 0  # above the allowed root: left alone


@given(st.lists(st.sampled_from(["/a", "/a/b", "/a/b/c", "/a/b-c", "/a/bc", "/d", "/d/e"])))
def test_nested_read_paths_are_left_to_the_folder_above(paths: list[str]) -> None:
    kept = _outermost(paths)
    for path in paths:  # every path is still covered, by exactly one kept rule
        covering = [k for k in kept if path == k or path.startswith(k + "/")]
        assert len(covering) == 1, (path, kept)
    assert all(not (a != b and b.startswith(a + "/")) for a in kept for b in kept)
