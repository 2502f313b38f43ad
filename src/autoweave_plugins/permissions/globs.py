"""The path glob of an outbound URL pattern, matched in time linear in the URL.

A glob has one metacharacter, ``*`` (any run of characters, '/' and '?' included); everything
else, '?' among it, is literal (DESIGN §4). The broker matches plugin-chosen URLs on the host's
event loop, so a backtracking regex is not an option: ``*a*a*a*a*a*b`` against a 110-character
path took seconds with ``re`` and grows as n^k.

Matching is greedy instead: the text must start with the part before the first star and end
with the part after the last; each part in between is taken at its leftmost occurrence after
the previous one. For star-only globs leftmost is always safe (if a later occurrence of a part
leads to a match, the leftmost does too, since it leaves more text for the parts after it), so
one left-to-right pass of ``str.find`` decides, and the cost is O(len(text) + len(glob)).
"""

from __future__ import annotations

__all__ = ["MAX_GLOB_STARS", "glob_matches", "split_glob"]

MAX_GLOB_STARS = 8
"""Stars allowed in one path glob. Matching is linear whatever the count; the bound keeps
patterns readable and is published in the manifest schema."""


def split_glob(literal: str) -> tuple[str, ...]:
    """The literal parts around each ``*``: ``'/v1/*/x*'`` gives ``('/v1/', '/x', '')``."""
    return tuple(literal.split("*"))


def glob_matches(parts: tuple[str, ...], text: str) -> bool:
    """Does ``text`` match, in full, the glob whose parts ``split_glob`` returned?"""
    first = parts[0]
    if len(parts) == 1:
        return text == first
    last = parts[-1]
    end = len(text) - len(last)
    if end < len(first) or not text.startswith(first) or not text.endswith(last):
        return False
    position = len(first)
    for part in parts[1:-1]:
        found = text.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True
