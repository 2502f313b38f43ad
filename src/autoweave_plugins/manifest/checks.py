"""The checks every part of a manifest uses: type, bound and unknown-key checks that collect
issues (with their JSON paths) instead of stopping at the first.

Split from ``validate`` so that the section rules there read as rules, not as plumbing.
"""

from __future__ import annotations

import difflib
from typing import Any

from autoweave_plugins.errors import ManifestIssue
from autoweave_plugins.manifest.issues import MAX_ISSUES, json_type, key_path

__all__ = ["MAX_TEXT", "Checks"]

MAX_TEXT = 4096


class Checks:
    """Collects issues; the type and bound checks every section uses."""

    __slots__ = ("issues",)

    def __init__(self) -> None:
        self.issues: list[ManifestIssue] = []

    def fail(self, path: str, message: str) -> None:
        self.issues.append(ManifestIssue(path, message))

    @property
    def full(self) -> bool:
        """Enough issues to report; further ones are only counted, without costly hints."""
        return len(self.issues) >= MAX_ISSUES

    def members(self, value: object, path: str, allowed: frozenset[str]) -> dict[str, Any] | None:
        if type(value) is not dict:
            self.fail(path, f"must be an object, not {json_type(value)}")
            return None
        if not value.keys() <= allowed:
            for key in value:
                if key not in allowed:
                    close = [] if self.full else difflib.get_close_matches(key, allowed, n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    self.fail(
                        key_path(path, key), f"unknown field; {hint}allowed: {', '.join(allowed)}"
                    )
        return value

    def string(self, value: object, path: str, limit: int = MAX_TEXT) -> str | None:
        if type(value) is not str:
            self.fail(path, f"must be a string, not {json_type(value)}")
            return None
        if len(value) > limit:
            self.fail(path, f"must be at most {limit} characters (got {len(value)})")
            return None
        return value

    def integer(self, value: object, path: str, bounds: tuple[int, int]) -> int | None:
        low, high = bounds
        if type(value) is not int:
            self.fail(path, f"must be an integer from {low} to {high}, not {json_type(value)}")
            return None
        if not low <= value <= high:
            self.fail(path, f"must be from {low} to {high} (got {value})")
            return None
        return value

    def array(self, value: object, path: str, limit: int) -> list[Any] | None:
        if type(value) is not list:
            self.fail(path, f"must be an array, not {json_type(value)}")
            return None
        if len(value) > limit:
            self.fail(path, f"must have at most {limit} items (got {len(value)})")
            return None
        return value

    def mapping(self, value: object, path: str) -> dict[str, Any] | None:
        if type(value) is not dict:
            self.fail(path, f"must be an object, not {json_type(value)}")
            return None
        return value
