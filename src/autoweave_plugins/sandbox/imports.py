"""The import allow-list for plugin code: policy and clear errors, not a security boundary.

Implemented as a wrapper around ``builtins.__import__`` rather than a meta path finder: a
finder is consulted only for modules not yet in ``sys.modules``, and the worker's runtime has
already loaded ``socket``, ``ctypes`` and friends, so a finder would let ``import socket``
through silently. ``__import__`` sees every import statement together with the importing
module's globals, so it can tell plugin code (a file inside the plugin folder) from the stdlib
importing its own helpers, which is always allowed. The kernel layers are the boundary; this
layer turns "would be blocked anyway" into an ImportError that says what to do.
"""

from __future__ import annotations

import builtins
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

__all__ = ["SAFE_MODULES", "ImportGuard"]

SAFE_MODULES = frozenset(
    [
        "__future__",
        "abc",
        "array",
        "asyncio",
        "base64",
        "binascii",
        "bisect",
        "calendar",
        "cmath",
        "codecs",
        "collections",
        "colorsys",
        "contextlib",
        "contextvars",
        "copy",
        "csv",
        "dataclasses",
        "datetime",
        "decimal",
        "difflib",
        "enum",
        "errno",
        "fnmatch",
        "fractions",
        "functools",
        "glob",
        "graphlib",
        "gzip",
        "hashlib",
        "heapq",
        "hmac",
        "html",
        "http",
        "io",
        "ipaddress",
        "itertools",
        "json",
        "keyword",
        "logging",
        "lzma",
        "math",
        "mimetypes",
        "numbers",
        "operator",
        "os",
        "pathlib",
        "pickle",
        "posixpath",
        "pprint",
        "queue",
        "random",
        "re",
        "reprlib",
        "secrets",
        "shlex",
        "statistics",
        "string",
        "stringprep",
        "struct",
        "sys",
        "textwrap",
        "threading",
        "time",
        "timeit",
        "tomllib",
        "traceback",
        "types",
        "typing",
        "unicodedata",
        "urllib",
        "uuid",
        "warnings",
        "weakref",
        "xml",
        "zipfile",
        "zlib",
        "zoneinfo",
        "autoweave",
    ]
)
"""Modules plugin code may import by default. Notably absent: subprocess, socket, ssl,
ctypes, multiprocessing, signal, pty, fcntl, resource, mmap, importlib (which would bypass
this check) and the host package itself."""

ImportFunction = Callable[..., ModuleType]


def _importable_names(path: str) -> Iterable[str]:
    """Top-level names importable from an environment directory (packages, modules)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        name, _, ext = entry.name.partition(".")
        package = entry.is_dir() and not ext
        if name.isidentifier() and (package or ext.endswith(("py", "so", "pyc"))):
            yield name


class ImportGuard:
    """Checks each import made by code whose file lies in the plugin folder."""

    def __init__(
        self,
        plugin: str,
        folder: str,
        extra: Iterable[str] = (),
        *,
        environment: Iterable[str] = (),
    ) -> None:
        self.plugin = plugin
        self.folder = os.path.realpath(folder) + os.sep
        self.allowed = SAFE_MODULES | frozenset(extra)
        # What the plugin's own environment installs counts as its own (no host grant), except
        # the stdlib's names and the host's: a wheel cannot make `import ctypes` allowed.
        installed = {name for path in environment for name in _importable_names(path)}
        installed -= sys.stdlib_module_names | {"autoweave_plugins"}
        self.own = frozenset(self._own_top_level_names()) | installed
        self._original: ImportFunction | None = None

    def _own_top_level_names(self) -> Iterable[str]:
        for entry in os.scandir(self.folder):
            name, ext = os.path.splitext(entry.name)
            if entry.is_dir() or ext == ".py":
                yield name

    def _is_plugin_code(self, globals_: Mapping[str, Any] | None) -> bool:
        if not globals_:
            return False
        origin = globals_.get("__file__")
        return isinstance(origin, str) and origin.startswith(self.folder)

    def check(self, name: str, globals_: Mapping[str, Any] | None, level: int) -> None:
        if level > 0 or not self._is_plugin_code(globals_):
            return  # relative imports stay inside the plugin; the stdlib may import freely
        top = name.partition(".")[0]
        if top in self.allowed or top in self.own:
            return
        raise ImportError(
            f"plugin {self.plugin!r} may not import {name!r}: it is not on the import allow-list. "
            f"The host can grant it with the worker setting extra_imports=[{top!r}].",
            name=name,
        )

    def install(self) -> None:
        original: ImportFunction = builtins.__import__
        self._original = original

        def guarded_import(
            name: str,
            globals: Mapping[str, Any] | None = None,
            locals: Mapping[str, Any] | None = None,
            fromlist: Sequence[str] = (),
            level: int = 0,
        ) -> ModuleType:
            # The caller's own globals, not the ones it passes: __import__("ctypes", {})
            # must not pass for stdlib code.
            self.check(name, sys._getframe(1).f_globals, level)
            if globals is not None:
                self.check(name, globals, level)
            return original(name, globals, locals, fromlist, level)

        builtins.__import__ = guarded_import  # type: ignore[assignment]

    def uninstall(self) -> None:
        if self._original is not None:
            builtins.__import__ = self._original
            self._original = None
