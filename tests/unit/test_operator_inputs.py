"""Bad inputs answered plainly: the value model, the static entry check, near-miss hook
names, every config error at once, host names and locks."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins.errors import ConfigError
from autoweave_plugins.hosts import (
    AmbiguousHost,
    HostError,
    HostLock,
    NoHost,
    host_name_for,
    select_host,
)
from autoweave_plugins.manifest.entry import check_entry
from autoweave_plugins.manifest.validate import validate_document
from autoweave_plugins.rpc import FrameDecoder, Kind, ValueBudget, check_value, encode
from autoweave_plugins.settings import ManagerConfig
from autoweave_plugins.usb.udev import udev_available

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=5),
    ),
    max_leaves=30,
)
anything = st.recursive(
    st.one_of(scalars, st.integers(), st.sets(st.integers(), max_size=2)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=3), st.integers(), st.booleans()), inner, max_size=4
        ),
    ),
    max_leaves=20,
)


def tuples_as_lists(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [tuples_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: tuples_as_lists(v) for k, v in value.items()}
    return value


@given(values)
def test_what_the_model_accepts_the_decoder_reads_back(value: Any) -> None:
    assert check_value(value, "v") is None
    [frame] = FrameDecoder().feed(encode([Kind.RESULT, 1, value]))
    assert frame[2] == tuples_as_lists(value)


@given(anything)
def test_what_the_decoder_would_refuse_the_model_refuses_first(value: Any) -> None:
    problem = check_value(value, "v")
    try:
        data = encode([Kind.RESULT, 1, value])
        FrameDecoder().feed(data)
    except Exception:
        assert problem is not None  # never sent: it would have broken the protocol
    else:
        assert problem is None


def test_refusals_name_the_value() -> None:
    assert check_value({"a": [1, {200: 5}]}, "result") == (
        "result['a'][1]",
        "map key 200 is a int; only str (or bytes) keys cross, so convert it, e.g. str(key)",
    )
    where, reason = check_value([1, 2**70], "args") or ("", "")
    assert where == "args[1]" and "outside 64 bits" in reason
    where, reason = check_value([[]] * 5, "x", ValueBudget(containers=3, elements=100)) or ("", "")
    assert "send bulk data as one bytes value" in reason


def make_entry(tmp_path: Path, code: str, hooks: dict[str, str]) -> list[str]:
    (tmp_path / "main.py").write_text(code)
    manifest, issues = validate_document(
        {"name": "p", "version": "1.0.0", "entry": "main.py", "hooks": hooks}
    )
    assert manifest is not None, issues
    return [str(i) for i in check_entry(str(tmp_path), manifest)]


def test_entry_check_reads_the_code_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = (
        f"open({str(marker)!r}, 'w').write('x')\n"
        "def initialize():\n    pass\n"
        "try:\n    from json import dumps as handle\nexcept ImportError:\n    handle = None\n"
        "if True:\n    async def cleanup():\n        pass\n"
    )
    hooks = {"onLoad": "initialize", "onJob": "handle", "onUnload": "cleanup"}
    assert make_entry(tmp_path, code, hooks) == []
    assert make_entry(tmp_path, code, {"onLoad": "initialise"}) == [
        "$.hooks.onLoad: names 'initialise', which main.py does not define; did you mean "
        "'initialize'? (functions defined: initialize)"
    ]
    assert not marker.exists()
    [syntax] = make_entry(tmp_path, "def f(:\n", {"onLoad": "f"})
    assert syntax.startswith("$.entry: main.py line 1: SyntaxError")
    assert make_entry(tmp_path, "from x import *\n", {"onLoad": "anything"}) == []


def test_near_miss_hook_names_get_a_did_you_mean() -> None:
    _, issues = validate_document(
        {"name": "p", "version": "1.0.0", "entry": "main.py", "hooks": {"onload": "f"}}
    )
    assert [str(i) for i in issues] == [
        "$.hooks.onload: the host never calls 'onload'; did you mean 'onLoad'?"
    ]
    _, issues = validate_document(
        {"name": "p", "version": "1.0.0", "entry": "main.py", "hooks": {"onjobrecieved": "f"}}
    )
    assert "did you mean 'onJobReceived'?" in str(issues[0])
    manifest, issues = validate_document(
        {"name": "p", "version": "1.0.0", "entry": "main.py", "hooks": {"onCustom": "f"}}
    )
    assert manifest is not None and issues == ()


def test_config_reports_every_error_at_once(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text(
        "[worker_pool]\nmin_worker = 2\ncall_timeout = -1\n"
        "[loader]\nload_timeout = 0\n[watcher]\ndebounce = 'x'\n"
    )
    with pytest.raises(ConfigError) as caught:
        ManagerConfig.from_toml(path)
    keys = [key for key, _ in caught.value.problems]
    assert keys == [
        f"{path}: worker_pool.min_worker",
        f"{path}: worker_pool.call_timeout",
        f"{path}: loader.load_timeout",
        f"{path}: watcher.debounce",
    ]
    assert str(caught.value).count("\n") == 3 and caught.value.key == keys[0]


def test_host_names_and_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("AUTOWEAVE_PLUGINS_HOST", raising=False)
    plugins = tmp_path / "my plugins"
    plugins.mkdir()
    name = host_name_for(plugins)
    assert name.startswith("my-plugins-") and name == host_name_for(str(plugins) + "/")
    assert host_name_for(tmp_path / "other") != name
    with pytest.raises(NoHost, match="no autoweave-plugins host is running"):
        select_host(None)
    first = HostLock(name, str(plugins))
    first.acquire()
    servers = []
    try:
        with pytest.raises(HostError, match=r"already running \(pid \d+\)"):
            HostLock(name, str(plugins)).acquire()
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(first.socket)
        listener.listen()
        servers.append(listener)
        first.publish()
        assert select_host(None) == first.socket
        assert select_host(str(plugins)) == first.socket
        assert select_host(name) == first.socket
        second = HostLock("second", str(tmp_path))
        second.acquire()
        other = socket.socket(socket.AF_UNIX)
        other.bind(second.socket)
        other.listen()
        servers.append(other)
        second.publish()
        with pytest.raises(AmbiguousHost, match="2 hosts are running") as ambiguous:
            select_host(None)
        assert {h.name for h in ambiguous.value.hosts} == {name, "second"}
        monkeypatch.setenv("AUTOWEAVE_PLUGINS_HOST", "second")
        assert select_host(None) == second.socket
        second.release()
        assert not Path(second.socket).exists()
    finally:
        for server in servers:
            server.close()
        first.release()
    assert not Path(first.socket).exists()
    with pytest.raises(HostError, match="host names are"):
        HostLock("../evil", str(plugins))


def test_udev_is_not_usable_without_its_runtime_folder(tmp_path: Path) -> None:
    problem = udev_available(str(tmp_path / "no-udev"))
    assert problem is not None and "udev daemon is not running here" in problem
