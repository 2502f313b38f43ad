"""What an environment is keyed by: the worker's interpreter, the requirement set, the lock.

Two keys, two questions:

* the **resolution key** answers "have these requirements been resolved for this interpreter
  from these sources?" It hashes the canonical requirement set, the package sources from the
  config and the target. Its record holds the lock, so a hit never runs the resolver again:
  requirements are resolved once, and a restart finds the same lock.
* the **environment key** answers "is this exact set of files installed for this interpreter?"
  It hashes the lock's pins and hashes (comments stripped) and the target, so different
  requirement sets that resolve to the same packages share one environment.

The target is the interpreter the workers run: its version, implementation and ABI (which
bytecode and compiled extensions it loads) and platform with libc (which wheels fit).
"""

from __future__ import annotations

import hashlib
import platform
import sys
import sysconfig
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import orjson

from autoweave_plugins.environments.config import EnvironmentsConfig

__all__ = ["KEY_VERSION", "Target", "environment_key", "redact_url", "resolution_key"]

KEY_VERSION = 1
"""Bumped when the layout or the build recipe changes, so old environments are not reused."""


@dataclass(frozen=True, slots=True)
class Target:
    """The interpreter an environment is built for: the one workers are started with."""

    executable: str
    python_version: str
    cache_tag: str
    abiflags: str
    platform: str

    @classmethod
    def current(cls) -> Target:
        """This interpreter, which is the one ``process.py`` starts workers with."""
        libc, libc_version = platform.libc_ver()
        return cls(
            executable=sys.executable,
            python_version=platform.python_version(),
            cache_tag=sys.implementation.cache_tag or sys.implementation.name,
            abiflags=getattr(sys, "abiflags", ""),
            platform=f"{sysconfig.get_platform()}-{libc or 'nolibc'}{libc_version}",
        )

    @property
    def fingerprint(self) -> str:
        return f"{self.cache_tag}{self.abiflags}-{self.python_version}-{self.platform}"


def redact_url(url: str) -> str:
    """``url`` without its user and password, for records and messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _digest(document: object) -> str:
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def resolution_key(
    requirements: tuple[str, ...], config: EnvironmentsConfig, target: Target
) -> str:
    """Key of a resolution: canonical requirements, configured sources, target."""
    sources = {
        # Credentials rotate without changing what an index serves; keep them out of keys.
        "index_url": redact_url(config.index_url) if config.index_url else None,
        "extra_index_urls": [redact_url(u) for u in config.extra_index_urls],
        "find_links": str(config.find_links) if config.find_links else None,
        "offline": config.offline,
        "only_binary": config.only_binary,
    }
    return _digest(
        {
            "version": KEY_VERSION,
            "requirements": list(requirements),
            "sources": sources,
            "target": target.fingerprint,
        }
    )


def environment_key(canonical_lock: str, target: Target) -> str:
    """Key of an installed environment: the lock's pins and hashes, and the target."""
    return _digest({"version": KEY_VERSION, "lock": canonical_lock, "target": target.fingerprint})
