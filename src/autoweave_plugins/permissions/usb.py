"""USB permission: which devices' events a plugin may receive.

Ids are ``0x`` plus four hex digits, case-insensitive, normalised to lowercase. A device matches
when its vendor is listed and, if product ids are listed, its product is too. No vendor ids (a
missing or empty permission) means no devices at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["USBFilter", "normalize_usb_id"]

_USB_ID = re.compile(r"0[xX][0-9A-Fa-f]{4}")


def normalize_usb_id(value: object) -> str | None:
    """Return the id as ``0x`` + 4 lowercase hex digits, or None if it is not a valid id."""
    if isinstance(value, str) and _USB_ID.fullmatch(value):
        return "0x" + value[2:].lower()
    return None


@dataclass(frozen=True, slots=True)
class USBFilter:
    """The normalised ``usb`` permission of one plugin."""

    vendor_ids: frozenset[str] = frozenset()
    product_ids: frozenset[str] = frozenset()

    def matches(self, vendor_id: str, product_id: str) -> bool:
        vendor = normalize_usb_id(vendor_id)
        if vendor is None or vendor not in self.vendor_ids:
            return False
        if not self.product_ids:
            return True
        return normalize_usb_id(product_id) in self.product_ids
