"""Planning a world (pure): what gets mounted where, in which order, with which rights.

The kernel stacks mounts: the last mount placed at a path or above it is what a process
sees there. ``effective`` replays a plan that way, so the properties below are about what
the worker would really see, not about the shape of the list.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoweave_plugins.errors import InvalidPath, WorldError
from autoweave_plugins.sandbox.world import (
    DATA,
    READ_ONLY,
    BaseSpec,
    Step,
    WorldSpec,
    plan_base,
    plan_plugin,
)

READ_GRANT = DATA | READ_ONLY


def within(path: str, base: str) -> bool:
    return path == base or path.startswith(base + "/")


def effective(steps: list[Step], path: str) -> Step | None:
    """The mount a process would find at ``path`` once ``steps`` ran in order."""
    found = None
    for step in steps:
        if step.kind in ("bind", "tmpfs", "proc") and within(path, step.target):
            found = step
    return found


def base_of(*runtime: Path) -> BaseSpec:
    return BaseSpec(runtime=tuple(str(path) for path in runtime), system=())


names = st.sampled_from(["a", "b", "c", "lib", "data"])
trees = st.lists(st.lists(names, min_size=1, max_size=4), min_size=1, max_size=8)
modes = st.sampled_from(["read", "write", "readwrite"])


grant_lists = st.lists(st.tuples(st.lists(names, min_size=0, max_size=4), modes), max_size=6)


@settings(max_examples=80, deadline=None)
@given(runtime=trees, grants=grant_lists)
def test_every_path_is_visible_with_its_rights_and_the_runtime_stays_read_only(
    runtime: list[list[str]], grants: list[tuple[list[str], str]]
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        runtime_paths = [root / "a" / Path(*parts) for parts in runtime]
        # Grants may lie above, beside or inside the runtime: all three must come out right.
        grant_paths = [(root / "a" / Path(*parts), mode) for parts, mode in grants]
        plugin = root / "plugin"
        for path in [*runtime_paths, plugin, *(path for path, _ in grant_paths)]:
            path.mkdir(parents=True, exist_ok=True)
        base = plan_base(base_of(*runtime_paths))
        spec = WorldSpec(str(plugin), grants=tuple((str(p), m) for p, m in grant_paths))
        protected = [str(p) for p in runtime_paths]
        if any(m != "read" and any(within(str(p), r) for r in protected) for p, m in grant_paths):
            with pytest.raises(WorldError, match="inside the runtime"):
                plan_plugin(spec, base)
            return
        steps = list(base.steps) + plan_plugin(spec, base)
        order = [step.target for step in steps if step.kind == "bind"]
        for path in runtime_paths:
            seen = effective(steps, str(path))
            assert seen is not None and seen.attrs == READ_ONLY
        assert effective(steps, str(plugin)) == Step("bind", str(plugin), str(plugin), READ_ONLY)
        for path, mode in grant_paths:
            seen = effective(steps, str(path))
            wanted = READ_GRANT if mode == "read" else DATA
            assert seen is not None and seen.attrs & ~wanted == 0  # at least what was granted
        requested = {str(p) for p in runtime_paths} | {str(p) for p, _ in grant_paths}
        for target in order:  # nothing is exposed that nobody asked for
            assert target.startswith("/dev/") or target in requested | {str(plugin)}
        plugin_steps = plan_plugin(spec, base)
        keys = [tuple(s.target.split("/")) for s in plugin_steps]
        assert keys == sorted(keys)  # a mount before whatever lies inside it


def test_a_plugin_mount_over_the_runtime_puts_the_runtime_back_on_top(tmp_path: Path) -> None:
    runtime = tmp_path / "shared" / "runtime"
    runtime.mkdir(parents=True)
    (tmp_path / "plugin").mkdir()
    base = plan_base(base_of(runtime))
    spec = WorldSpec(str(tmp_path / "plugin"), grants=((str(tmp_path / "shared"), "read"),))
    steps = list(base.steps) + plan_plugin(spec, base)
    assert effective(steps, str(runtime / "x.py")).attrs == READ_ONLY  # type: ignore[union-attr]
    assert effective(steps, str(tmp_path / "shared" / "y")).attrs == READ_GRANT  # type: ignore[union-attr]


def test_symlinked_components_are_recreated_and_their_targets_exposed(tmp_path: Path) -> None:
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    zone = tmp_path / "zoneinfo" / "UTC"
    zone.parent.mkdir()
    zone.write_text("TZif")
    (tmp_path / "localtime").symlink_to(zone)
    base = plan_base(base_of(tmp_path / "lib", tmp_path / "localtime"))
    links = {step.target: step.source for step in base.steps if step.kind == "symlink"}
    assert links[str(tmp_path / "lib")] == "usr/lib"
    assert links[str(tmp_path / "localtime")] == str(zone)
    binds = {step.target: step for step in base.binds}
    assert binds[str(tmp_path / "usr" / "lib")].directory
    assert not binds[str(zone)].directory


def test_missing_system_paths_are_left_out_but_missing_grants_refused(tmp_path: Path) -> None:
    base = plan_base(BaseSpec(runtime=(), system=(str(tmp_path / "absent"),)))
    assert base.binds == ()
    with pytest.raises(WorldError, match="does not exist"):
        plan_plugin(WorldSpec(str(tmp_path / "absent")), base)
    (tmp_path / "plugin").mkdir()
    spec = WorldSpec(str(tmp_path / "plugin"), grants=((str(tmp_path / "gone"), "read"),))
    with pytest.raises(WorldError, match="read grant does not exist"):
        plan_plugin(spec, base)


@pytest.mark.parametrize(
    ("path", "error", "match"),
    [
        ("relative/path", InvalidPath, "absolute"),
        ("/a/../b", InvalidPath, "normalised"),
        ("/a\0b", InvalidPath, "NUL"),
        ("/", WorldError, "cannot be shared"),
        ("/tmp", WorldError, "cannot be shared"),
        ("/proc/1/root", WorldError, "/proc is built by the world"),
        ("/dev/sda", WorldError, "/dev is built by the world"),
    ],
)
def test_paths_a_world_cannot_hold_are_refused_before_anything_happens(
    tmp_path: Path, path: str, error: type[Exception], match: str
) -> None:
    (tmp_path / "plugin").mkdir()
    base = plan_base(BaseSpec(runtime=(), system=()))
    with pytest.raises(error, match=match):
        plan_plugin(WorldSpec(str(tmp_path / "plugin"), grants=((path, "read"),)), base)


def test_write_grants_inside_the_runtime_or_plugin_are_refused(tmp_path: Path) -> None:
    runtime, plugin = tmp_path / "runtime", tmp_path / "plugin"
    (runtime / "pkg").mkdir(parents=True)
    (plugin / "data").mkdir(parents=True)
    base = plan_base(base_of(runtime))
    for inside in (runtime / "pkg", plugin / "data", plugin):
        spec = WorldSpec(str(plugin), grants=((str(inside), "readwrite"),))
        with pytest.raises(WorldError, match="inside the runtime or plugin folder"):
            plan_plugin(spec, base)
    reading = WorldSpec(str(plugin), grants=((str(runtime / "pkg"), "read"),))
    assert all(step.target != str(runtime / "pkg") for step in plan_plugin(reading, base))


def test_unknown_modes_and_a_tiny_tmp_are_refused(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    base = plan_base(BaseSpec(runtime=(), system=()))
    with pytest.raises(WorldError, match="unknown grant mode"):
        plan_plugin(WorldSpec(str(tmp_path / "plugin"), grants=((str(tmp_path), "exec"),)), base)
    with pytest.raises(WorldError, match="at least 4 KiB"):
        plan_plugin(WorldSpec(str(tmp_path / "plugin"), tmp_bytes=100), base)


def test_trees_the_workers_uid_cannot_use_are_refused_with_the_fix(tmp_path: Path) -> None:
    worker = (4242, 4242)  # not the owner of anything here
    base = plan_base(BaseSpec(runtime=(), system=()))
    plugin = tmp_path / "plugin"
    plugin.mkdir(mode=0o700)
    with pytest.raises(WorldError, match="uid 4242, the worker on the host, cannot read it"):
        plan_plugin(WorldSpec(str(plugin)), base, worker=worker)
    plugin.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    spec = WorldSpec(str(plugin), grants=((str(out), "readwrite"),))
    with pytest.raises(WorldError, match=r"cannot write it .*give it to uid 4242"):
        plan_plugin(spec, base, worker=worker)
    assert plan_plugin(WorldSpec(str(plugin), grants=((str(out), "read"),)), base, worker=worker)
    out.chmod(0o777)
    assert plan_plugin(spec, base, worker=worker)
    assert plan_plugin(spec, base, worker=(0, 0))  # uid 0: mode bits are not the limit
