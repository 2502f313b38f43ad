"""The process environment plugin code finds: working directory, temp folder, BLAS threads.

Set after the sandbox is complete and before the plugin's entry is imported, from the spec:

- **Working directory**: the plugin's folder, so ``open("data.json")`` reads a file shipped
  with the plugin (the folder is read-only).
- **Temp folder**: ``TMPDIR`` and ``tempfile.tempdir`` name the worker's private tmp, which is
  granted read-write (``tempfile.TemporaryDirectory``, ``NamedTemporaryFile``, ``mkstemp``).
  The host decides its path (``tmpdirs.py``): today a fresh folder under its data root, later
  the namespace layer's tmpfs at ``/tmp``. Nothing here depends on which.
- **BLAS and OpenMP threads**: OpenBLAS sizes its buffers by thread count, which defaults to
  the CPU count (about 41 MB per CPU), so numpy broke the default heap on 7 CPUs or more. The
  variables are read when the library loads, after this.
"""

from __future__ import annotations

import os
import tempfile

from autoweave_plugins.rpc import WorkerSpec

__all__ = ["BLAS_VARIABLES", "prepare_environment"]

BLAS_VARIABLES = (
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def prepare_environment(spec: WorkerSpec) -> None:
    """Apply the spec's environment to this (sandboxed) process."""
    os.chdir(spec.folder)
    if spec.tmp_dir:
        os.environ["TMPDIR"] = spec.tmp_dir
        tempfile.tempdir = spec.tmp_dir
    for variable in BLAS_VARIABLES:
        os.environ[variable] = str(spec.blas_threads)
