"""Per-plugin environments: each plugin's ``requirements``, locked, cached and read-only.

The host, never a worker, resolves a manifest's PEP 508 requirements with uv, locks them with
hashes, installs them with bytecode into a content-addressed cache, and hands the worker a
directory to put first on its import path. See ``builder`` for the flow, ``store`` for the
layout on disk and ``config`` for the ``[environments]`` section.

    builder = EnvironmentBuilder({"find_links": "/srv/wheels", "offline": True})
    env = await builder.ensure(["humanize>=4.9"])
    env.path      # first on the worker's sys.path
    env.root      # grant read-only (Landlock) and mount read-only (namespace world)

How the host uses it (one ``EnvironmentBuilder`` per manager, from the ``[environments]``
config section and the host's data root):

* discovery: a manifest with ``requirements`` puts its plugin in ``preparing``; a task awaits
  ``builder.ensure(manifest.requirements)``. Success emits ``plugin:prepared`` (with
  ``env.to_dict()``: key, path, packages and their sources) and the plugin continues as
  usual; an ``EnvironmentBuildError`` makes it ``failed`` and emits ``plugin:error`` with the
  error text (``culprits`` and ``detail`` included). A call during ``preparing`` awaits the same
  ensure (it joins the single flight) before loading.
* worker spec: the environment's ``path`` goes on ``sys.path`` after the plugin's own folder
  and before everything else (so the plugin's pins win over the host's packages); ``root`` is
  granted read-only to Landlock beside the plugin folder and bind-mounted read-only at the
  same path in the namespace world. Its top-level names count as the plugin's own for the
  import guard; code inside it imports freely, like the stdlib. ``.pth`` files in it are not
  processed (``sys.path.insert``, not ``site.addsitedir``).
* hot reload: when the new manifest's requirements differ, ``ensure`` them before starting the
  green worker; on failure the blue one keeps serving and ``plugin:error`` says why.
* housekeeping: ``prepare_all`` builds many with a progress callback (``prepare [DIR]``);
  ``builder.prune(keys_in_use(builder, wanted))`` removes environments no plugin uses.
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
