"""Shared fixtures: where the conformance corpus is, where plugins go, and a folder factory."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.plugins import DEFAULT_CODE, write_plugin_folder
from tests.helpers.workers import close_shared_template

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
def plugin_root(tmp_path: Path) -> Path:
    """Where a test's plugin folders go (created by the first plugin written)."""
    return tmp_path / "plugins"


@pytest.fixture
def make_plugin(plugin_root: Path) -> MakePlugin:
    """``write_plugin_folder`` with ``plugin_root`` as the default root."""

    def make(
        name: str,
        folder: str | None = None,
        code: str = DEFAULT_CODE,
        root: Path | None = None,
        **fields: Any,
    ) -> Path:
        return write_plugin_folder(root or plugin_root, name, code, folder=folder, **fields)

    return make


@pytest.fixture(scope="session", autouse=True)
def _shared_template() -> Iterator[None]:
    """Stop the session's worker template (``tests.workers``) once every test is done."""
    yield
    asyncio.run(close_shared_template())
