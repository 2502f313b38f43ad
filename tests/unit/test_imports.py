"""The import allow-list: plugin files are checked, the stdlib importing itself is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoweave_plugins.sandbox.imports import SAFE_MODULES, ImportGuard


@pytest.fixture
def guard(tmp_path: Path) -> ImportGuard:
    (tmp_path / "helpers.py").write_text("")
    (tmp_path / "pkg").mkdir()
    return ImportGuard("demo", str(tmp_path), extra=("fcntl",))


def plugin_globals(folder: Path) -> dict[str, str]:
    return {"__file__": str(folder / "main.py"), "__name__": "plugin"}


def test_plugin_imports_are_checked(guard: ImportGuard, tmp_path: Path) -> None:
    g = plugin_globals(tmp_path)
    for allowed in ("json", "asyncio.tasks", "helpers", "pkg.sub", "fcntl", "autoweave"):
        guard.check(allowed, g, 0)
    for refused in (
        "subprocess",
        "socket",
        "ctypes",
        "importlib",
        "autoweave_plugins",
        "multiprocessing.pool",
    ):
        with pytest.raises(ImportError, match=f"may not import '{refused}'") as caught:
            guard.check(refused, g, 0)
        assert "extra_imports" in str(caught.value)


def test_stdlib_and_relative_imports_pass(guard: ImportGuard, tmp_path: Path) -> None:
    # Control: from the plugin's own code, the same absolute import is refused.
    with pytest.raises(ImportError, match="may not import 'socket'"):
        guard.check("socket", plugin_globals(tmp_path), 0)
    # Each of these raises ImportError if refused.
    guard.check("socket", {"__file__": "/usr/lib/python3.11/asyncio/base_events.py"}, 0)
    guard.check("socket", None, 0)
    guard.check("anything", plugin_globals(tmp_path), 1)


def test_a_sibling_folder_is_not_the_plugin(guard: ImportGuard, tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="may not import 'subprocess'"):  # control: the plugin
        guard.check("subprocess", plugin_globals(tmp_path), 0)
    sibling = {"__file__": str(tmp_path) + "-evil/main.py"}
    guard.check("subprocess", sibling, 0)  # not plugin code: not this guard's business


def test_dangerous_modules_are_not_safe_by_default() -> None:
    assert (
        not {"subprocess", "socket", "ssl", "ctypes", "multiprocessing", "signal", "importlib"}
        & SAFE_MODULES
    )


def test_guard_judges_the_real_caller_not_the_globals_it_passes(tmp_path: Path) -> None:
    """Plugin code calling __import__("ctypes", {}) is still plugin code."""
    guard = ImportGuard("demo", str(tmp_path))
    guard.install()
    try:
        code = compile("__import__('ctypes', {})", str(tmp_path / "main.py"), "exec")
        with pytest.raises(ImportError, match="may not import 'ctypes'"):
            exec(code, {"__file__": str(tmp_path / "main.py"), "__name__": "plugin"})
        import json  # this test file is not plugin code

        assert json.dumps(1) == "1"
    finally:
        guard.uninstall()


def test_the_plugins_own_environment_counts_as_its_own_but_never_the_stdlib(
    tmp_path: Path,
) -> None:
    folder, env = tmp_path / "plugin", tmp_path / "env"
    folder.mkdir()
    for package in ("humanize", "ctypes", "autoweave_plugins", "humanize-4.9.dist-info"):
        (env / package).mkdir(parents=True)
    for module in ("six.py", "fast.cpython-311-x86_64-linux-gnu.so", "subprocess.py", "x.pth"):
        (env / module).write_text("")
    guard = ImportGuard("demo", str(folder), environment=[str(env)])
    g = plugin_globals(folder)
    for allowed in ("humanize", "humanize.time", "six", "fast"):
        guard.check(allowed, g, 0)
    for refused in ("ctypes", "subprocess", "autoweave_plugins", "x"):
        with pytest.raises(ImportError, match=f"may not import '{refused}'"):
            guard.check(refused, g, 0)
    # Without the environment, its packages are not the plugin's.
    with pytest.raises(ImportError, match="may not import 'humanize'"):
        ImportGuard("demo", str(folder)).check("humanize", g, 0)
