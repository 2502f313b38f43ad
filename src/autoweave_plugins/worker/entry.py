"""Importing a plugin's entry module as a module of a package of its own.

The entry's folder is the package ``autoweave_plugin_<name>`` (its ``__init__.py`` runs first if
it has one) and the entry is a module in it, so:

- relative imports work in the entry and in the modules beside it (``from . import helpers``);
- classes defined in the entry pickle and unpickle: their ``__module__`` is a real, importable
  module name in ``sys.modules``;
- absolute imports of the plugin's own modules (``import helpers``) keep working, with the
  entry's folder and the plugin's folder first on ``sys.path``; vendored packages are found
  wherever the plugin puts them on ``sys.path``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from types import ModuleType

from autoweave_plugins.rpc import WorkerSpec

__all__ = ["import_entry", "package_name"]


def package_name(plugin: str) -> str:
    """The package name of a plugin's entry folder (plugin names are [a-z0-9-])."""
    return "autoweave_plugin_" + re.sub(r"\W", "_", plugin)


def _load(name: str, path: str, search: list[str] | None = None) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=search)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}", name=name, path=path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _package(name: str, folder: str) -> ModuleType:
    init = os.path.join(folder, "__init__.py")
    if os.path.isfile(init):
        return _load(name, init, [folder])
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [folder]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    return module


def import_entry(spec: WorkerSpec, install_guard: Callable[[str], None]) -> ModuleType:
    """Import ``spec.entry``; ``install_guard(package)`` runs just before plugin code does."""
    entry_path = os.path.join(spec.folder, spec.entry)
    entry_folder = os.path.dirname(entry_path)
    sys.path.insert(0, entry_folder)
    if entry_folder != spec.folder:
        sys.path.insert(0, spec.folder)
    # Its own environment right after its own folders: its pins win over the runtime's
    # packages. Plain entries, so no .pth file in it runs.
    own = 1 if entry_folder == spec.folder else 2
    sys.path[own:own] = spec.environment_paths
    package = package_name(spec.plugin)
    install_guard(package)
    parent = _package(package, entry_folder)
    stem = os.path.splitext(os.path.basename(entry_path))[0]
    if stem == "__init__":
        return parent
    short = re.sub(r"\W", "_", stem)
    module = _load(f"{package}.{short}", entry_path)
    setattr(parent, short, module)
    return module
