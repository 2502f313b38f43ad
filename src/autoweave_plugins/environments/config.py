"""The ``[environments]`` config section: where packages may come from, and the build limits.

Left at its defaults, uv uses the operator's own configuration (``uv.toml``, ``UV_INDEX_URL``,
netrc), exactly as ``uv pip install`` would on this machine. Setting ``index_url`` (or
``offline``) makes the section the whole truth: uv then runs with ``--no-config`` and only the
indexes named here, so a package can come from nowhere else. ``only_binary`` is on by default:
installing a wheel runs no code, while building an sdist runs its build backend on the host.

Build it with ``config.from_mapping(EnvironmentsConfig, mapping, "environments")``, which checks
keys and types; ``validate`` checks values and names the key in every error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from autoweave_plugins.config import require

__all__ = [
    "DEFAULT_BUILD_TIMEOUT",
    "DEFAULT_MAX_SIZE_MB",
    "DEFAULT_PRUNE_AFTER",
    "DEFAULT_PRUNE_INTERVAL",
    "EnvironmentsConfig",
    "default_cache_dir",
]

DEFAULT_BUILD_TIMEOUT = 600.0
DEFAULT_MAX_SIZE_MB = 1024
DEFAULT_PRUNE_INTERVAL = 3600.0
DEFAULT_PRUNE_AFTER = 86400.0
MAX_URL_LENGTH = 2048


def default_cache_dir(data_root: Path | None = None) -> Path:
    """``<data_root>/environments`` when the host has a data root, else the user's cache:
    ``$XDG_CACHE_HOME/autoweave-plugins/environments`` (``~/.cache/...`` when unset)."""
    if data_root is not None:
        return data_root / "environments"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "autoweave-plugins" / "environments"


def _url_problem(url: str) -> str | None:
    if not url or len(url) > MAX_URL_LENGTH:
        return f"must be a URL of 1 to {MAX_URL_LENGTH} characters"
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        return f"must not contain whitespace or control characters (got {url[:80]!r})"
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http", "file") or not (parts.netloc or parts.path):
        return f"must be an http(s):// or file:// index URL (got {url[:80]!r})"
    return None


@dataclass(frozen=True, slots=True)
class EnvironmentsConfig:
    """How per-plugin environments are resolved, built and cached."""

    index_url: str | None = None
    """The package index. None: uv's own configuration decides (default PyPI). Set: uv runs
    with ``--no-config`` and only this index plus ``extra_index_urls`` and ``find_links``."""
    extra_index_urls: tuple[str, ...] = ()
    """More indexes. uv searches them before ``index_url`` and takes each package from the
    first index that has it (its ``first-index`` strategy, against dependency confusion)."""
    find_links: Path | None = None
    """A local wheelhouse directory, searched besides the indexes (the only source offline)."""
    offline: bool = False
    """No network at all: packages come only from ``find_links``, which must then be set."""
    only_binary: bool = True
    """Wheels only. False lets uv build sdists, which runs their build code on the host."""
    cache_dir: Path | None = None
    """Where built environments live. None: ``default_cache_dir(data_root)``."""
    build_timeout: float = DEFAULT_BUILD_TIMEOUT
    """Seconds one uv step (resolve or install) may take before its process group is killed."""
    max_size_mb: int = DEFAULT_MAX_SIZE_MB
    """Largest installed environment; a bigger one is deleted and its build fails."""
    prune_interval: float = DEFAULT_PRUNE_INTERVAL
    """Seconds between the host's removals of environments no plugin uses; 0 turns it off."""
    prune_after: float = DEFAULT_PRUNE_AFTER
    """The periodic removal spares an environment used (by any host sharing the cache) within
    this many seconds. One in use now is never removed, whatever this says."""

    def validate(self, prefix: str) -> None:
        if self.index_url is not None:
            problem = _url_problem(self.index_url)
            require(problem is None, f"{prefix}.index_url", problem or "")
        for index, url in enumerate(self.extra_index_urls):
            problem = _url_problem(url)
            require(problem is None, f"{prefix}.extra_index_urls[{index}]", problem or "")
        if self.find_links is not None:
            require(
                self.find_links.is_absolute(),
                f"{prefix}.find_links",
                f"must be an absolute path to a wheelhouse directory (got '{self.find_links}')",
            )
        if self.cache_dir is not None:
            require(
                self.cache_dir.is_absolute(),
                f"{prefix}.cache_dir",
                f"must be an absolute path (got '{self.cache_dir}')",
            )
        if self.offline:
            require(
                self.find_links is not None,
                f"{prefix}.offline",
                "needs find_links: offline, packages come only from a local wheelhouse",
            )
            require(
                self.index_url is None and not self.extra_index_urls,
                f"{prefix}.offline",
                "conflicts with index_url/extra_index_urls: offline uses no index",
            )
        require(
            0 < self.build_timeout <= 86400,
            f"{prefix}.build_timeout",
            f"must be from 0 to 86400 seconds, exclusive of 0 (got {self.build_timeout})",
        )
        require(
            0 <= self.prune_interval <= 1 << 30,
            f"{prefix}.prune_interval",
            f"must be >= 0 seconds; 0 turns the periodic prune off (got {self.prune_interval})",
        )
        require(
            0 <= self.prune_after <= 1 << 30,
            f"{prefix}.prune_after",
            f"must be >= 0 seconds (got {self.prune_after})",
        )
        require(
            1 <= self.max_size_mb <= 1 << 20,
            f"{prefix}.max_size_mb",
            f"must be from 1 to {1 << 20} (got {self.max_size_mb})",
        )

    @property
    def exclusive(self) -> bool:
        """True when this section alone names the package sources (uv's own config is off)."""
        return self.index_url is not None or self.offline
