"""Why a plugin's environment could not be built. The tree (all under ``AutoweaveError``)::

    EnvironmentBuildError          building an environment failed; nothing was left behind
    ├── InvalidRequirements        a requirement string is refused before uv runs (ValueError)
    ├── ResolutionFailed           uv found no solution: ``culprits`` names the requirements
    ├── InstallFailed              resolved, but downloading, hash checking or installing failed
    ├── BuildTimeout               a uv step overran ``build_timeout``; its processes were killed
    └── EnvironmentTooLarge        the installed tree exceeds ``max_size_mb``; it was deleted

Every error carries ``requirements`` (the canonical set being built) and ``detail``, uv's own
message cut to a bounded size, so the loader can put the plugin in ``failed`` with a message a
person can act on. They live here rather than in ``autoweave_plugins.errors`` so the subsystem
stays self-contained; ``autoweave_plugins.environments`` re-exports them.
"""

from __future__ import annotations

from autoweave_plugins.errors import AutoweaveError

__all__ = [
    "BuildTimeout",
    "EnvironmentBuildError",
    "EnvironmentTooLarge",
    "InstallFailed",
    "InvalidRequirements",
    "ResolutionFailed",
]


class EnvironmentBuildError(AutoweaveError):
    """A plugin environment could not be built. ``requirements`` is the set, ``detail`` why."""

    def __init__(self, message: str, requirements: tuple[str, ...] = (), detail: str = "") -> None:
        shown = ", ".join(requirements[:8]) + (", ..." if len(requirements) > 8 else "")
        head = f"environment [{shown}]: {message}" if requirements else message
        super().__init__(head + (f"\n{detail}" if detail else ""))
        self.message = message
        self.requirements = requirements
        self.detail = detail


class InvalidRequirements(EnvironmentBuildError, ValueError):
    """A requirement string is not an acceptable PEP 508 requirement; uv was never started."""


class ResolutionFailed(EnvironmentBuildError):
    """No set of packages satisfies the requirements. ``culprits`` are the ones uv named."""

    def __init__(
        self,
        message: str,
        requirements: tuple[str, ...],
        detail: str,
        culprits: tuple[str, ...],
    ) -> None:
        super().__init__(message, requirements, detail)
        self.culprits = culprits


class InstallFailed(EnvironmentBuildError):
    """The lock was made, but installing it (download, hash check, bytecode) failed."""


class BuildTimeout(EnvironmentBuildError):
    """A uv step ran longer than ``environments.build_timeout``; its process group was killed."""


class EnvironmentTooLarge(EnvironmentBuildError):
    """The installed environment is bigger than ``environments.max_size_mb``; it was deleted."""

    def __init__(self, message: str, requirements: tuple[str, ...], size_bytes: int) -> None:
        super().__init__(message, requirements)
        self.size_bytes = size_bytes
