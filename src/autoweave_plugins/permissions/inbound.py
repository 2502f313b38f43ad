"""Inbound network permission: the one port a plugin may serve on, bound by the host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MAX_PORT", "MIN_PORT", "InboundSpec"]

MIN_PORT = 1024
MAX_PORT = 65535

Interface = Literal["localhost", "all"]


@dataclass(frozen=True, slots=True)
class InboundSpec:
    """``network.inbound``: the port, and whether it listens on loopback only or everywhere."""

    port: int
    interface: Interface = "localhost"

    @property
    def bind_addresses(self) -> tuple[str, str]:
        """The IPv4 and IPv6 addresses the host binds for this spec."""
        return ("127.0.0.1", "::1") if self.interface == "localhost" else ("0.0.0.0", "::")  # noqa: S104
