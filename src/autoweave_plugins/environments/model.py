"""What the builder hands out: a finished environment and where its packages came from.

Plain frozen records, so the loader can keep them in its registry, show them in ``status`` and
pass ``root``/``path`` to the worker spec without importing anything that runs uv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BuilderStats", "Environment", "PackageSource"]


@dataclass(frozen=True, slots=True)
class PackageSource:
    """Where one installed package came from: an index URL or a find-links directory."""

    name: str
    version: str
    source: str | None


@dataclass(frozen=True, slots=True)
class Environment:
    """A finished environment. Grant ``root`` read-only; put ``path`` first on ``sys.path``."""

    key: str
    root: Path
    path: Path
    requirements: tuple[str, ...]
    sources: tuple[PackageSource, ...]
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """For ``status`` and plugin metadata."""
        return {
            "key": self.key,
            "path": str(self.path),
            "requirements": list(self.requirements),
            "packages": [
                {"name": s.name, "version": s.version, "source": s.source} for s in self.sources
            ],
            "size_bytes": self.size_bytes,
        }


@dataclass(slots=True)
class BuilderStats:
    """Counts since the builder was created; ``uv_runs`` counts every uv process started."""

    hits: int = 0
    resolutions: int = 0
    builds: int = 0
    failures: int = 0
    uv_runs: int = 0
