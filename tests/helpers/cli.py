"""The installed ``autoweave-plugins`` console script, run the way a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.waiting import wait_until_sync

__all__ = ["cli", "console_script", "wait_for"]


def console_script() -> str:
    """The path of the console script installed beside this interpreter."""
    script = shutil.which("autoweave-plugins", path=str(Path(sys.executable).parent))
    assert script is not None, "console script not installed"
    return script


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the console script to completion; its exit status is for the test to judge."""
    return subprocess.run(
        [console_script(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_for(path: Path, text: str, timeout: float = 30) -> str:
    """Wait until ``text`` appears in the log file ``path``; returns the log so far."""

    def content() -> str:
        return path.read_text() if path.exists() else ""

    wait_until_sync(
        lambda: text in content(),
        f"{text!r} in {path.name}",
        timeout=timeout,
        interval=0.05,
        detail=lambda: f"log so far:\n{content()}",
    )
    return content()
