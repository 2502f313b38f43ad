"""Plugin-to-plugin dependencies: a manifest's ``dependencies`` map, and whether it is met.

``{"dependencies": {"storage": "^1.2.0", "auth": ">=2.0,<3"}}`` says this plugin loads only
when a plugin named ``storage`` with a version in ``^1.2.0`` is present, and one named ``auth``
in ``>=2.0,<3``. A range is read with ``packaging.specifiers``, so PEP 440 is the rule for
comparing versions (a semver pre-release such as ``1.0.0-beta.1`` reads as ``1.0.0b1``). The
npm shorthands that manifests written for the original system use are accepted and turned into
PEP 440 specifiers first:

=================  ==========================  ==============================================
written            means                       as PEP 440
=================  ==========================  ==============================================
``>=1.2,<2``       PEP 440, commas or spaces   ``>=1.2,<2``
``1.2.0``          exactly                     ``==1.2.0``
``1.2.*``, ``1.x`` that prefix                 ``==1.2.*``, ``==1.*``
``^1.2.0``         same left-most non-zero     ``>=1.2.0,<2`` (``^0.2.3``: ``>=0.2.3,<0.3``)
``~1.2.0``         same minor                  ``>=1.2.0,<1.3``
``*`` or ``x``     any version                 (no specifier)
``A || B``         either range                one ``SpecifierSet`` per alternative
=================  ==========================  ==============================================

``dependency_problem`` is what the host checks before a plugin loads: every dependency present
with a version in range, the same for their own dependencies, and no cycle. Pure logic: no I/O,
nothing from the manager side.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from autoweave_plugins.manifest.model import Manifest

__all__ = [
    "DependencyProblem",
    "VersionRange",
    "dependency_problem",
    "parse_range",
    "range_problem",
]

MAX_ALTERNATIVES = 8
# One clause: an optional operator, a version, then a separator (comma or space) or the end.
_CLAUSE = re.compile(
    r"[\s,]*(===|==|!=|~=|<=|>=|<|>|=|\^|~)?\s*([0-9A-Za-z.*+!-]+)(?=[\s,]|\Z)[\s,]*"
)
_WILDCARD = frozenset({"*", "x", "X"})


@dataclass(frozen=True, slots=True)
class VersionRange:
    """A parsed range: a version is in it when any alternative contains it."""

    text: str
    alternatives: tuple[SpecifierSet, ...]

    def contains(self, version: str) -> bool:
        """Whether ``version`` is in range; ``ValueError`` when it is not a PEP 440 version."""
        try:
            parsed = Version(version)
        except InvalidVersion:
            raise ValueError(f"{version!r} is not a PEP 440 version") from None
        return any(spec.contains(parsed) for spec in self.alternatives)

    def __str__(self) -> str:
        return " || ".join(str(spec) or "*" for spec in self.alternatives)


def _release(text: str) -> list[int]:
    """The numeric components of a version as written (``1.2`` -> [1, 2]), for ^ and ~."""
    written = text.partition("+")[0].partition("-")[0].count(".") + 1
    return list(Version(text).release[:written])


def _bumped(parts: list[int], index: int) -> str:
    upper = [*parts[:index], parts[index] + 1]
    return ".".join(map(str, upper))


def _clause(operator: str | None, version: str) -> list[str]:
    """One clause as PEP 440 specifiers (none for 'any version')."""
    if operator in (None, "=") and version in _WILDCARD:
        return []
    pieces = version.split(".")
    if operator in (None, "=") and pieces[-1] in _WILDCARD:
        if any(p in _WILDCARD for p in pieces[:-1]) or len(pieces) < 2:
            raise ValueError(f"{version!r}: a wildcard may only replace the last component")
        return [f"=={'.'.join(pieces[:-1])}.*"]
    if operator in ("^", "~"):
        try:
            parts = _release(version)
        except InvalidVersion:
            raise ValueError(f"{operator}{version}: {version!r} is not a version") from None
        if operator == "~":
            index = min(1, len(parts) - 1)
        else:
            nonzero = [i for i, part in enumerate(parts) if part]
            index = nonzero[0] if nonzero else len(parts) - 1
        return [f">={version}", f"<{_bumped(parts, index)}"]
    if operator in (None, "="):
        try:
            Version(version)
        except InvalidVersion:
            raise ValueError(f"{version!r} is not a version") from None
        return [f"=={version}"]
    return [f"{operator}{version}"]


@functools.lru_cache(maxsize=1024)
def parse_range(text: str) -> VersionRange:
    """The range ``text`` means; ``ValueError`` saying why when it is not one."""
    alternatives: list[SpecifierSet] = []
    parts = text.split("||")
    if len(parts) > MAX_ALTERNATIVES:
        raise ValueError(f"at most {MAX_ALTERNATIVES} alternatives joined by '||'")
    for part in parts:
        if not part.strip():
            raise ValueError("an empty alternative; write '*' for any version")
        if " - " in part:
            raise ValueError("hyphen ranges are not supported; write '>=1.0.0,<=2.0.0'")
        specifiers: list[str] = []
        position, end = 0, len(part)
        while position < end:
            match = _CLAUSE.match(part, position)
            if match is None:
                raise ValueError(f"cannot read {part[position:].strip()[:40]!r} as a version range")
            specifiers += _clause(match.group(1), match.group(2))
            position = match.end()
        try:
            alternatives.append(SpecifierSet(",".join(specifiers)))
        except InvalidSpecifier as exc:
            raise ValueError(str(exc)) from None
    return VersionRange(text, tuple(alternatives))


def range_problem(text: str) -> str | None:
    """Why ``text`` is not a version range, or None when it is."""
    try:
        parse_range(text)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class DependencyProblem:
    """Why a plugin cannot load: a dependency missing, out of range, unloadable, or a cycle."""

    message: str
    dependency: str
    """The plugin named in the problem (a missing or mismatched one, or one in the cycle)."""
    cycle: tuple[str, ...] = ()
    """The plugins of the cycle, each once, in dependency order."""


def _cycle(name: str, manifests: Mapping[str, Manifest]) -> tuple[str, ...] | None:
    """A cycle among the plugins ``name`` reaches through its dependencies, if there is one."""
    graph: dict[str, list[str]] = {}
    pending = [name]
    while pending:
        node = pending.pop()
        if node in graph:
            continue
        edges = [d for d in manifests[node].dependencies if d in manifests]
        graph[node] = edges
        pending.extend(edges)
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        found: list[str] = exc.args[1]
        return tuple(found)
    return None


def dependency_problem(name: str, manifests: Mapping[str, Manifest]) -> DependencyProblem | None:
    """Why plugin ``name`` may not load given the plugins present (``manifests``), or None.

    Every plugin it depends on, directly or through others, must be present with a version in
    its range, and none of them may depend on itself through the others.
    """
    if not manifests[name].dependencies:
        return None
    cycle = _cycle(name, manifests)
    if cycle is not None:
        shown = " -> ".join(cycle)  # a closed path: the first plugin is also the last
        where = "it is part of" if name in cycle else "it depends on"
        return DependencyProblem(f"{where} a dependency cycle: {shown}", cycle[0], cycle[:-1])
    # Breadth first, so the problem reported is the one nearest to the plugin.
    parents: dict[str, str | None] = {name: None}
    queue = deque([name])
    while queue:
        node = queue.popleft()
        for dependency, text in manifests[node].dependencies.items():
            problem = _edge_problem(dependency, text, manifests)
            if problem is not None:
                chain = []
                step: str | None = node
                while step is not None and step != name:
                    chain.append(step)
                    step = parents[step]
                via = "".join(f"needs {n!r}, which " for n in reversed(chain))
                return DependencyProblem(via + problem, dependency)
            if dependency not in parents:
                parents[dependency] = node
                queue.append(dependency)
    return None


def _edge_problem(dependency: str, text: str, manifests: Mapping[str, Manifest]) -> str | None:
    present = manifests.get(dependency)
    if present is None:
        return f"requires plugin {dependency!r} {text}, which is not present"
    try:
        wanted = parse_range(text)
        if wanted.contains(present.version):
            return None
    except ValueError as exc:
        return f"requires plugin {dependency!r} {text}, which cannot be checked: {exc}"
    meaning = f" ({wanted})" if str(wanted) != text else ""
    return (
        f"requires plugin {dependency!r} {text}{meaning}, "
        f"but {dependency!r} is version {present.version}"
    )
