"""The import policy: everything the sandbox lets work, except process spawning and host denials.

Plugin files are checked; a library importing what it needs is not; modules that resolve inside
the plugin folder are the plugin's own, whatever their name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins.sandbox.imports import DEFAULT_RULES, ImportGuard, decide


@pytest.fixture
def guard(tmp_path: Path) -> ImportGuard:
    (tmp_path / "helpers.py").write_text("")
    (tmp_path / "pkg").mkdir()
    return ImportGuard("demo", str(tmp_path), extra=("pty",), denied=("xml.dom", "ctypes"))


def plugin_globals(folder: Path) -> dict[str, str]:
    return {"__file__": str(folder / "main.py"), "__name__": "plugin"}


def test_plugin_imports_are_checked(guard: ImportGuard, tmp_path: Path) -> None:
    g = plugin_globals(tmp_path)
    for allowed in (
        "json",
        "asyncio.tasks",
        "helpers",
        "pkg.sub",
        "autoweave",
        "socket",  # importable: creating a socket is what the sandbox refuses, clearly
        "importlib",
        "sqlite3",
        "inspect",
        "multiprocessing.dummy",  # threads behind the multiprocessing API
        "pty",  # granted by the host
        "xml.sax",  # the host denies only xml.dom
    ):
        guard.check(allowed, g, 0)
    for refused in ("subprocess", "_posixsubprocess", "multiprocessing", "multiprocessing.pool"):
        with pytest.raises(ImportError, match=f"may not import '{refused}'") as caught:
            guard.check(refused, g, 0)
        assert "starting processes is not allowed in a plugin" in str(caught.value)
        assert "extra_imports" in str(caught.value)
    for denied in ("ctypes", "xml.dom.minidom"):
        with pytest.raises(ImportError, match="the host denies it to this plugin"):
            guard.check(denied, g, 0)


def test_from_import_names_are_checked(guard: ImportGuard, tmp_path: Path) -> None:
    g = plugin_globals(tmp_path)
    guard.check("concurrent.futures", g, 0, ("ThreadPoolExecutor", "wait"))
    with pytest.raises(ImportError, match=r"concurrent\.futures\.ProcessPoolExecutor"):
        guard.check("concurrent.futures", g, 0, ("ThreadPoolExecutor", "ProcessPoolExecutor"))


def test_stdlib_and_relative_imports_pass(guard: ImportGuard, tmp_path: Path) -> None:
    guard.check("subprocess", {"__file__": "/usr/lib/python3.11/asyncio/base_events.py"}, 0)
    guard.check("subprocess", None, 0)
    guard.check("anything", plugin_globals(tmp_path), 1)


def test_a_sibling_folder_is_not_the_plugin(guard: ImportGuard, tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="may not import 'subprocess'"):  # control: the plugin
        guard.check("subprocess", plugin_globals(tmp_path), 0)
    sibling = {"__file__": str(tmp_path) + "-evil/main.py"}
    guard.check("subprocess", sibling, 0)  # not plugin code: not this guard's business


def test_process_modules_are_refused_by_default() -> None:
    for name in ("subprocess", "multiprocessing", "pty", "concurrent.futures.process"):
        assert decide(name, DEFAULT_RULES) == (False, name)
    for name in ("ctypes", "signal", "ssl", "socket", "mmap", "tempfile", "email", "ast"):
        assert decide(name, DEFAULT_RULES) == (True, None)


def test_a_module_of_the_plugin_folder_imports_whatever_its_name(tmp_path: Path) -> None:
    """A vendored package, at any depth the plugin puts on sys.path, is the plugin's own code:
    a host denial of the name is about the library installed beside the runtime."""
    vendor = tmp_path / "vendor" / "deep"
    (vendor / "vendoredlib").mkdir(parents=True)
    (vendor / "vendoredlib" / "__init__.py").write_text("")
    guard = ImportGuard("demo", str(tmp_path), denied=("vendoredlib",))
    with pytest.raises(ImportError, match="the host denies it"):
        guard.check("vendoredlib", plugin_globals(tmp_path), 0)
    sys.path.insert(0, str(vendor))
    try:
        guard.check("vendoredlib.sub", plugin_globals(tmp_path), 0)
    finally:
        sys.path.remove(str(vendor))


def test_guard_judges_the_real_caller_not_the_globals_it_passes(tmp_path: Path) -> None:
    """Plugin code calling __import__("pty", {}) is still plugin code."""
    guard = ImportGuard("demo", str(tmp_path))
    guard.install()
    try:
        code = compile("__import__('pty', {})", str(tmp_path / "main.py"), "exec")
        with pytest.raises(ImportError, match="may not import 'pty'"):
            exec(code, {"__file__": str(tmp_path / "main.py"), "__name__": "plugin"})
        import json  # this test file is not plugin code

        assert json.dumps(1) == "1"
    finally:
        guard.uninstall()


_part = st.sampled_from(["a", "b", "c", "dd"])
_names = st.lists(_part, min_size=1, max_size=4).map(".".join)


@given(name=_names, rules=st.dictionaries(_names, st.booleans(), max_size=6))
def test_the_most_specific_rule_decides(name: str, rules: dict[str, bool]) -> None:
    allowed, rule = decide(name, rules)
    matching = [r for r in rules if name == r or name.startswith(r + ".")]
    if not matching:
        assert (allowed, rule) == (True, None)
    else:
        longest = max(matching, key=len)
        assert (allowed, rule) == (rules[longest], longest)


def test_the_plugins_own_environment_cannot_lift_a_denial(tmp_path: Path) -> None:
    """A wheel in the plugin's environment imports freely, but shipping a module named like a
    refused one (subprocess) does not make that name allowed."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    guard = ImportGuard("demo", str(folder))
    g = plugin_globals(folder)
    guard.check("humanize", g, 0)
    with pytest.raises(ImportError, match="starting processes is not allowed"):
        guard.check("subprocess", g, 0)
