"""Outbound URL permissions (DESIGN §4): canonicalisation, match patterns, address pinning."""

from __future__ import annotations

import ipaddress

import pytest

from autoweave_plugins.errors import InvalidURL
from autoweave_plugins.permissions.urls import (
    CanonicalURL,
    OutboundPolicy,
    URLDecision,
    URLPattern,
    canonicalize_url,
    is_public_address,
)

IP = ipaddress.ip_address


def canon(url: str) -> str:
    return canonicalize_url(url).url


def allowed(pattern: str, url: str) -> bool:
    return URLPattern.parse(pattern).matches(canonicalize_url(url))


# --------------------------------------------------------------------------- canonicalize_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/", "https://example.com/"),
        ("https://example.com", "https://example.com/"),
        ("HTTPS://EXAMPLE.COM/", "https://example.com/"),
        ("https://Example.Com./a", "https://example.com/a"),
        ("http://example.com:80/", "http://example.com/"),
        ("https://example.com:443/", "https://example.com/"),
        ("http://example.com:443/", "http://example.com:443/"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("https://example.com:00443/", "https://example.com/"),
        ("https://example.com?q=1", "https://example.com/?q=1"),
        ("https://example.com/a?b=c#frag", "https://example.com/a?b=c"),
        ("https://example.com/a#frag?x", "https://example.com/a"),
        ("https://example.com/a/./b/../c", "https://example.com/a/c"),
        ("https://example.com/a/b/..", "https://example.com/a/"),
        ("https://example.com/a/b/.", "https://example.com/a/b/"),
        ("https://example.com/../../etc", "https://example.com/etc"),
        ("https://example.com/%2e%2e/%2E%2E/etc", "https://example.com/etc"),
        ("https://example.com/a/.%2e/b", "https://example.com/b"),
        ("https://example.com/%7euser/%41", "https://example.com/~user/A"),
        ("https://example.com/a%2fb", "https://example.com/a%2Fb"),
        ("https://example.com/a%2Fb/..", "https://example.com/"),
        ("https://example.com/%252e%252e/x", "https://example.com/%252e%252e/x"),
        ("https://example.com/caf\u00e9", "https://example.com/caf%C3%A9"),
        ('https://example.com/a"b<c>', "https://example.com/a%22b%3Cc%3E"),
        ("https://example.com/?a=\u00e9&b=%2e", "https://example.com/?a=%C3%A9&b=."),
        ("https://example.com/?x=/../y", "https://example.com/?x=/../y"),
        ("https://example.com//double", "https://example.com//double"),
        ("https://xn--bcher-kva.example/", "https://xn--bcher-kva.example/"),
        ("https://b\u00fccher.example/", "https://xn--bcher-kva.example/"),
        ("https://B\u00dcCHER.example/", "https://xn--bcher-kva.example/"),
        (
            "https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d/",
            "https://example.com/",
        ),
        ("https://example\u3002com/", "https://example.com/"),
        ("https://exa\u00admple.com/", "https://example.com/"),
        ("https://stra\u00dfe.de/", "https://xn--strae-oqa.de/"),
        ("http://[::1]/", "http://[::1]/"),
        ("http://[0:0:0:0:0:0:0:1]:8080/", "http://[::1]:8080/"),
        ("http://[2001:DB8::A]/", "http://[2001:db8::a]/"),
        ("http://under_score.example/", "http://under_score.example/"),
    ],
)
def test_canonical_form(url: str, expected: str) -> None:
    assert canon(url) == expected


def test_canonical_fields() -> None:
    c = canonicalize_url("HTTPS://API.Example.COM.:8443/v1/%7e/x?q=%41#top")
    assert c == CanonicalURL("https", "api.example.com", None, 8443, "/v1/~/x", "q=A")
    assert c.target == "/v1/~/x?q=A"
    assert c.url == "https://api.example.com:8443/v1/~/x?q=A"


def test_canonical_empty_query_is_kept() -> None:
    c = canonicalize_url("https://example.com/a?")
    assert c.query == ""
    assert c.target == "/a?"
    assert c.url == "https://example.com/a?"


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7F.0x0.0x0.0x1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("10.0.65535", "10.0.255.255"),
        ("192.168.257", "192.168.1.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("00", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127.0.0.1"),
        ("\uff10\uff58\uff17\uff46.\uff11", "127.0.0.1"),
        ("169.254.169.254", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
    ],
)
def test_legacy_ipv4_spellings_are_addresses(host: str, address: str) -> None:
    c = canonicalize_url(f"http://{host}/")
    assert c.address == ipaddress.IPv4Address(address)
    assert c.host == address
    assert c.url == f"http://{address}/"


@pytest.mark.parametrize(
    "host",
    [
        "1.2.3.4.5",
        "256.0.0.1",
        "1.2.3.256",
        "1.2.65536",
        "1.16777216",
        "4294967296",
        "0x100000000",
        "08",
        "0189.0.0.1",
        "1..2",
        "a.1",
        "example.0x",
        "0xg.1",
        "127.0.0.1..",
    ],
)
def test_malformed_numeric_hosts_are_refused(host: str) -> None:
    with pytest.raises(InvalidURL):
        canonicalize_url(f"http://{host}/")


@pytest.mark.parametrize(
    "host",
    ["example.1a", "1a.example", "0x7f.example", "example.0x1g", "1.2.3.4.example.com"],
)
def test_hosts_not_ending_in_a_number_are_names(host: str) -> None:
    c = canonicalize_url(f"http://{host}/")
    assert c.address is None
    assert c.host == host


@pytest.mark.parametrize(
    "url",
    [
        # scheme
        "ftp://example.com/",
        "file:///etc/passwd",
        "javascript://example.com/",
        "ws://example.com/",
        "example.com/path",
        "//example.com/",
        "https:/example.com/",
        "https:example.com/",
        # userinfo
        "https://user@example.com/",
        "https://user:pw@example.com/",
        "https://@example.com/",
        "https://example.com@evil.com/",
        "https://evil.com:443@example.com/",
        # backslashes
        "https://example.com\\@evil.com/",
        "https://example.com/a\\b",
        "https://example.com/?a=\\",
        "https:\\\\example.com/",
        # whitespace and control characters
        "https://exa mple.com/",
        " https://example.com/",
        "https://example.com/ ",
        "https://example.com/a b",
        "https://example.com/\t",
        "https://example.com/\n",
        "https://example.com/\r\nHost: evil",
        "https://example.com\x00.evil.com/",
        "https://example.com/\x7f",
        "https://example.com/\x85",
        "https://example.com/\u00a0",
        "https://example.com/\u2028",
        "https://example.com/\u3000",
        "https://example.com/#\x01",
        # host
        "https:///path",
        "https://:443/",
        "https://exa%6dple.com/",
        "https://example.com%00.evil.com/",
        "https://[::1%25eth0]/",
        "https://[::1/",
        "https://[::1]x/",
        "https://[not-v6]/",
        "https://-bad.example/",
        "https://bad-.example/",
        "https://a..b/",
        "https://*.example.com/",
        "https://ex*ample.com/",
        "https://xn--zz.example/",
        "https://" + "a" * 64 + ".com/",
        "https://" + ".".join(["abcdefghi"] * 26) + "/",
        "https://..example.com/",
        "https://./",
        "https://exa\u2044mple.com/",
        # port
        "https://example.com:/",
        "https://example.com:0/",
        "https://example.com:65536/",
        "https://example.com:123456/",
        "https://example.com:-1/",
        "https://example.com:+80/",
        "https://example.com:8o/",
        "https://example.com:80:80/",
        "https://example.com:*/",
        # percent escapes
        "https://example.com/%",
        "https://example.com/%2",
        "https://example.com/%zz",
        "https://example.com/?q=%g0",
        # length
        "https://example.com/" + "a" * 8200,
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(InvalidURL) as info:
        canonicalize_url(url)
    assert info.value.reason
    assert isinstance(info.value, ValueError)


def test_refusal_reasons_name_the_problem() -> None:
    def reason(url: str) -> str:
        with pytest.raises(InvalidURL) as info:
            canonicalize_url(url)
        return info.value.reason

    assert "user" in reason("https://u:p@example.com/")
    assert "backslash" in reason("https://example.com\\x/")
    assert "whitespace" in reason("https://example.com/a b")
    assert "ftp" in reason("ftp://example.com/")
    assert "port" in reason("https://example.com:99999/")
    assert "%" in reason("https://example.com/%zz")


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidURL):
        canonicalize_url(b"https://example.com/")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a/../b?x=%41",
        "https://B\u00fccher.example./",
        "http://0x7f.1:80/",
        "http://[::FFFF:127.0.0.1]/%2e%2e/x",
        "https://example.com/caf\u00e9?q=\u00e9#f",
    ],
)
def test_canonicalisation_is_idempotent(url: str) -> None:
    once = canonicalize_url(url)
    assert canonicalize_url(once.url) == once


# --------------------------------------------------------------------------- URLPattern.parse


def test_parse_exact_host() -> None:
    p = URLPattern.parse("https://API.Example.com/v1/*")
    assert p.text == "https://API.Example.com/v1/*"
    assert (p.scheme, p.host, p.subdomains, p.address, p.port) == (
        "https",
        "api.example.com",
        False,
        None,
        443,
    )


def test_parse_wildcards() -> None:
    sub = URLPattern.parse("http://*.example.com:*/*")
    assert (sub.scheme, sub.host, sub.subdomains, sub.port) == ("http", "example.com", True, None)
    anyhost = URLPattern.parse("https://*/*")
    assert (anyhost.host, anyhost.subdomains, anyhost.address) == (None, False, None)
    assert anyhost.port == 443


def test_parse_ip_literals() -> None:
    v4 = URLPattern.parse("http://0x7f.1:8080/*")
    assert v4.address == ipaddress.IPv4Address("127.0.0.1")
    assert v4.host == "127.0.0.1"
    assert v4.port == 8080
    v6 = URLPattern.parse("http://[0::1]/*")
    assert v6.address == ipaddress.IPv6Address("::1")
    assert v6.host == "[::1]"


def test_parse_idna_host() -> None:
    assert URLPattern.parse("https://*.b\u00fccher.example/*").host == "xn--bcher-kva.example"


def test_parse_is_cached() -> None:
    assert URLPattern.parse("https://cached.example/*") is URLPattern.parse(
        "https://cached.example/*"
    )


@pytest.mark.parametrize(
    "pattern",
    [
        "ftp://example.com/*",
        "*://example.com/*",
        "https://example.com",
        "https://example.com?x=*",
        "https://example.com/*#frag",
        "https://user@example.com/*",
        "https://example.com\\/*",
        "https://example.com/ *",
        "https://example.com/\t*",
        "https://*example.com/*",
        "https://ex*.com/*",
        "https://*.*.example.com/*",
        "https://api.*.example.com/*",
        "https://example.*/*",
        "https://*./*",
        "https://*.com/*",
        "https://*.localhost/*",
        "https://*.127.0.0.1/*",
        "https://*.0x7f.1/*",
        "https://*.[::1]/*",
        "https://*.1.2.3/*",
        "https://example.com:0/*",
        "https://example.com:65536/*",
        "https://example.com:/*",
        "https://example.com:**/*",
        "https://example.com/v1/../admin/*",
        "https://example.com/v1/./*",
        "https://example.com/v1/%2e%2e/*",
        "https://example.com/v1/%2E/*",
        "https://example.com/..",
        "https://example.com/%zz/*",
        "https:///*",
        "https://exa%6dple.com/*",
        "https://[::1/*",
    ],
)
def test_parse_refuses_bad_patterns(pattern: str) -> None:
    with pytest.raises(InvalidURL):
        URLPattern.parse(pattern)


def test_wildcard_ip_refusal_reason() -> None:
    with pytest.raises(InvalidURL) as info:
        URLPattern.parse("https://*.10.0.0.1/*")
    assert "IP" in info.value.reason


# --------------------------------------------------------------------------- URLPattern.matches


@pytest.mark.parametrize(
    ("pattern", "url"),
    [
        ("https://api.example.com/*", "https://api.example.com/"),
        ("https://api.example.com/*", "https://api.example.com"),
        ("https://api.example.com/*", "https://API.EXAMPLE.COM./x/y?z=1"),
        ("https://api.example.com/*", "https://api.example.com:443/x"),
        ("https://api.example.com:443/*", "https://api.example.com/x"),
        ("https://api.example.com:8443/*", "https://api.example.com:8443/x"),
        ("https://api.example.com:*/*", "https://api.example.com:1/x"),
        ("https://api.example.com:*/*", "https://api.example.com/x"),
        ("HTTPS://API.example.com/*", "https://api.example.com/x"),
        ("https://*.example.com/*", "https://example.com/"),
        ("https://*.example.com/*", "https://a.example.com/"),
        ("https://*.example.com/*", "https://a.b.c.example.com/"),
        ("https://*.example.com/*", "https://A.Example.COM./"),
        ("https://*.example.com/*", "https://\uff41.example.com/"),
        ("https://*.b\u00fccher.example/*", "https://www.xn--bcher-kva.example/"),
        ("https://*/*", "https://anything.example/"),
        ("https://*/*", "https://localhost/"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/users/7?full=1"),
        ("https://api.example.com/v1/*", "https://api.example.com/v2/../v1/x"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/a/../b"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/%7Ex"),
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("https://api.example.com/v1", "https://api.example.com/v1#fragment"),
        ("https://api.example.com/*/info", "https://api.example.com/x/y/info"),
        ("https://api.example.com/a*b", "https://api.example.com/ab"),
        ("https://api.example.com/search?q=*", "https://api.example.com/search?q=cats"),
        ("https://api.example.com/%7E*", "https://api.example.com/~me"),
        ("https://api.example.com/caf\u00e9/*", "https://api.example.com/caf%c3%a9/x"),
        ("https://api.example.com/.well-known/*", "https://api.example.com/.well-known/x"),
        ("http://127.0.0.1/*", "http://0x7f.1/"),
        ("http://127.0.0.1/*", "http://2130706433/"),
        ("http://0177.0.0.1/*", "http://127.0.0.1/"),
        ("http://[::1]:8080/*", "http://[0:0::1]:8080/x"),
        ("http://localhost:8080/*", "http://LOCALHOST.:8080/x"),
    ],
)
def test_matches(pattern: str, url: str) -> None:
    assert allowed(pattern, url)


@pytest.mark.parametrize(
    ("pattern", "url"),
    [
        # scheme and port
        ("https://api.example.com/*", "http://api.example.com/"),
        ("http://api.example.com/*", "https://api.example.com/"),
        ("https://api.example.com/*", "https://api.example.com:8443/"),
        ("https://api.example.com/*", "https://api.example.com:80/"),
        ("https://api.example.com:8443/*", "https://api.example.com/"),
        ("http://api.example.com/*", "http://api.example.com:443/"),
        # exact host
        ("https://api.example.com/*", "https://example.com/"),
        ("https://api.example.com/*", "https://x.api.example.com/"),
        ("https://api.example.com/*", "https://api.example.com.evil.net/"),
        ("https://api.example.com/*", "https://api-example.com/"),
        ("https://api.example.com/*", "https://apiexample.com/"),
        # subdomain wildcard: label boundary only
        ("https://*.example.com/*", "https://evilexample.com/"),
        ("https://*.example.com/*", "https://evil-example.com/"),
        ("https://*.example.com/*", "https://example.com.evil.net/"),
        ("https://*.example.com/*", "https://example.co/"),
        ("https://*.example.com/*", "https://example.comm/"),
        ("https://*.example.com/*", "https://xexample.com/"),
        ("https://*.example.com/*", "https://com/"),
        # wildcards never match IP literals
        ("https://*/*", "https://127.0.0.1/"),
        ("https://*/*", "https://0x7f.1/"),
        ("https://*/*", "https://2130706433/"),
        ("https://*/*", "https://[::1]/"),
        ("https://*/*", "https://[::ffff:127.0.0.1]/"),
        ("https://*/*", "https://8.8.8.8/"),
        ("http://*:*/*", "http://169.254.169.254/latest/meta-data/"),
        ("http://*:*/*", "http://0xa9fea9fe/"),
        # named hosts never match IP literals, and IPs only their own address
        ("http://localhost/*", "http://127.0.0.1/"),
        ("http://127.0.0.1/*", "http://127.0.0.2/"),
        ("http://127.0.0.1/*", "http://localhost/"),
        ("http://127.0.0.1/*", "http://[::ffff:127.0.0.1]/"),
        ("http://[::1]/*", "http://127.0.0.1/"),
        # paths
        ("https://api.example.com/v1/*", "https://api.example.com/v1"),
        ("https://api.example.com/v1/*", "https://api.example.com/v10/"),
        ("https://api.example.com/v1/*", "https://api.example.com/admin"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/../admin"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/%2e%2e/admin"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/%2E%2E/admin"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/.%2e/admin"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/x/../../admin"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/.."),
        ("https://api.example.com/v1/*", "https://api.example.com/V1/x"),
        ("https://api.example.com/v1/*", "https://api.example.com/%76%31/../x"),
        ("https://api.example.com/v1", "https://api.example.com/v1/"),
        ("https://api.example.com/v1", "https://api.example.com/v1?x"),
        ("https://api.example.com/a*b", "https://api.example.com/a/c"),
        ("https://api.example.com/%2A", "https://api.example.com/anything"),
        ("https://api.example.com/search?q=*", "https://api.example.com/search"),
        ("https://api.example.com/search?q=*", "https://api.example.com/search?r=1"),
    ],
)
def test_does_not_match(pattern: str, url: str) -> None:
    assert not allowed(pattern, url)


def test_percent_escaped_star_in_pattern_is_literal() -> None:
    assert allowed("https://api.example.com/%2a", "https://api.example.com/%2A")
    assert allowed("https://api.example.com/%2A", "https://api.example.com/%2a")
    assert not allowed("https://api.example.com/%2a", "https://api.example.com/x")


def test_glob_regex_characters_are_literal() -> None:
    assert allowed("https://api.example.com/a.c", "https://api.example.com/a.c")
    assert not allowed("https://api.example.com/a.c", "https://api.example.com/abc")
    assert allowed("https://api.example.com/(x)+$", "https://api.example.com/(x)+$")
    assert not allowed("https://api.example.com/(x)+$", "https://api.example.com/xx")


# --------------------------------------------------------------------------- permits_address


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888", "::ffff:8.8.8.8"]
)
@pytest.mark.parametrize(
    "pattern",
    [
        "https://api.example.com/*",
        "https://*.example.com/*",
        "https://*/*",
        "http://localhost/*",
        "http://10.0.0.1/*",
    ],
)
def test_public_addresses_are_always_permitted(pattern: str, address: str) -> None:
    assert URLPattern.parse(pattern).permits_address(IP(address))


NON_PUBLIC = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.1",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2001:db8::1",
    # IPv6 addresses that embed a non-public IPv4 address
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::a00:1",
    "2002:7f00:1::",
    "2002:a00:1::1",
    "::7f00:1",
    "::a00:1",
]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_is_public_address_refuses_non_public(address: str) -> None:
    assert not is_public_address(IP(address))


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2001:4860:4860::8888",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_is_public_address_accepts_public(address: str) -> None:
    assert is_public_address(IP(address))


@pytest.mark.parametrize("address", NON_PUBLIC)
@pytest.mark.parametrize(
    "pattern",
    ["https://api.example.com/*", "https://*.example.com/*", "https://*/*", "https://*:*/*"],
)
def test_name_patterns_never_permit_non_public(pattern: str, address: str) -> None:
    assert not URLPattern.parse(pattern).permits_address(IP(address))


def test_pattern_naming_an_ip_permits_exactly_that_ip() -> None:
    p = URLPattern.parse("http://10.0.0.5:8080/*")
    assert p.permits_address(IP("10.0.0.5"))
    assert not p.permits_address(IP("10.0.0.6"))
    assert not p.permits_address(IP("127.0.0.1"))
    assert not p.permits_address(IP("::ffff:10.0.0.6"))
    legacy = URLPattern.parse("http://0x7f.1/*")
    assert legacy.permits_address(IP("127.0.0.1"))
    assert not legacy.permits_address(IP("127.0.0.2"))
    v6 = URLPattern.parse("http://[fd00::7]/*")
    assert v6.permits_address(IP("fd00::7"))
    assert not v6.permits_address(IP("fd00::8"))


def test_localhost_pattern_permits_only_loopback() -> None:
    p = URLPattern.parse("http://localhost:8080/*")
    assert p.permits_address(IP("127.0.0.1"))
    assert p.permits_address(IP("::1"))
    assert not p.permits_address(IP("10.0.0.1"))
    assert not p.permits_address(IP("192.168.0.1"))
    assert not p.permits_address(IP("169.254.169.254"))
    assert not p.permits_address(IP("fe80::1"))
    # only the exact name 'localhost', not a name that merely ends with it
    assert not URLPattern.parse("http://app.localhost/*").permits_address(IP("127.0.0.1"))


# --------------------------------------------------------------------------- OutboundPolicy


def test_policy_allows_and_names_the_pattern() -> None:
    policy = OutboundPolicy(["https://api.example.com/v1/*", "https://*.cdn.example/*"])
    d = policy.match("https://static.cdn.example/img.png")
    assert d.allowed
    assert d.pattern is policy.patterns[1]
    assert d.pattern is not None
    assert d.pattern.text == "https://*.cdn.example/*"
    assert d.reason == "allowed by https://*.cdn.example/*"
    assert d.url == canonicalize_url("https://static.cdn.example/img.png")


def test_policy_first_matching_pattern_decides() -> None:
    policy = OutboundPolicy(["https://*.example.com/*", "https://api.example.com/*"])
    d = policy.match("https://api.example.com/x")
    assert d.allowed
    assert d.pattern is not None
    assert d.pattern.text == "https://*.example.com/*"


def test_policy_accepts_tuple_and_keeps_order() -> None:
    policy = OutboundPolicy(("https://a.example/*", "https://b.example/*"))
    assert [p.text for p in policy.patterns] == ["https://a.example/*", "https://b.example/*"]


def test_policy_refuses_unmatched_with_canonical_url() -> None:
    policy = OutboundPolicy(["https://api.example.com/v1/*"])
    d = policy.match("https://API.example.com/v1/%2e%2e/admin")
    assert not d.allowed
    assert d.pattern is None
    assert d.url is not None
    assert d.url.url == "https://api.example.com/admin"
    assert "https://api.example.com/admin" in d.reason
    assert "none of the outbound patterns" in d.reason


def test_policy_without_patterns_refuses_everything() -> None:
    d = OutboundPolicy([]).match("https://example.com/")
    assert d == URLDecision(
        False,
        "no outbound network permission is declared",
        canonicalize_url("https://example.com/"),
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://user@api.example.com/v1/x",
        "https://api.example.com\\@evil.com/v1/x",
        "https://api.example.com/v1/x y",
        "https://api.example.com/v1/\r\n",
        "ftp://api.example.com/v1/x",
        "https://api.example.com:99999/v1/x",
        "not a url",
        "",
    ],
)
def test_policy_never_raises_on_bad_urls(url: str) -> None:
    d = OutboundPolicy(["https://api.example.com/*", "https://*/*"]).match(url)
    assert not d.allowed
    assert d.reason.startswith("refused: ")
    assert d.url is None
    assert d.pattern is None


def test_policy_construction_rejects_bad_patterns() -> None:
    with pytest.raises(InvalidURL):
        OutboundPolicy(["https://api.example.com/*", "https://*example.com/*"])


def test_policy_ip_urls_need_an_ip_pattern() -> None:
    policy = OutboundPolicy(["https://*/*", "http://*:*/*", "http://*.example.com/*"])
    for url in ["http://127.0.0.1/", "http://0x7f.1/", "https://[::1]/", "http://10.1/"]:
        d = policy.match(url)
        assert not d.allowed, url
        assert d.url is not None
        assert d.url.address is not None
    named = OutboundPolicy(["http://10.0.0.1/*"])
    assert named.match("http://10.1/").allowed
    assert named.match("http://012.0.0.01/").allowed
    assert not named.match("http://10.0.0.2/").allowed


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1/..%2Fadmin",
        "https://api.example.com/v1/..%2fadmin",
        "https://api.example.com/v1/..%5Cadmin",
        "https://api.example.com/v1/..;/admin",
        "https://api.example.com/v1/.%2F..%2Fadmin",
        "https://api.example.com/v1/%2e%2e%2f%2e%2e/admin",
    ],
)
def test_dot_segments_hidden_behind_encoded_separators_are_refused(url: str) -> None:
    decision = OutboundPolicy(["https://api.example.com/v1/*"]).match(url)
    assert not decision.allowed and "dot segment" in decision.reason
