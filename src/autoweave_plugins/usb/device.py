"""One USB attach or detach, with the device's ids normalised to ``0x`` + 4 lowercase hex."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from autoweave_plugins.errors import InvalidUSBEvent
from autoweave_plugins.permissions.usb import normalize_usb_id

__all__ = ["USBEvent"]

Action = Literal["attach", "detach"]


@dataclass(frozen=True, slots=True)
class USBEvent:
    action: Action
    vendor_id: str
    product_id: str
    serial: str | None = None
    manufacturer: str | None = None
    product: str | None = None
    bus: int | None = None
    address: int | None = None
    port_path: str | None = None
    device_id: str | None = None
    """An id the event's source gives the physical device (the Redis ``aw:hotplug`` field
    ``device_id``): when set, it alone decides which events stay in order together."""

    @classmethod
    def create(cls, action: str, vendor_id: str, product_id: str, **details: Any) -> USBEvent:
        """Build an event from untrusted input; raises InvalidUSBEvent naming the bad field."""
        if action not in ("attach", "detach"):
            raise InvalidUSBEvent("action", f"must be 'attach' or 'detach', not {action!r}")
        vendor, product = normalize_usb_id(vendor_id), normalize_usb_id(product_id)
        if vendor is None:
            raise InvalidUSBEvent("vendor_id", f"must be '0x' and 4 hex digits, not {vendor_id!r}")
        if product is None:
            raise InvalidUSBEvent(
                "product_id", f"must be '0x' and 4 hex digits, not {product_id!r}"
            )
        for key in ("serial", "manufacturer", "product", "port_path", "device_id"):
            value = details.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > 256):
                raise InvalidUSBEvent(key, "must be a string of at most 256 characters")
        for key in ("bus", "address"):
            value = details.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 16
            ):
                raise InvalidUSBEvent(key, "must be a small non-negative integer")
        unknown = set(details) - {
            "serial",
            "manufacturer",
            "product",
            "bus",
            "address",
            "port_path",
            "device_id",
        }
        if unknown:
            raise InvalidUSBEvent(sorted(unknown)[0], "unknown field")
        return cls("attach" if action == "attach" else "detach", vendor, product, **details)

    @property
    def device_key(self) -> tuple[object, ...]:
        """Identifies the physical device, so its attach and detach stay in order."""
        if self.device_id:
            return ("id", self.device_id)
        if self.bus is not None and self.address is not None:
            return ("addr", self.bus, self.address)
        if self.port_path:
            return ("port", self.port_path)
        return ("ids", self.vendor_id, self.product_id, self.serial)

    def to_hook_argument(self) -> dict[str, Any]:
        """What onUSBAttach/onUSBDetach receive."""
        data = asdict(self)
        data.pop("action")
        return data
