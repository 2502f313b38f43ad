"""Generated URLs against the outbound matching rules of DESIGN §4, bypass classes included."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from autoweave_plugins.errors import InvalidURL
from autoweave_plugins.permissions.urls import (
    OutboundPolicy,
    URLPattern,
    canonicalize_url,
    is_public_address,
)

SETTINGS = settings(max_examples=200, deadline=None)

WILDCARD = URLPattern.parse("https://*.example.com/*")
ANY_HOST = URLPattern.parse("https://*:*/*")
ANY_HOST_HTTP = URLPattern.parse("http://*:*/*")
EXACT = URLPattern.parse("https://api.example.com/*")
V1 = URLPattern.parse("https://api.example.com/v1/*")

# A DNS label that is a name, never a number: starts with a letter, no '--' (IDNA reserves it).
LOWER = "abcdefghijklmnopqrstuvwxyz"
_words = st.builds(
    str.__add__, st.sampled_from(LOWER), st.text(alphabet=LOWER + "0123456789", max_size=7)
)
labels = st.lists(_words, min_size=1, max_size=2).map("-".join)
hosts = st.lists(labels, min_size=1, max_size=4).map(".".join)
prefixes = st.lists(labels, min_size=1, max_size=3).map(".".join)


def matches(pattern: URLPattern, url: str) -> bool:
    try:
        return pattern.matches(canonicalize_url(url))
    except InvalidURL:
        return False


# --------------------------------------------------------------------------- label boundary


@SETTINGS
@given(prefix=prefixes, port=st.sampled_from(["", ":443"]), path=st.sampled_from(["", "/", "/a?b"]))
def test_any_subdomain_matches_wildcard(prefix: str, port: str, path: str) -> None:
    assert WILDCARD.matches(canonicalize_url(f"https://{prefix}.example.com{port}{path}"))
    assert WILDCARD.matches(canonicalize_url(f"https://{prefix.upper()}.EXAMPLE.com.{path}"))


@SETTINGS
@given(
    glue=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12),
    evil=hosts,
)
def test_wildcard_respects_label_boundary(glue: str, evil: str) -> None:
    for host in (
        f"{glue}example.com",  # evilexample.com, -example.com
        f"{evil}{glue}example.com",
        f"example.com.{evil}",  # example.com.evil.net
        f"example.com{glue}",  # example.comx
        f"example.com-{evil}",
        f"{evil}.example.com{glue}",
        f"{evil}.example.com.{evil}",
        f"{evil}.example.co",
    ):
        url = f"https://{host}/"
        assert not matches(WILDCARD, url), url
        assert not matches(EXACT, url), url


@SETTINGS
@given(host=hosts)
def test_exact_pattern_matches_only_its_host(host: str) -> None:
    assume(host != "api.example.com")
    assert not matches(EXACT, f"https://{host}/")
    assert not matches(EXACT, f"https://{host}.api.example.com/")
    assert not matches(EXACT, f"https://api.example.com.{host}/")


# --------------------------------------------------------------------------- IP literals


def _render_part(value: int, radix: str) -> str:
    if radix == "hex":
        return hex(value)
    if radix == "HEX":
        return "0X" + format(value, "X")
    if radix == "oct":
        return "0" + format(value, "o")
    return str(value)


@st.composite
def ipv4_spellings(draw: st.DrawFn) -> tuple[ipaddress.IPv4Address, str]:
    """An IPv4 address and one of its legacy spellings: a.b.c.d, a.b.c, a.b, a, in any radix."""
    address = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
    octets = list(address.packed)
    parts = draw(st.integers(1, 4))
    values = octets[: parts - 1]
    tail = int.from_bytes(bytes(octets[parts - 1 :]), "big")
    radixes = st.sampled_from(["dec", "hex", "HEX", "oct"])
    spelled = [_render_part(v, draw(radixes)) for v in [*values, tail]]
    text = ".".join(spelled)
    if draw(st.booleans()):
        text += "."
    return address, text


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@SETTINGS
@given(spelling=ipv4_spellings(), wide=st.booleans())
def test_every_ipv4_spelling_is_the_same_address(
    spelling: tuple[ipaddress.IPv4Address, str], wide: bool
) -> None:
    address, text = spelling
    host = _fullwidth(text) if wide else text
    c = canonicalize_url(f"http://{host}/")
    assert c.address == address
    assert c.host == str(address)
    assert c == canonicalize_url(f"http://{address}/")
    # a pattern naming the address in its plainest form matches every spelling, and the other way
    assert URLPattern.parse(f"http://{address}/*").matches(c)
    assert URLPattern.parse(f"http://{text}/*").matches(canonicalize_url(f"http://{address}/"))


@SETTINGS
@given(spelling=ipv4_spellings(), scheme=st.sampled_from(["http", "https"]))
def test_wildcards_never_match_ip_literals(
    spelling: tuple[ipaddress.IPv4Address, str], scheme: str
) -> None:
    address, text = spelling
    for host in (text, f"[::ffff:{address}]", f"[{ipaddress.IPv6Address(int(address))}]"):
        c = canonicalize_url(f"{scheme}://{host}/x")
        assert c.address is not None
        for pattern in (WILDCARD, ANY_HOST, ANY_HOST_HTTP, EXACT):
            assert not pattern.matches(c)
        assert (
            not OutboundPolicy(["https://*/*", "http://*/*", "https://*:*/*", "http://*:*/*"])
            .match(f"{scheme}://{host}/x")
            .allowed
        )


@SETTINGS
@given(spelling=ipv4_spellings())
def test_wildcard_pattern_cannot_name_an_address(
    spelling: tuple[ipaddress.IPv4Address, str],
) -> None:
    _, text = spelling
    with pytest.raises(InvalidURL):
        URLPattern.parse(f"https://*.{text}/*")


@SETTINGS
@given(value=st.integers(0, 2**32 - 1))
def test_non_public_ipv4_is_never_public_in_ipv6_clothing(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    if is_public_address(v4):
        return
    for v6 in (
        ipaddress.IPv6Address(f"::ffff:{v4}"),
        ipaddress.IPv6Address(f"64:ff9b::{v4}"),
        ipaddress.IPv6Address((0x2002 << 112) | (value << 80) | 1),
        ipaddress.IPv6Address(value),
    ):
        assert not is_public_address(v6), v6
        assert not EXACT.permits_address(v6)


# --------------------------------------------------------------------------- refused characters

url_chars = st.characters(
    min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\#%@[]"
) | st.characters(min_codepoint=0xA1)
plain_urls = st.builds(
    lambda host, path: f"https://{host}/{path}",
    hosts,
    st.text(url_chars, max_size=20),
)
bad_chars = (
    st.characters(categories=["Cc", "Zs", "Zl", "Zp"])
    | st.just("\\")
    | st.sampled_from(
        [" ", "\t", "\n", "\r", "\x00", "\x0b", "\x0c", "\x7f", "\x85", "\u00a0", "\u3000"]
    )
)


@SETTINGS
@given(url=plain_urls, bad=bad_chars, where=st.integers(min_value=0))
def test_whitespace_controls_and_backslashes_are_refused_anywhere(
    url: str, bad: str, where: int
) -> None:
    at = where % (len(url) + 1)
    dirty = url[:at] + bad + url[at:]
    with pytest.raises(InvalidURL):
        canonicalize_url(dirty)
    d = OutboundPolicy(["https://*/*", "https://*:*/*"]).match(dirty)
    assert not d.allowed
    assert d.reason.startswith("refused: ")
    with pytest.raises(InvalidURL):
        URLPattern.parse(dirty)


@SETTINGS
@given(
    host=hosts,
    user=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#@\\"),
        max_size=10,
    ),
    password=st.none()
    | st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#@\\"),
        max_size=10,
    ),
    port=st.sampled_from(["", ":443", ":8443"]),
)
def test_userinfo_is_always_refused(host: str, user: str, password: str | None, port: str) -> None:
    userinfo = user if password is None else f"{user}:{password}"
    for url in (
        f"https://{userinfo}@{host}{port}/",
        f"https://{host}{port}@api.example.com/",
        f"https://api.example.com@{host}{port}/",
    ):
        with pytest.raises(InvalidURL):
            canonicalize_url(url)
        assert not OutboundPolicy(["https://*/*", "https://*:*/*"]).match(url).allowed


# --------------------------------------------------------------------------- canonical form

path_pieces = st.sampled_from(
    [
        ".",
        "..",
        "%2e",
        "%2E",
        ".%2e",
        "%2e%2E",
        "a",
        "B",
        "~",
        "%7e",
        "%41",
        "%2f",
        "%2F",
        "%25",
        "caf\u00e9",
        "\u2603",
        "x y".replace(" ", "%20"),
        "<>",
        '"',
        "{}",
        "|",
        "^",
        "`",
        "''",
        "a;b=c",
        "@",
        ":",
        "",
        "*",
        "+",
        "!$&()",
    ]
)
paths = st.lists(st.lists(path_pieces, max_size=3).map("".join), max_size=6).map(
    lambda segs: "/" + "/".join(segs)
)
queries = st.none() | st.lists(path_pieces | st.sampled_from(["?", "/", "=", "&"]), max_size=5).map(
    "".join
)
unicode_hosts = st.sampled_from(
    [
        "b\u00fccher.example",
        "\u4f8b\u3048.jp",
        "stra\u00dfe.de",
        "\u0645\u062b\u0627\u0644.eg",
        "caf\u00e9.example",
        "xn--bcher-kva.example",
        "EXAMPLE.com",
        "example.com.",
    ]
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "Https"]))
    host = draw(hosts | unicode_hosts | ipv4_spellings().map(lambda s: s[1]))
    host = draw(st.sampled_from([host, host.upper(), _fullwidth(host)]))
    port = draw(st.sampled_from(["", ":80", ":443", ":8080", ":00080"]))
    query = draw(queries)
    fragment = draw(st.none() | st.text(url_chars, max_size=5))
    url = f"{scheme}://{host}{port}{draw(paths)}"
    if query is not None:
        url += "?" + query
    if fragment is not None:
        url += "#" + fragment
    return url


@SETTINGS
@given(url=urls())
def test_canonicalisation_is_idempotent(url: str) -> None:
    try:
        once = canonicalize_url(url)
    except InvalidURL:
        assume(False)
        raise
    assert canonicalize_url(once.url) == once
    assert canonicalize_url(once.url).url == once.url
    assert once.url == once.url.strip()
    assert once.host == once.host.lower()
    assert not once.host.endswith(".")
    assert once.url.isascii()
    segments = once.path.split("/")
    assert "." not in segments
    assert ".." not in segments


@SETTINGS
@given(host=hosts, form=st.sampled_from(["upper", "title", "dot", "wide", "wide-dot", "ideo"]))
def test_host_variants_canonicalise_to_the_same_host(host: str, form: str) -> None:
    variant = {
        "upper": host.upper(),
        "title": host.title(),
        "dot": host + ".",
        "wide": _fullwidth(host),
        "wide-dot": _fullwidth(host) + "\uff0e",
        "ideo": host.replace(".", "\u3002"),
    }[form]
    c = canonicalize_url(f"https://{variant}/")
    assert c.host == host
    assert c == canonicalize_url(f"https://{host}/")
    assert URLPattern.parse(f"https://{host}/*").matches(c)
    sub = variant.rstrip(".\uff0e")
    assert WILDCARD.matches(canonicalize_url(f"https://{sub}.example.com/"))


# --------------------------------------------------------------------------- dot segments

dot_segments = st.sampled_from(
    [
        ".",
        "..",
        "%2e",
        "%2E",
        "%2e%2e",
        "%2E%2E",
        ".%2e",
        "%2e.",
        ".%2E",
        "%2E.",
        "v1",
        "x",
        "admin",
        "",
    ]
)


def _rfc3986_remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, written as the RFC's input/output buffer loop (an independent oracle)."""
    out = ""
    buf = path
    while buf:
        if buf.startswith("../"):
            buf = buf[3:]
        elif buf.startswith("./") or buf.startswith("/./"):
            buf = buf[2:]
        elif buf == "/.":
            buf = "/"
        elif buf.startswith("/../"):
            buf = buf[3:]
            out = out[: out.rfind("/")] if "/" in out else ""
        elif buf == "/..":
            buf = "/"
            out = out[: out.rfind("/")] if "/" in out else ""
        elif buf in (".", ".."):
            buf = ""
        else:
            start = 1 if buf.startswith("/") else 0
            end = buf.find("/", start)
            end = len(buf) if end < 0 else end
            out += buf[:end]
            buf = buf[end:]
    return out


@SETTINGS
@given(segments=st.lists(dot_segments, max_size=8), query=st.none() | st.just("q=/v1/"))
def test_dot_segments_never_escape_a_path_prefix(segments: list[str], query: str | None) -> None:
    raw = "/v1/" + "/".join(segments)
    url = f"https://api.example.com{raw}" + ("" if query is None else f"?{query}")
    c = canonicalize_url(url)
    decoded = raw.replace("%2e", ".").replace("%2E", ".")
    expected = _rfc3986_remove_dot_segments(decoded)
    assert c.path == expected
    assert V1.matches(c) == expected.startswith("/v1/")
    if V1.matches(c):
        assert c.path.startswith("/v1/")
        assert not {".", ".."} & set(c.path.split("/"))
    assert OutboundPolicy(["https://api.example.com/v1/*"]).match(url).allowed == V1.matches(c)


@SETTINGS
@given(
    prefix=st.lists(dot_segments, max_size=4),
    escape=st.sampled_from(["..", "%2e%2e", ".%2E", "%2E."]),
)
def test_enough_dot_dots_always_leave_v1(prefix: list[str], escape: str) -> None:
    # one '..' per segment that could be a name, plus one for 'v1' itself
    climb = "/".join([escape] * (len(prefix) + 2))
    url = "https://api.example.com/v1/" + "/".join([*prefix, climb, "admin"])
    assert not V1.matches(canonicalize_url(url))
    assert canonicalize_url(url).path.endswith("/admin")
