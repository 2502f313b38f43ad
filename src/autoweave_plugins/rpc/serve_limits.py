"""Limits on a plugin's inbound HTTP server: set by the host, carried in the worker spec.

Shared by both sides (the host builds the spec, the worker's ``autoweave.serve`` enforces it),
so it lives in ``rpc`` below both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["ServeLimits"]


@dataclass(frozen=True, slots=True)
class ServeLimits:
    """What the clients of one plugin's inbound server may hold. Durations are in seconds."""

    max_connections: int = 64
    """Connections open at once, over all the plugin's listeners (IPv4 and IPv6)."""
    header_timeout: float = 10.0
    """Time from accepting a connection to the end of its request headers."""
    body_timeout: float = 10.0
    """Time from the end of the headers to the end of the request body."""
    write_timeout: float = 10.0
    """Time for a client to take the whole response (or an error) off the socket."""
    max_header_bytes: int = 64 << 10
    """Largest request line plus headers."""
    max_body_bytes: int = 1 << 20
    """Largest request body."""

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            wanted = int if spec.type in ("int", int) else (int, float)
            if isinstance(value, bool) or not isinstance(value, wanted) or not value > 0:
                raise ValueError(
                    f"serve limit {spec.name} must be a positive number, not {value!r}"
                )

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: object) -> ServeLimits:
        """The limits the host sent in the worker spec; an empty mapping means the defaults."""
        if not isinstance(data, dict):
            raise ValueError("serve limits must be a mapping")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"bad serve limits: {exc}") from None
