"""Bounds on a manifest's JSON structure, checked on the text before any object is built.

The exact parse path hands the text to ``json``, which builds every value it reads and recurses
once per nesting level. Both are bounded here first, in time linear in the text:

* at most ``MAX_VALUES`` values (counted as ',' '[' '{' outside strings: the values of a JSON
  text number at most one more than those). A full manifest has about 1,500; a megabyte of
  ``[],`` would otherwise be 350,000 objects;
* at most ``MAX_DEPTH`` nesting levels, the manifest object itself being the first.

Strings are skipped by one regex whose quantifiers are possessive and which accepts a string
that never closes: the engine never gives characters back, so no text makes it retry a string
from a later quote. (The scan this replaces did retry, from every escaped quote, and took an hour
on a megabyte of ``\\"``.) Every scan is a single ``match`` per step from a known position, never
a search that restarts at each index.

The same scanner locates tokens for error positions, ``json`` not reporting some of them.
"""

from __future__ import annotations

import re

__all__ = ["MAX_DEPTH", "MAX_VALUES", "first_outside_strings", "position", "structure_problem"]

MAX_DEPTH = 64
MAX_VALUES = 10_000

# A JSON string, or the rest of the text when it never closes.
_STRING = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?'
# Everything up to and including the MAX_VALUES-th ',' '[' '{' outside strings.
_VALUE_LIMIT = re.compile(rf'(?>(?:[^"\[{{,]++|{_STRING})*+[\[{{,]){{{MAX_VALUES}}}', re.DOTALL)
# Everything up to and including the next bracket outside strings.
_NEXT_BRACKET = re.compile(rf'(?:[^"\[\]{{}}]++|{_STRING})*+[\[\]{{}}]', re.DOTALL)
_STRING_OR_OTHER = re.compile(rf'{_STRING}|[^"]++', re.DOTALL)


def position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``text[index]``, counted in characters as ``json`` does."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _too_deep(text: str) -> int | None:
    """Index of the first bracket nested deeper than MAX_DEPTH, or None.

    None also when the first value closes before that: ``json`` reads no further than its end,
    so nothing after it can make it recurse. Until then each opener counts as a value, so a text
    within MAX_VALUES shows at most 2 * MAX_VALUES brackets first; past that the value bound is
    broken anyway, and the scan stops.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth = index = 0
    for _ in range(2 * MAX_VALUES):
        found = _NEXT_BRACKET.match(text, index)
        if found is None:
            return None
        index = found.end()
        if text[index - 1] in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return index - 1
        else:
            depth -= 1
            if depth <= 0:
                return None
    return None


def structure_problem(text: str) -> tuple[str, int] | None:
    """The structural bound ``text`` breaks, if any: a message and the index it applies at."""
    deep = _too_deep(text)
    if deep is not None:
        return f"nested deeper than {MAX_DEPTH} levels", deep
    if text.count(",") + text.count("[") + text.count("{") >= MAX_VALUES:
        found = _VALUE_LIMIT.match(text)
        if found is not None:
            return (
                f"has more than {MAX_VALUES} values; a manifest needs far fewer",
                found.end() - 1,
            )
    return None


def first_outside_strings(text: str, token: re.Pattern[str]) -> re.Match[str] | None:
    """The first match of ``token`` that starts outside every string.

    Use it only on a text ``json`` has read up to the token: the strings before it then number
    at most twice the values, which ``structure_problem`` bounded.
    """
    index = 0
    while (piece := _STRING_OR_OTHER.match(text, index)) is not None:
        if text[index] != '"':
            hit = token.search(text, index, piece.end())
            if hit is not None:
                return hit
        index = piece.end()
    return None
