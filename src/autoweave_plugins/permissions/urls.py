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
  segments removed, so ``/v1/%2e%2e/admin`` cannot pass for ``/v1/*``; matching is linear in the
  URL (``globs``), since it runs on the host's event loop on URLs a plugin chose;
* ``*.d`` is refused when ``d`` is a public suffix (``*.co.uk``, ``*.github.io``: ``suffixes``).

What is matched is exactly what the broker sends: ``CanonicalURL.url``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from autoweave_plugins.errors import InvalidURL
from autoweave_plugins.permissions.globs import MAX_GLOB_STARS, glob_matches, split_glob
from autoweave_plugins.permissions.hosts import IPAddress, canonical_host
from autoweave_plugins.permissions.suffixes import is_public_suffix

__all__ = [
    "MAX_PATTERN_LENGTH",
    "MAX_URL_LENGTH",
    "CanonicalURL",
    "OutboundPolicy",
    "URLDecision",
    "URLPattern",
    "canonicalize_url",
    "is_public_address",
    "is_public_suffix_wildcard",
]

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 8192
MAX_PATTERN_LENGTH = 2048

_URL_SHAPE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)"
    r"(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?(?:#(?P<fragment>.*))?",
    re.DOTALL,
)
_PORT = re.compile(r"[0-9]{1,5}")
_PERCENT = re.compile(r"%(?P<hex>[0-9A-Fa-f]{2})?")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar minus '%' (handled separately), plus '/' and, for the query, '?'.
_PATH_SAFE = frozenset(_UNRESERVED | set("!$&'()*+,;=:@/"))
_QUERY_SAFE = frozenset(_PATH_SAFE | {"?"})


def _refuse_bad_characters(text: str, what: str, limit: int = MAX_URL_LENGTH) -> None:
    if len(text) > limit:
        raise InvalidURL(text[:64] + "…", f"{what} is longer than {limit} characters")
    for ch in text:
        if ch == "\\":
            raise InvalidURL(text, f"{what} contains a backslash")
        if ch <= " " or ch == "\x7f" or ch.isspace() or ("\x80" <= ch <= "\x9f"):
            raise InvalidURL(text, f"{what} contains whitespace or a control character")


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


def _split(url: str, what: str, limit: int = MAX_URL_LENGTH) -> re.Match[str]:
    if not isinstance(url, str):
        raise InvalidURL(repr(url), f"{what} must be a string")
    _refuse_bad_characters(url, what, limit)
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
    host, address = canonical_host(host_text, url)
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
    path_glob: tuple[str, ...]  # literal parts of the path-and-query glob around each '*'

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def parse(text: str) -> URLPattern:
        """Parse a pattern or raise ``InvalidURL`` saying what is wrong with it."""
        m = _split(text, "URL pattern", MAX_PATTERN_LENGTH)
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
            host, address = canonical_host(host_text, text)
            if subdomains and address is not None:
                raise InvalidURL(text, "a wildcard never matches IP addresses; name the IP exactly")
            if subdomains and is_public_suffix(host):
                raise InvalidURL(
                    text,
                    f"{host!r} is a public suffix, so '*.{host}' would match sites of unrelated "
                    "owners; a wildcard must cover one registered domain, e.g. '*.example.com'",
                )
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
        glob = split_glob(literal)
        if len(glob) - 1 > MAX_GLOB_STARS:
            raise InvalidURL(
                text, f"the path has {len(glob) - 1} '*' wildcards; at most {MAX_GLOB_STARS}"
            )
        return URLPattern(text, scheme, host, subdomains, address, port, glob)

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
        return glob_matches(self.path_glob, url.target)

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


def is_public_suffix_wildcard(pattern: URLPattern) -> bool:
    """Is ``pattern`` a wildcard over a public suffix (``*.co.uk``)? ``URLPattern.parse`` refuses
    these, so only a pattern built another way can be one; a policy may check it again."""
    return pattern.subdomains and pattern.host is not None and is_public_suffix(pattern.host)


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
