"""The import policy for plugin code: clear errors for what cannot work, not a security boundary.

The default is everything the sandbox lets work: the kernel layers, not this list, decide what
a module can do (``exec("import x", {})`` would skip any list anyway). Refused at import, with
a message that says why, are only the modules whose purpose the sandbox forbids (starting
processes) and whatever the host operator denies. Rules are module prefixes, matched by dotted
component (``multiprocessing`` covers ``multiprocessing.pool``); the most specific rule wins, so
``multiprocessing.dummy``, a thread pool, stays allowed. The host merges its own rules into the
spec (``[plugins.NAME]`` over ``[worker_pool]``, denial over grant at the same place), and they
override the built-in ones here.

Implemented as a wrapper around ``builtins.__import__`` rather than a meta path finder: a
finder is consulted only for modules not yet in ``sys.modules``, and the worker's runtime has
already loaded ``subprocess`` and friends. ``__import__`` sees every import statement together
with the importing module's globals, so it can tell plugin code (a file inside the plugin folder)
from a library importing what it needs, which is always allowed. Modules that resolve inside
the plugin folder are the plugin's own code, vendored libraries at any depth included: they
import whatever the rules say about their name.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

__all__ = ["DEFAULT_RULES", "PROCESS_REFUSAL", "ImportGuard", "decide"]

PROCESS_REFUSAL = (
    "starting processes is not allowed in a plugin (the sandbox's seccomp layer refuses fork "
    "and exec); use threads (threading, concurrent.futures.ThreadPoolExecutor) or asyncio"
)
DEFAULT_RULES: Mapping[str, bool] = {
    "subprocess": False,
    "_posixsubprocess": False,
    "multiprocessing": False,
    "multiprocessing.dummy": True,  # threads behind the multiprocessing API
    "concurrent.futures.process": False,
    "concurrent.futures.ProcessPoolExecutor": False,  # from concurrent.futures import ...
    "pty": False,
}
"""Built-in rules (True: allowed). Everything without a rule is allowed."""

ImportFunction = Callable[..., ModuleType]


def decide(name: str, rules: Mapping[str, bool]) -> tuple[bool, str | None]:
    """(allowed, the rule that decided or None) for the dotted ``name``: longest prefix wins."""
    parts = name.split(".")
    for length in range(len(parts), 0, -1):
        prefix = ".".join(parts[:length])
        if prefix in rules:
            return rules[prefix], prefix
    return True, None


class ImportGuard:
    """Checks each import made by code whose file lies in the plugin folder."""

    def __init__(
        self,
        plugin: str,
        folder: str,
        extra: Iterable[str] = (),
        denied: Iterable[str] = (),
        package: str | None = None,
    ) -> None:
        self.plugin = plugin
        self.folder = os.path.realpath(folder) + os.sep
        self.rules = {**DEFAULT_RULES, **dict.fromkeys(extra, True), **dict.fromkeys(denied, False)}
        self.host_denied = frozenset(denied)
        self.package = package
        self._original: ImportFunction | None = None

    def _is_plugin_code(self, globals_: Mapping[str, Any] | None) -> bool:
        if not globals_:
            return False
        origin = globals_.get("__file__")
        return isinstance(origin, str) and origin.startswith(self.folder)

    def _resolves_inside(self, top: str) -> bool:
        """``top`` is (or would be imported as) a module from the plugin folder."""
        if top == self.package:
            return True
        module = sys.modules.get(top)
        if module is not None:
            origin = getattr(module, "__file__", None)
        else:
            spec = importlib.machinery.PathFinder.find_spec(top, sys.path)
            origin = spec.origin if spec is not None else None
            if spec is not None and origin is None and spec.submodule_search_locations:
                origin = next(iter(spec.submodule_search_locations), None)  # namespace package
        return isinstance(origin, str) and os.path.realpath(origin).startswith(self.folder)

    def _refusal(self, name: str, rule: str) -> ImportError:
        if rule in self.host_denied:
            why = "the host denies it to this plugin"
            fix = f"the host operator can remove {rule!r} from denied_imports"
        else:
            why = PROCESS_REFUSAL
            fix = (
                f"if a library only imports it, the host can allow the import with "
                f"[plugins.{self.plugin}] extra_imports = [{rule!r}]; calls will still fail"
            )
        return ImportError(
            f"plugin {self.plugin!r} may not import {name!r}: {why}. The sandbox's import "
            f"policy refused it; {fix}.",
            name=name,
        )

    def check(
        self,
        name: str,
        globals_: Mapping[str, Any] | None,
        level: int,
        fromlist: Sequence[str] = (),
    ) -> None:
        if level > 0 or not self._is_plugin_code(globals_):
            return  # relative imports stay inside the plugin; libraries import what they need
        names = [name] + [f"{name}.{item}" for item in fromlist or () if isinstance(item, str)]
        for candidate in names:
            allowed, rule = decide(candidate, self.rules)
            if allowed or rule is None:
                continue
            if self._resolves_inside(name.partition(".")[0]):
                return  # the plugin's own (or vendored) module of that name
            raise self._refusal(candidate, rule)

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
            # The caller's own globals, not the ones it passes: __import__("pty", {})
            # must not pass for plugin code.
            self.check(name, sys._getframe(1).f_globals, level, fromlist)
            if globals is not None:
                self.check(name, globals, level, fromlist)
            return original(name, globals, locals, fromlist, level)

        builtins.__import__ = guarded_import  # type: ignore[assignment]

    def uninstall(self) -> None:
        if self._original is not None:
            builtins.__import__ = self._original
            self._original = None
