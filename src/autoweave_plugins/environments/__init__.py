"""Per-plugin environments: each plugin's ``requirements``, locked, cached and read-only.

The host, never a worker, resolves a manifest's PEP 508 requirements with uv, locks them with
hashes, installs them with bytecode into a content-addressed cache, and hands the worker a
directory to put first on its import path. See ``builder`` for the flow, ``store`` for the
layout on disk and ``config`` for the ``[environments]`` section.

    builder = EnvironmentBuilder({"find_links": "/srv/wheels", "offline": True})
    env = await builder.ensure(["humanize>=4.9"])
    env.path      # first on the worker's sys.path
    env.root      # grant read-only (Landlock) and mount read-only (namespace world)

How the host uses it (``preparer.Preparer``, one ``EnvironmentBuilder`` per manager, from the
``[environments]`` config section and the host's data root):

* discovery: a manifest with ``requirements`` puts its plugin in ``preparing``; a lookup hit
  makes it ready at once, a miss builds it in the background. Success emits
  ``plugin:prepared`` (with ``env.to_dict()``: key, path, packages and their sources); an
  ``EnvironmentBuildError`` makes the plugin ``failed`` and emits ``plugin:error`` with the
  error text (``culprits`` and ``detail`` included). A call meanwhile waits for the build.
* worker spec: ``WorkerSpec.environment_paths`` (``env.path``) goes on ``sys.path`` right
  after the plugin's own folder (its pins win over the host's packages), and
  ``WorkerSpec.environment_roots`` (``env.root``) is granted read-only to Landlock beside the
  plugin folder, for the namespace world to mount read-only at the same path. Its top-level
  names count as the plugin's own for the import guard; code inside it imports freely, like
  the stdlib. ``.pth`` files in it are not processed (plain ``sys.path`` entries).
* hot reload: the new manifest's environment is ensured before the green worker starts; on
  failure the blue one keeps serving and ``plugin:error`` says why.
* in use: each record and each worker holds a ``Lease`` (a shared flock), so no prune in any
  process removes an environment while it is used.
* housekeeping: ``prepare_all`` builds many with a progress callback (``prepare [DIR]``);
  ``builder.prune(keys_in_use(builder, wanted))`` removes environments no plugin uses, and the
  host runs ``prune`` every ``prune_interval``, sparing those used within ``prune_after``.
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
from autoweave_plugins.environments.leases import Lease, Leases
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
    "Lease",
    "Leases",
    "PackageSource",
    "Prepared",
    "ResolutionFailed",
    "Target",
    "default_cache_dir",
    "keys_in_use",
    "prepare_all",
]
