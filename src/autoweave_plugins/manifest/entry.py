"""What a manifest's hooks name, checked against its entry module without running it.

``validate`` uses this so that a hook naming a function the entry does not define, or an entry
that does not parse, is reported before the host ever starts a worker. The entry is parsed
with ``ast``, never imported: the host does not run plugin code. Names bound at module level
count (``def``, ``class``, assignments, imports, also inside module-level ``if``/``try``
blocks). A module that can define names the parser cannot see (``from x import *``, a
module-level ``__getattr__``) is not judged.
"""

from __future__ import annotations

import ast
import difflib
import os
from collections.abc import Iterable

from autoweave_plugins.errors import ManifestIssue
from autoweave_plugins.manifest.model import Manifest

__all__ = ["MAX_ENTRY_BYTES", "check_entry"]

MAX_ENTRY_BYTES = 4 << 20
"""An entry module larger than this is not parsed (nor judged)."""


def _key(hook: str) -> str:
    return f"$.hooks.{hook}"


def _bound_names(body: Iterable[ast.stmt], names: set[str]) -> bool:
    """Add the names ``body`` binds at module level; False if it may bind names unseen."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            if node.name == "__getattr__":
                return False
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return False
                names.add(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(
            node, ast.If | ast.For | ast.AsyncFor | ast.While | ast.With | ast.AsyncWith
        ):
            if isinstance(node, ast.For | ast.AsyncFor):
                names.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
            blocks = [node.body, getattr(node, "orelse", [])]
            if not all(_bound_names(block, names) for block in blocks):
                return False
        elif isinstance(node, ast.Try | ast.TryStar):
            blocks = [node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)]
            if not all(_bound_names(block, names) for block in blocks):
                return False
    return True


def check_entry(folder: str, manifest: Manifest) -> tuple[ManifestIssue, ...]:
    """Issues with the entry module of a valid manifest: unreadable, not valid Python, or a
    hook naming a function it does not define (with "did you mean")."""
    path = os.path.join(folder, manifest.entry)
    try:
        with open(path, "rb") as handle:
            source = handle.read(MAX_ENTRY_BYTES + 1)
    except OSError as exc:
        return (ManifestIssue("$.entry", f"cannot read {manifest.entry}: {exc.strerror}"),)
    if len(source) > MAX_ENTRY_BYTES:
        return ()
    try:
        tree = ast.parse(source, filename=manifest.entry)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" if exc.lineno else "somewhere"
        return (ManifestIssue("$.entry", f"{manifest.entry} {where}: SyntaxError: {exc.msg}"),)
    except ValueError as exc:  # NUL bytes
        return (ManifestIssue("$.entry", f"{manifest.entry} is not Python source: {exc}"),)
    names: set[str] = set()
    if not _bound_names(tree.body, names):
        return ()
    functions = sorted(
        n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    )
    issues = []
    for hook, target in manifest.hooks.items():
        if target in names:
            continue
        close = difflib.get_close_matches(target, functions, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        defined = ", ".join(functions[:10]) or "none"
        issues.append(
            ManifestIssue(
                _key(hook),
                f"names {target!r}, which {manifest.entry} does not define{hint} "
                f"(functions defined: {defined})",
            )
        )
    return tuple(issues)
