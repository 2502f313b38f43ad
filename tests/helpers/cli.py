"""The installed ``autoweave-plugins`` console script, run the way a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["cli", "console_script"]


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
