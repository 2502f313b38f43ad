"""Minimal valid wheels written on the spot, so environment tests and benchmarks need no network.

A wheel is a zip of the package's files plus ``<name>-<version>.dist-info/`` with ``METADATA``,
``WHEEL`` and a ``RECORD`` of every file's sha256 (PEP 427), which uv checks on install.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def write_wheel(
    directory: Path,
    name: str,
    version: str,
    modules: Mapping[str, str] | None = None,
    requires: Sequence[str] = (),
    padding: int = 0,
) -> Path:
    """Write ``name-version-py3-none-any.whl`` into ``directory`` and return its path.

    By default the wheel holds one package, ``name`` (with '-' as '_'), whose ``VERSION`` is
    ``version``. ``padding`` adds a data file of that many bytes, to test size limits.
    """
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files: dict[str, bytes] = {
        path: text.encode()
        for path, text in (modules or {f"{module}/__init__.py": f"VERSION = {version!r}\n"}).items()
    }
    if padding:
        files[f"{module}/padding.bin"] = b"\0" * padding
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: autoweave-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path
