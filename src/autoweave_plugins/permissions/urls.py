"""Outbound URL permissions: canonicalisation and Chrome-style match patterns.

Written here rather than taken from a library because the rules are the security boundary for
brokered HTTP and differ on purpose from every URL parser we could reuse (DESIGN §4):

* only ``http`` and ``https``; a missing port is the scheme's default port;
* userinfo, backslashes, whitespace and control characters are refused, never "fixed";
* hosts are canonicalised (IDNA/UTS 46 to A-labels, lowercase, one trailing dot removed) and
  every legacy IPv4 spelling (``0x7f.1``, ``2130706433``, ``0177.0.0.1``) is read the way a
  browser or resolver would, so it cannot pose as a name;
* ``*.example.com`` matches ``example.com`` and its subdomains at a label boundary, never
  ``evilexample.com``, and no wildcard ever matches an IP literal;
* the path (with its query) is matched as a glob after percent-escapes are normalised and dot
  segments removed, so ``/v1/%2e%2e/admin`` cannot pass for ``/v1/*``.

What is matched is exactly what the broker sends: ``CanonicalURL.url``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

import idna

from autoweave_plugins.errors import InvalidURL

__all__ = [
    "CanonicalURL",
    "OutboundPolicy",
    "URLDecision",
    "URLPattern",
    "canonicalize_url",
    "is_public_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 8192

_URL_SHAPE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)"
    r"(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?(?:#(?P<fragment>.*))?",
    re.DOTALL,
)
_ASCII_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"0[xX][0-9A-Fa-f]*")
_PORT = re.compile(r"[0-9]{1,5}")
_PERCENT = re.compile(r"%(?P<hex>[0-9A-Fa-f]{2})?")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar minus '%' (handled separately), plus '/' and, for the query, '?'.
_PATH_SAFE = frozenset(_UNRESERVED | set("!$&'()*+,;=:@/"))
_QUERY_SAFE = frozenset(_PATH_SAFE | {"?"})


def _refuse_bad_characters(text: str, what: str) -> None:
    if len(text) > MAX_URL_LENGTH:
        raise InvalidURL(text[:64] + "…", f"{what} is longer than {MAX_URL_LENGTH} characters")
    for ch in text:
        if ch == "\\":
            raise InvalidURL(text, f"{what} contains a backslash")
        if ch <= " " or ch == "\x7f" or ch.isspace() or ("\x80" <= ch <= "\x9f"):
            raise InvalidURL(text, f"{what} contains whitespace or a control character")


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


def _canonical_host(host: str, source: str) -> tuple[str, IPAddress | None]:
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


def _normalise_escapes(text: str, safe: frozenset[str], source: str) -> str:
    """Percent-encode what must be, upper-case escapes, decode escaped unreserved characters."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%":
            m = _PERCENT.match(text, i)
            if m is None or m.group("hex") is None:
                raise InvalidURL(source, "contains '%' that is not followed by two hex digits")
            decoded = chr(int(m.group("hex"), 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + m.group("hex").upper())
            i += 3
            continue
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, on a path that already starts with '/'."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


_ENCODED_SEPARATOR = re.compile(r"%2F|%5C", re.IGNORECASE)


def _refuse_hidden_dot_segments(path: str, source: str) -> None:
    """Refuse '..%2F' and '..;' style segments: servers that decode '%2F' or strip ';params'
    before routing would see a '..' that the matcher never did."""
    probe = _ENCODED_SEPARATOR.sub("/", path)
    for segment in probe.split("/"):
        if segment.split(";", 1)[0] in (".", ".."):
            raise InvalidURL(source, "path has a dot segment hidden behind '%2F', '%5C' or ';'")


@dataclass(frozen=True, slots=True)
class CanonicalURL:
    """A URL after canonicalisation: what is matched, and exactly what would be requested."""

    scheme: str
    host: str
    address: IPAddress | None
    port: int
    path: str
    query: str | None

    @property
    def target(self) -> str:
        """Path and query: the part matched against a pattern's path glob."""
        return self.path if self.query is None else f"{self.path}?{self.query}"

    @property
    def url(self) -> str:
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.target}"


def _split_authority(authority: str, source: str) -> tuple[str, str | None]:
    if "@" in authority:
        raise InvalidURL(source, "user information ('user@') in URLs is refused")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise InvalidURL(source, "unterminated IPv6 literal")
        rest = authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidURL(source, "unexpected text after the IPv6 literal")
        return authority[: end + 1], (rest[1:] if rest else None)
    host, colon, port = authority.partition(":")
    if ":" in port:
        raise InvalidURL(source, "host has more than one ':'")
    return host, (port if colon else None)


def _split(url: str, what: str) -> re.Match[str]:
    if not isinstance(url, str):
        raise InvalidURL(repr(url), f"{what} must be a string")
    _refuse_bad_characters(url, what)
    m = _URL_SHAPE.fullmatch(url)
    if m is None:
        raise InvalidURL(url, f"{what} must look like 'https://host/path'")
    scheme = m.group("scheme").lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidURL(url, f"scheme {scheme!r} is not allowed; use http or https")
    return m


def canonicalize_url(url: str) -> CanonicalURL:
    """Canonicalise a URL a plugin asked for, or raise ``InvalidURL`` saying why not."""
    m = _split(url, "URL")
    scheme = m.group("scheme").lower()
    host_text, port_text = _split_authority(m.group("authority"), url)
    host, address = _canonical_host(host_text, url)
    if port_text is None:
        port = DEFAULT_PORTS[scheme]
    elif _PORT.fullmatch(port_text) and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise InvalidURL(url, f"port {port_text!r} is not a number from 1 to 65535")
    path = _normalise_escapes(m.group("path") or "/", _PATH_SAFE, url)
    if not path.startswith("/"):
        raise InvalidURL(url, "path must start with '/'")
    query = m.group("query")
    if query is not None:
        query = _normalise_escapes(query, _QUERY_SAFE, url)
    path = _remove_dot_segments(path)
    _refuse_hidden_dot_segments(path, url)
    return CanonicalURL(scheme, host, address, port, path, query)


# IPv6 ranges that carry an IPv4 address in their low 32 bits and reach it: NAT64 (RFC 6052)
# and the deprecated IPv4-compatible form. Local-use NAT64 (RFC 8215) is never global, but
# Python before 3.12 calls it global.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def is_public_address(address: IPAddress) -> bool:
    """True for globally routable unicast addresses; False for private, loopback, link-local…

    An IPv6 address that embeds an IPv4 address (mapped, NAT64, 6to4, IPv4-compatible) is public
    only if the embedded IPv4 address is too: ``64:ff9b::7f00:1`` is loopback behind NAT64.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in _LOCAL_NAT64:
            return False
        else:
            embedded = address.sixtofour
            if address in _NAT64 or address in _IPV4_COMPATIBLE:
                embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
            if embedded is not None and not is_public_address(embedded):
                return False
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class URLPattern:
    """One outbound match pattern, e.g. ``https://*.example.com/*``."""

    text: str
    scheme: str
    host: str | None  # None: any host name (pattern host '*')
    subdomains: bool  # '*.' prefix: the host and every subdomain
    address: IPAddress | None  # the pattern names this IP literal
    port: int | None  # None: any port (':*')
    path: re.Pattern[str]

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def parse(text: str) -> URLPattern:
        """Parse a pattern or raise ``InvalidURL`` saying what is wrong with it."""
        m = _split(text, "URL pattern")
        if m.group("fragment") is not None:
            raise InvalidURL(text, "a URL pattern must not contain a fragment ('#')")
        scheme = m.group("scheme").lower()
        host_text, port_text = _split_authority(m.group("authority"), text)
        host: str | None
        subdomains = False
        address: IPAddress | None = None
        if host_text == "*":
            host = None
        else:
            if host_text.startswith("*."):
                subdomains = True
                host_text = host_text[2:]
            if "*" in host_text:
                raise InvalidURL(
                    text, "'*' is allowed only as the whole first label: '*.example.com'"
                )
            host, address = _canonical_host(host_text, text)
            if subdomains and address is not None:
                raise InvalidURL(text, "a wildcard never matches IP addresses; name the IP exactly")
            if subdomains and "." not in host:
                raise InvalidURL(text, "a wildcard must cover a domain, e.g. '*.example.com'")
        if port_text is None:
            port: int | None = DEFAULT_PORTS[scheme]
        elif port_text == "*":
            port = None
        elif _PORT.fullmatch(port_text) and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            raise InvalidURL(text, f"port {port_text!r} is not a number from 1 to 65535 or '*'")
        raw_path = m.group("path")
        if m.group("query") is not None:
            raw_path += "?" + m.group("query")
        if not raw_path.startswith("/"):
            raise InvalidURL(text, "a URL pattern needs a path, e.g. 'https://example.com/*'")
        literal = _normalise_escapes(raw_path, _QUERY_SAFE, text)
        if any(seg in (".", "..") for seg in literal.split("?", 1)[0].split("/")):
            raise InvalidURL(text, "a URL pattern path must not contain '.' or '..' segments")
        regex = ".*".join(re.escape(part) for part in literal.split("*"))
        return URLPattern(
            text, scheme, host, subdomains, address, port, re.compile(regex, re.DOTALL)
        )

    def matches(self, url: CanonicalURL) -> bool:
        if url.scheme != self.scheme or (self.port is not None and url.port != self.port):
            return False
        if self.address is not None:
            if url.address != self.address:
                return False
        elif url.address is not None:
            return False  # names and wildcards never match IP literals
        elif self.host is not None:
            if self.subdomains:
                if url.host != self.host and not url.host.endswith("." + self.host):
                    return False
            elif url.host != self.host:
                return False
        return self.path.fullmatch(url.target) is not None

    def permits_address(self, address: IPAddress) -> bool:
        """May a connection for this pattern go to ``address`` (the resolved, pinned IP)?

        Public addresses always; a non-public one only when the pattern names that IP, or names
        ``localhost`` and the address is loopback.
        """
        if is_public_address(address):
            return True
        if self.address is not None:
            return address == self.address
        return self.host == "localhost" and address.is_loopback


@dataclass(frozen=True, slots=True)
class URLDecision:
    """Whether a URL may be fetched, which pattern decided it, and the canonical URL."""

    allowed: bool
    reason: str
    url: CanonicalURL | None = None
    pattern: URLPattern | None = None


class OutboundPolicy:
    """A plugin's outbound patterns, ready to answer ``match(url)``."""

    __slots__ = ("patterns",)

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.patterns = tuple(URLPattern.parse(p) for p in patterns)

    def match(self, url: str) -> URLDecision:
        """Decide on ``url``. Never raises for a bad URL: the decision says why it was refused."""
        try:
            canonical = canonicalize_url(url)
        except InvalidURL as exc:
            return URLDecision(False, f"refused: {exc.reason}")
        for pattern in self.patterns:
            if pattern.matches(canonical):
                return URLDecision(True, f"allowed by {pattern.text}", canonical, pattern)
        if not self.patterns:
            return URLDecision(False, "no outbound network permission is declared", canonical)
        return URLDecision(
            False, f"{canonical.url} matches none of the outbound patterns", canonical
        )
