"""Reading what uv writes: the hashed lock, and its error messages.

The lock is the output of ``uv pip compile --generate-hashes --emit-index-annotation``::

    tinypkg==2.0 \\
        --hash=sha256:ff1a...
        # via withdep
        # from https://pypi.org/simple

Its pins and hashes decide what is installed, so they (and not the comments, which carry paths
and annotations) are what the environment key hashes. The ``# from`` annotation is where uv
found each package: the index URL or the find-links directory, recorded as the package's source.

uv's errors are prose (``Because only tinypkg<=2.0 is available and you require tinypkg>=3,
...``). ``culprits`` picks out the requirements the message names, so a failed plugin says
which of its requirements could not be met.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from autoweave_plugins.environments.keys import redact_url

__all__ = [
    "MAX_DETAIL",
    "LockError",
    "LockedPackage",
    "canonical_lock",
    "culprits",
    "error_detail",
    "parse_lock",
]

MAX_DETAIL = 4000
"""Characters of uv's message kept in an error: enough for its explanation, bounded."""

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_BLAMED = (
    re.compile(rf"you require ({_NAME})"),
    re.compile(rf"Because ({_NAME}) was not found"),
    re.compile(rf"Because (?:all versions of |only )?({_NAME})[^\w-]"),
    re.compile(rf"No solution found when resolving dependencies for ({_NAME})"),
    re.compile(rf"Failed to (?:download|fetch|build|prepare distributions?)[:\s]+`?({_NAME})"),
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class LockError(ValueError):
    """The lock text is not what ``uv pip compile --generate-hashes`` writes."""


@dataclass(frozen=True, slots=True)
class LockedPackage:
    """One pinned package of a lock: its hashes and where uv found it."""

    name: str
    version: str
    hashes: tuple[str, ...]
    source: str | None


def parse_lock(text: str) -> tuple[LockedPackage, ...]:
    """Every package of the lock; ``LockError`` when a pin is unhashed or malformed."""
    packages: list[LockedPackage] = []
    pin: str | None = None
    hashes: list[str] = []
    source: str | None = None

    def finish() -> None:
        if pin is None:
            return
        try:
            requirement = Requirement(pin)
        except InvalidRequirement as exc:
            raise LockError(f"malformed pin {pin[:120]!r}: {exc}") from None
        versions = [s.version for s in requirement.specifier if s.operator == "=="]
        if len(versions) != 1 or not hashes:
            raise LockError(f"{pin[:120]!r} is not an exact pin with hashes")
        packages.append(
            LockedPackage(canonicalize_name(requirement.name), versions[0], tuple(hashes), source)
        )

    for raw in text.splitlines():
        line = raw.strip().removesuffix("\\").strip()
        if not line:
            continue
        if line.startswith("--hash="):
            hashes.append(line.removeprefix("--hash="))
        elif line.startswith("# from "):
            source = redact_url(line.removeprefix("# from ").strip())
        elif line.startswith("#"):
            continue
        elif raw[:1].isspace() or line.startswith("-"):
            raise LockError(f"unexpected line in lock: {line[:120]!r}")
        else:
            finish()
            pin, hashes, source = line, [], None
    finish()
    return tuple(packages)


def canonical_lock(packages: tuple[LockedPackage, ...]) -> str:
    """Pins and sorted hashes, one package a line, sorted: what the environment key hashes."""
    return "\n".join(
        f"{p.name}=={p.version} {' '.join(sorted(p.hashes))}"
        for p in sorted(packages, key=lambda p: p.name)
    )


def error_detail(stderr: str) -> str:
    """uv's message from its first ``error:`` line on (all of it when there is none), bounded."""
    text = _ANSI.sub("", stderr).strip()
    start = text.find("error:")
    if start > 0:
        text = text[start:]
    if len(text) > MAX_DETAIL:
        text = text[: MAX_DETAIL - 20] + "\n[... truncated ...]"
    return text


def culprits(stderr: str, requirements: tuple[str, ...]) -> tuple[str, ...]:
    """The requirements (from ``requirements``) that uv's message blames, in their order."""
    text = _ANSI.sub("", stderr)
    blamed = {canonicalize_name(m) for pattern in _BLAMED for m in pattern.findall(text)}
    by_name: list[tuple[str, str]] = []
    for requirement in requirements:
        try:
            by_name.append((canonicalize_name(Requirement(requirement).name), requirement))
        except InvalidRequirement:
            continue
    named = [(name, r) for name, r in by_name if name in blamed]
    if named:
        # Two requirements on one package: keep the one uv quotes, when it quotes one.
        quoted = {name for name, r in named if r in text}
        return tuple(r for name, r in named if name not in quoted or r in text)
    # uv named only transitive packages: blame the requirements whose names it mentions.
    lowered = text.lower()
    return tuple(
        r
        for name, r in by_name
        if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", lowered.replace("_", "-"))
    )
