"""The house's arrows, read from the source: no import loops, and a lean worker side.

Every import statement counts, wherever it is: at the top, inside a function, or under
``TYPE_CHECKING`` (a type named there is a real tie: its objects are handed over at run time).
Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, so those count too. Only the
package root is left out: it is the lazy public façade above everything (PEP 562).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = "autoweave_plugins"

WORKER_SIDE = {"worker", "rpc", "permissions", "sandbox", "sdk", "errors", "ratelimit"}
"""DESIGN §5: the worker imports only rpc, permissions, sandbox and sdk, plus the two leaves
every side shares (the exception tree and the token bucket)."""

KNOWN_LOOPS: set[frozenset[str]] = set()
"""Folder loops tolerated: none. Any loop fails this test."""


def _modules() -> dict[str, Path]:
    modules = {}
    for path in (SRC / PKG).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def _imported(
    module: str, source: str, is_package: bool, modules: dict[str, Path]
) -> Iterable[str]:
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                name = f"{base}.{alias.name}"
                yield name if name in modules else base


def _graph(sources: dict[str, tuple[str, bool]] | None = None) -> dict[str, set[str]]:
    """Module → the modules it imports; ``sources`` (name → text, is_package) replaces src/."""
    modules = _modules() if sources is None else {name: Path() for name in sources}
    if sources is None:
        sources = {m: (p.read_text(), p.name == "__init__.py") for m, p in modules.items()}
    edges: dict[str, set[str]] = defaultdict(set)
    for module, (source, is_package) in sources.items():
        if module == PKG:
            continue
        for name in _imported(module, source, is_package, modules):
            if not name.startswith(PKG):
                continue
            target = _resolve(name, modules)
            # The parent packages run first, unless they are the importer's own (already running).
            while target not in ("", PKG) and not f"{module}.".startswith(f"{target}."):
                edges[module].add(target)
                target = target.rpartition(".")[0]
    return edges


def _folder(module: str) -> str:
    return module.split(".")[1]


def _loops(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def _folder_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    folders: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        folders[_folder(source)].update(
            _folder(t) for t in targets if _folder(t) != _folder(source)
        )
    return folders


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph()


WALKER_CONTROL = {
    f"{PKG}.low": ("", False),
    f"{PKG}.deep": ("", True),
    f"{PKG}.deep.leaf": ("", False),
    f"{PKG}.typed": ("", False),
    f"{PKG}.late": ("", False),
    f"{PKG}.top": (
        "from typing import TYPE_CHECKING\n"
        "from . import low\n"
        "from autoweave_plugins.deep.leaf import thing\n"
        "if TYPE_CHECKING:\n"
        "    from autoweave_plugins.typed import Typed\n"
        "def later():\n"
        "    import autoweave_plugins.late\n",
        False,
    ),
}


def test_the_walker_sees_imports_of_every_kind() -> None:
    """Control: relative, TYPE_CHECKING and function-level imports, and parent packages."""
    seen = _graph(WALKER_CONTROL)[f"{PKG}.top"]
    assert seen == {f"{PKG}.{m}" for m in ("low", "deep", "deep.leaf", "typed", "late")}
    loops = _loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert loops == [frozenset({"a", "b", "c"})]


def test_no_module_imports_in_a_loop(graph: dict[str, set[str]]) -> None:
    loops = [loop for loop in _loops(graph) if frozenset(map(_folder, loop)) not in KNOWN_LOOPS]
    assert loops == []


def test_no_folder_imports_in_a_loop(graph: dict[str, set[str]]) -> None:
    loops = _loops(_folder_graph(graph))
    assert set(loops) <= KNOWN_LOOPS, loops


def test_the_worker_side_imports_nothing_of_the_host(graph: dict[str, set[str]]) -> None:
    reached = {_folder(m) for m in _closure(graph, f"{PKG}.worker.__main__")}
    assert reached <= WORKER_SIDE, reached - WORKER_SIDE


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("rpc", {"rpc", "errors"}),
        ("ratelimit", {"ratelimit"}),
        ("channel", {"channel", "rpc", "errors"}),
        ("output", {"output", "ratelimit", "rpc", "errors"}),
    ],
)
def test_the_boundary_modules_stay_low(
    graph: dict[str, set[str]], module: str, allowed: set[str]
) -> None:
    """The frames, the channel and the limits import nothing above them."""
    reached = {_folder(m) for m in _closure(graph, f"{PKG}.{module}")}
    assert reached <= allowed, reached - allowed
