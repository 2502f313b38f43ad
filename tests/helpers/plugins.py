"""Writing plugin folders: one manifest and one entry file, the shape every test starts from.

Pure standard library (no pytest, nothing from the host package), so benchmarks use it too.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_CODE", "write_plugin_folder"]

DEFAULT_CODE = "def initialize():\n    return 'ok'\n"


def write_plugin_folder(
    root: Path, name: str, code: str = DEFAULT_CODE, *, folder: str | None = None, **manifest: Any
) -> Path:
    """Create ``root/<folder or name>`` holding ``autoweave.plugin.json`` and its entry file.

    The manifest is ``name``, version 1.0.0 and entry ``main.py``, overridden and extended by
    ``manifest``. ``code`` is dedented, so tests may indent it with the code around it. Writing
    again over an existing folder replaces both files (the watcher tests rely on that).
    """
    base = root / (folder or name)
    base.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"name": name, "version": "1.0.0", "entry": "main.py", **manifest}
    (base / "autoweave.plugin.json").write_text(json.dumps(doc))
    entry = base / doc["entry"]
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(textwrap.dedent(code))
    return base
