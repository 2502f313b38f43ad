"""Shared fixtures: where the conformance corpus is, and a plugin-folder factory."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.workers import close_shared_template

REPO = Path(__file__).resolve().parent.parent


def corpus_dir() -> Path | None:
    """The shared conformance corpus: $AUTOWEAVE_CORPUS, else ../shared/manifests beside the repo."""
    configured = os.environ.get("AUTOWEAVE_CORPUS")
    candidate = Path(configured) if configured else REPO.parent / "shared" / "manifests"
    return candidate if candidate.is_dir() else None


@pytest.fixture
def corpus() -> Path:
    found = corpus_dir()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run beside ../shared/manifests (or set AUTOWEAVE_CORPUS)")
        pytest.skip("conformance corpus not found beside this clone; set AUTOWEAVE_CORPUS")
    return found


MakePlugin = Callable[..., Path]


@pytest.fixture
def make_plugin(tmp_path: Path) -> MakePlugin:
    """Create ``tmp_path/plugins/<folder>`` with a manifest and an entry file."""

    def make(
        name: str,
        folder: str | None = None,
        code: str = "def initialize():\n    return 'ok'\n",
        root: Path | None = None,
        **fields: Any,
    ) -> Path:
        base = (root or tmp_path / "plugins") / (folder or name)
        base.mkdir(parents=True, exist_ok=True)
        manifest: dict[str, Any] = {"name": name, "version": "1.0.0", "entry": "main.py"}
        manifest.update(fields)
        (base / "autoweave.plugin.json").write_text(json.dumps(manifest))
        entry = base / manifest["entry"]
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(code)
        return base

    return make


@pytest.fixture(scope="session", autouse=True)
def _shared_template() -> Iterator[None]:
    """Stop the session's worker template (``tests.workers``) once every test is done."""
    yield
    asyncio.run(close_shared_template())
