"""How an issue shows what it is about: JSON paths and values, printable and bounded.

A key or value can hold anything JSON can spell: a lone surrogate (``"\\ud800"``), control
characters, a megabyte of text. Issues go to terminals, logs, JSON output and the manifest
cache, so keys are escaped and cut short in paths, values are shown through a cut ``repr``, and
a document reports at most ``MAX_ISSUES`` issues.
"""

from __future__ import annotations

import re

__all__ = ["MAX_ISSUES", "MAX_KEY_SHOWN", "json_type", "key_path", "printable", "shown"]

MAX_ISSUES = 100
MAX_KEY_SHOWN = 64

_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")


def printable(text: str) -> str:
    """``text`` with each unprintable character (controls, lone surrogates) escaped as Python
    escapes it, so it can go to any terminal, log or UTF-8 stream."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def key_path(parent: str, key: str) -> str:
    """JSON path of ``key`` under ``parent``: dotted when plain, else bracketed, escaped, and cut
    to MAX_KEY_SHOWN characters (marked '…')."""
    if len(key) <= MAX_KEY_SHOWN and _PLAIN_KEY.match(key):
        return f"{parent}.{key}"
    cut = key if len(key) <= MAX_KEY_SHOWN else key[:MAX_KEY_SHOWN] + "…"
    escaped = printable(cut.replace("\\", "\\\\").replace("'", "\\'"))
    return f"{parent}['{escaped}']"


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages like 'must be a string, not null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def shown(value: object) -> str:
    """A value as a message quotes it: its ``repr`` (printable by construction), cut to 80."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
