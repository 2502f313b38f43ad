"""Canonical host names: IDNA to A-labels, lowercase, no trailing dot, and IP literals read as
a browser or resolver reads them, so ``0x7f.1`` cannot pose as a name (DESIGN §4)."""

from __future__ import annotations

import ipaddress
import re

import idna

from autoweave_plugins.errors import InvalidURL

__all__ = ["IPAddress", "canonical_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_ASCII_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"0[xX][0-9A-Fa-f]*")


def _ipv4_part(part: str) -> int | None:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if all(c in "01234567" for c in part) else None
    if _DECIMAL.fullmatch(part):
        return int(part)
    return None


def _parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` as the WHATWG URL standard reads an IPv4 host, or None if it is a name.

    A host "ends in a number" when its last label is decimal or hex; such a host is an address
    (or invalid), never a domain name. This is what makes ``0x7f.1`` mean 127.0.0.1.
    """
    labels = host.split(".")
    last = labels[-1]
    if not (_DECIMAL.fullmatch(last) or _HEX.fullmatch(last)):
        return None
    if len(labels) > 4:
        raise InvalidURL(host, "host looks like an IPv4 address but has more than four parts")
    numbers = [_ipv4_part(p) for p in labels]
    if any(n is None for n in numbers):
        raise InvalidURL(host, "host looks like an IPv4 address but a part is not a number")
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise InvalidURL(host, "host looks like an IPv4 address but is out of range")
    address = values[-1]
    for i, n in enumerate(values[:-1]):
        address += n << (8 * (3 - i))
    return ipaddress.IPv4Address(address)


def canonical_host(host: str, source: str) -> tuple[str, IPAddress | None]:
    """Return the canonical host text and, if it is an IP literal, its address."""
    if not host:
        raise InvalidURL(source, "has no host")
    if "%" in host:
        raise InvalidURL(source, "percent-encoded hosts are refused")
    if host.startswith("["):
        if not host.endswith("]"):
            raise InvalidURL(source, "unterminated IPv6 literal")
        try:
            v6 = ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise InvalidURL(source, f"bad IPv6 literal: {exc}") from None
        return f"[{v6.compressed}]", v6
    if host.isascii():
        name = host.lower()
    else:
        try:
            name = idna.encode(host, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise InvalidURL(source, f"host is not a valid internationalised name: {exc}") from None
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        raise InvalidURL(source, "host name is empty or longer than 253 characters")
    v4 = _parse_legacy_ipv4(name)
    if v4 is not None:
        return str(v4), v4
    for label in name.split("."):
        if not _ASCII_LABEL.fullmatch(label):
            raise InvalidURL(source, f"host label {label!r} is not a valid DNS label")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError) as exc:
                raise InvalidURL(source, f"host label {label!r} is bad punycode: {exc}") from None
    return name, None
