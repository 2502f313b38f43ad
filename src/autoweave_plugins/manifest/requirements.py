"""PEP 508 requirement strings, as a manifest's ``requirements`` lists them.

``packaging`` is the reference parser, so what passes here is what pip and uv understand. On top
of PEP 508 this refuses what would let a manifest steer the host's installer rather than name a
package:

* direct URL references (``name @ https://...``): packages come only from the indexes the host
  configured, never from an address a plugin chose;
* anything outside printable ASCII, and ``#``: the strings are written one per line into a
  requirements file for uv, where a newline would start a new option line (``--index-url ...``)
  and `` #`` a comment. PEP 508 names, versions and markers never need either.

The canonical form (normalised name, sorted extras, specifiers as ``packaging`` orders them)
makes ``["Humanize >= 4.9"]`` and ``["humanize>=4.9"]`` the same requirement set, which is what
per-plugin environments are cached by. Pure logic: no I/O, no imports from the manager side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

__all__ = [
    "MAX_REQUIREMENTS",
    "MAX_REQUIREMENT_LENGTH",
    "canonical_requirement",
    "canonical_requirements",
    "parse_requirement",
    "requirement_problem",
]

MAX_REQUIREMENTS = 128
MAX_REQUIREMENT_LENGTH = 512
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*\Z")


def _parse(text: str) -> tuple[Requirement | None, str | None]:
    if len(text) > MAX_REQUIREMENT_LENGTH:
        return None, f"must be at most {MAX_REQUIREMENT_LENGTH} characters (got {len(text)})"
    if not _PRINTABLE_ASCII.match(text):
        return None, "must be printable ASCII, without newlines or control characters"
    if "#" in text:
        return None, "must not contain '#': a requirement string carries no comment"
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        # packaging's message is the reason, then the text and a caret: keep the reason and
        # turn the caret into a column.
        lines = str(exc).splitlines()
        reason = lines[0] if lines else "malformed"
        column = lines[2].find("^") - 4 if len(lines) >= 3 else -1
        where = f" at column {column + 1}" if column >= 0 else ""
        return None, f"is not a PEP 508 requirement: {reason}{where}; e.g. 'humanize>=4.9'"
    if requirement.url is not None:
        return None, (
            "must not be a direct URL reference ('name @ url'): packages come only from the "
            "host's configured indexes"
        )
    return requirement, None


def requirement_problem(text: str) -> str | None:
    """Why ``text`` is not an acceptable requirement, or None when it is."""
    return _parse(text)[1]


def parse_requirement(text: str) -> Requirement:
    """The parsed requirement; ``ValueError`` saying why when it is not acceptable."""
    requirement, problem = _parse(text)
    if requirement is None:
        raise ValueError(f"requirement {text[:80]!r} {problem}")
    return requirement


def canonical_requirement(requirement: Requirement) -> str:
    """One spelling per meaning: normalised name, sorted normalised extras, ordered specifiers."""
    text: str = canonicalize_name(requirement.name)
    if requirement.extras:
        text += "[" + ",".join(sorted({canonicalize_name(e) for e in requirement.extras})) + "]"
    text += str(requirement.specifier)
    if requirement.marker is not None:
        text += f"; {requirement.marker}"
    return text


def canonical_requirements(texts: Iterable[str]) -> tuple[str, ...]:
    """The sorted, de-duplicated canonical set; ``ValueError`` naming the first bad string."""
    return tuple(sorted({canonical_requirement(parse_requirement(t)) for t in texts}))
