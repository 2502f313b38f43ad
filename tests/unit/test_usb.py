"""USB ids: normalisation, and an empty permission means no devices."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins.permissions.usb import USBFilter, normalize_usb_id

hex4 = st.from_regex(r"[0-9a-fA-F]{4}", fullmatch=True)


def test_normalisation() -> None:
    assert normalize_usb_id("0XABcd") == "0xabcd"
    for bad in ("abcd", "0xabc", "0xabcde", "0xabcg", " 0xabcd", "0xabcd\n", 0x1234, None):
        assert normalize_usb_id(bad) is None


def test_empty_permission_matches_nothing() -> None:
    assert not USBFilter().matches("0x1234", "0xabcd")
    assert not USBFilter(frozenset(), frozenset({"0xabcd"})).matches("0x1234", "0xabcd")


def test_vendor_only_and_vendor_product() -> None:
    vendor_only = USBFilter(frozenset({"0x1234"}))
    assert vendor_only.matches("0x1234", "0x0001") and vendor_only.matches("0X1234", "0xFFFF")
    assert not vendor_only.matches("0x1235", "0x0001")
    both = USBFilter(frozenset({"0x1234"}), frozenset({"0xabcd"}))
    assert both.matches("0x1234", "0xABCD") and not both.matches("0x1234", "0xabce")
    assert not both.matches("not-an-id", "0xabcd")


@given(hex4, hex4, hex4)
def test_match_is_case_insensitive_and_exact(vendor: str, product: str, other: str) -> None:
    usb = USBFilter(frozenset({"0x" + vendor.lower()}), frozenset({"0x" + product.lower()}))
    assert usb.matches("0x" + vendor.upper(), "0X" + product)
    assert usb.matches("0x" + vendor, "0x" + other) == (other.lower() == product.lower())
