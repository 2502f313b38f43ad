"""What the host tells a blank worker when it assigns it a plugin (the ASSIGN payload)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from autoweave_plugins.errors import ProtocolError
from autoweave_plugins.rpc.frames import DEFAULT_MAX_FRAME

__all__ = ["WorkerSpec"]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    plugin: str
    folder: str
    entry: str
    hooks: dict[str, str]
    manifest: dict[str, Any]
    filesystem: list[tuple[str, str]]
    max_heap_mb: int
    max_threads: int = 64
    """Threads beyond the main one (the manifest's memory.max_threads); see sandbox/threads.py."""
    config: dict[str, Any] = field(default_factory=dict)
    strict: bool = False
    extra_imports: list[str] = field(default_factory=list)
    """Module prefixes plugin code may import although a built-in default refuses them."""
    denied_imports: list[str] = field(default_factory=list)
    """Module prefixes the host refuses to this plugin (see sandbox/imports.py)."""
    max_file_bytes: int = 256 << 20
    max_open_files: int = 256
    metrics_per_second: float = 200.0
    serve_limits: dict[str, Any] = field(default_factory=dict)  # worker.http.ServeLimits.to_wire()
    environment_paths: list[str] = field(default_factory=list)
    """The plugin's own environment: import roots, put on sys.path right after its folder."""
    environment_roots: list[str] = field(default_factory=list)
    """Directories holding that environment: read-only to the worker (Landlock, mount view)."""
    max_frame: int = DEFAULT_MAX_FRAME
    """The host's ``limits.max_frame``: the largest frame either side sends or reads."""
    tmp_dir: str = ""
    """The worker's private temporary folder (TMPDIR), made by the host; empty: none. A
    worker with its own mount namespace uses its tmpfs at /tmp instead."""
    tmp_bytes: int = 64 << 20
    """Size of the private /tmp tmpfs of a worker with its own view."""
    blas_threads: int = 1
    """OPENBLAS/OMP/MKL... thread counts for the worker (worker/environment.py)."""
    own_view: bool = False
    """Set by the worker itself, never sent: it lives in its own mount namespace, where
    whatever is not granted does not exist (worker/world_entry.py)."""
    metadata_broker: bool = False
    """The first fd sent with ASSIGN is the socket of the host's chmod/utime broker."""

    def to_wire(self) -> dict[str, Any]:
        """The fields, for msgpack to encode at once: not a copy. ``dataclasses.asdict``
        deep-copies the manifest and the config, a quarter of a millisecond of the host's
        time per load."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @classmethod
    def from_wire(cls, data: object) -> WorkerSpec:
        if not isinstance(data, dict):
            raise ProtocolError("assign payload must be a map")
        try:
            spec = cls(**data)
        except TypeError as exc:
            raise ProtocolError(f"bad assign payload: {exc}") from None
        object.__setattr__(spec, "filesystem", [(str(p), str(m)) for p, m in spec.filesystem])
        for name in ("environment_paths", "environment_roots"):
            object.__setattr__(spec, name, [str(p) for p in getattr(spec, name)])
        return spec


_FIELD_NAMES = tuple(spec_field.name for spec_field in fields(WorkerSpec))
