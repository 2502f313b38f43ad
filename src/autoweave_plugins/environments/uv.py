"""Running uv on the host: the binary from the ``uv`` package, a clean environment, bounded.

uv runs in the host's trust domain and never in a sandbox: it needs the network and writes the
cache. It gets only what it needs:

* the binary shipped in the ``uv`` wheel (``uv.find_uv_bin()``), so the version is the one
  this project pinned, not whatever is on ``PATH``;
* an environment built from an allow-list: home, path, temp, TLS and proxy settings, and the
  ``UV_*`` variables that say where packages come from and how to reach them. Tokens and keys
  the host holds for other purposes (cloud credentials, API keys) never reach it, and
  variables that would weaken a build (``UV_INSECURE_HOST``, ``UV_NO_VERIFY_HASHES``,
  ``UV_CONSTRAINT``...) are dropped. When the host config names its own indexes, the operator's
  index variables are dropped too, and index URLs travel in ``UV_INDEX_URL`` /
  ``UV_EXTRA_INDEX_URL`` rather than on the command line, where ``ps`` would show credentials;
* a new session, so a timeout or cancellation kills the whole process group (uv starts Python
  for bytecode compilation, and build backends for sdists);
* output captured up to a bound: the head and tail of each stream are kept, the middle dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from autoweave_plugins.environments.config import EnvironmentsConfig
from autoweave_plugins.environments.errors import EnvironmentBuildError

__all__ = ["OUTPUT_LIMIT", "UvResult", "run_uv", "source_args", "uv_binary", "uv_environment"]

OUTPUT_LIMIT = 64 * 1024
"""Bytes kept of each of stdout and stderr (a quarter from the head, the rest from the tail)."""

_PASSED = frozenset({
    "HOME", "PATH", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "NETRC",
    "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "all_proxy", "no_proxy",
    "UV_CACHE_DIR", "UV_NATIVE_TLS", "UV_HTTP_TIMEOUT", "UV_HTTP_RETRIES",
    "UV_CONCURRENT_DOWNLOADS", "UV_CONCURRENT_INSTALLS", "UV_CONCURRENT_BUILDS",
    "UV_KEYRING_PROVIDER",
})  # fmt: skip
# Where packages come from: the operator's, unless the host config names the indexes itself.
_SOURCES = ("UV_INDEX", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS")
_OPERATOR_CONFIG = frozenset({"UV_CONFIG_FILE", "UV_NO_CONFIG"})

_binary: str | None = None


def uv_binary() -> str:
    """Path of the uv executable from the ``uv`` package (looked up once)."""
    global _binary  # noqa: PLW0603 - one lookup per process; the wheel does not move
    if _binary is None:
        try:
            import uv  # noqa: PLC0415 - only the host builds environments

            _binary = uv.find_uv_bin()
        except (ImportError, FileNotFoundError) as exc:
            raise EnvironmentBuildError(
                f"the uv binary is missing ({exc}); reinstall autoweave-plugins, which depends "
                "on the 'uv' package"
            ) from None
    return _binary


def uv_environment(config: EnvironmentsConfig, base: Mapping[str, str]) -> dict[str, str]:
    """The environment uv runs with: the allow-list from ``base``, then our own settings."""
    env = {k: v for k, v in base.items() if k in _PASSED}
    if not config.exclusive:
        env.update((k, v) for k, v in base.items() if k.startswith(_SOURCES))
        env.update((k, v) for k, v in base.items() if k in _OPERATOR_CONFIG)
    # Never fetch a Python: the worker's interpreter is given explicitly with --python.
    env.update(UV_NO_PROGRESS="1", NO_COLOR="1", UV_PYTHON_DOWNLOADS="never")
    if config.index_url is not None:
        env["UV_INDEX_URL"] = config.index_url
    if config.extra_index_urls:
        inherited = env.get("UV_EXTRA_INDEX_URL", "")
        env["UV_EXTRA_INDEX_URL"] = " ".join(filter(None, (*config.extra_index_urls, inherited)))
    return env


def source_args(config: EnvironmentsConfig) -> list[str]:
    """Command-line options shared by ``pip compile`` and ``pip install``: sources and binaries."""
    args: list[str] = []
    if config.exclusive:
        args.append("--no-config")
    if config.offline:
        args += ["--offline", "--no-index"]
    if config.find_links is not None:
        args += ["--find-links", str(config.find_links)]
    if config.only_binary:
        args += ["--only-binary", ":all:"]
    return args


class _Bounded:
    """The first and last bytes of a stream, with a count of what was dropped between."""

    __slots__ = ("dropped", "head", "head_limit", "tail", "tail_limit")

    def __init__(self, limit: int) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.head_limit = limit // 4
        self.tail_limit = limit - self.head_limit
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        excess = len(self.tail) - self.tail_limit
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def text(self) -> str:
        middle = f"\n[... {self.dropped} bytes dropped ...]\n" if self.dropped else ""
        return (bytes(self.head).decode(errors="replace") + middle) + bytes(self.tail).decode(
            errors="replace"
        )


@dataclass(frozen=True, slots=True)
class UvResult:
    returncode: int
    stdout: str
    stderr: str


async def _drain(stream: asyncio.StreamReader | None, sink: _Bounded) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        sink.add(chunk)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_uv(
    args: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float
) -> UvResult:
    """Run ``uv *args``; ``TimeoutError`` after ``timeout`` seconds, with its group killed.

    Cancelling the caller kills the group as well, so no uv outlives the build that wanted it.
    """
    process = await asyncio.create_subprocess_exec(
        uv_binary(),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    out, err = _Bounded(OUTPUT_LIMIT), _Bounded(OUTPUT_LIMIT)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(_drain(process.stdout, out), _drain(process.stderr, err))
            returncode = await process.wait()
    except BaseException:
        _kill_group(process)
        await asyncio.shield(process.wait())
        raise
    return UvResult(returncode, out.text(), err.text())
