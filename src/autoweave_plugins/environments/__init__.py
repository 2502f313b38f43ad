"""Per-plugin environments: each plugin's ``requirements``, locked, cached and read-only.

The host, never a worker, resolves a manifest's PEP 508 requirements with uv, locks them with
hashes, installs them with bytecode into a content-addressed cache, and hands the worker a
directory to put first on its import path. See ``builder`` for the flow, ``store`` for the
layout on disk and ``config`` for the ``[environments]`` section.

    builder = EnvironmentBuilder({"find_links": "/srv/wheels", "offline": True})
    env = await builder.ensure(["humanize>=4.9"])
    env.path      # first on the worker's sys.path
    env.root      # grant read-only (Landlock) and mount read-only (namespace world)
"""

from autoweave_plugins.environments.builder import EnvironmentBuilder
from autoweave_plugins.environments.config import EnvironmentsConfig, default_cache_dir
from autoweave_plugins.environments.errors import (
    BuildTimeout,
    EnvironmentBuildError,
    EnvironmentTooLarge,
    InstallFailed,
    InvalidRequirements,
    ResolutionFailed,
)
from autoweave_plugins.environments.keys import Target
from autoweave_plugins.environments.model import BuilderStats, Environment, PackageSource
from autoweave_plugins.environments.prepare import Prepared, keys_in_use, prepare_all

__all__ = [
    "BuildTimeout",
    "BuilderStats",
    "Environment",
    "EnvironmentBuildError",
    "EnvironmentBuilder",
    "EnvironmentTooLarge",
    "EnvironmentsConfig",
    "InstallFailed",
    "InvalidRequirements",
    "PackageSource",
    "Prepared",
    "ResolutionFailed",
    "Target",
    "default_cache_dir",
    "keys_in_use",
    "prepare_all",
]
