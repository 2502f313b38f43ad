"""Outbound patterns: linear-time path globs, bounded patterns, no wildcards over public suffixes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from autoweave_plugins.errors import InvalidURL
from autoweave_plugins.manifest import check_manifest_bytes
from autoweave_plugins.permissions.globs import MAX_GLOB_STARS
from autoweave_plugins.permissions.urls import (
    MAX_PATTERN_LENGTH,
    MAX_URL_LENGTH,
    OutboundPolicy,
    URLPattern,
    canonicalize_url,
    is_public_suffix_wildcard,
)

HOST = "https://x.example.com"


def best_of(runs: int, job: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        job()
        best = min(best, time.perf_counter() - started)
    return best


def path_of(unit: str, length: int) -> str:
    return "/" + unit * ((length - len(HOST) - 1) // len(unit))


# Short paths first: a backtracking matcher already costs milliseconds at 32 characters and
# fails there, instead of running for ages on longer ones (seconds at 110 for 5 stars, n^k).
LENGTHS = (len(HOST) + 33, len(HOST) + 111, 1024, MAX_URL_LENGTH)


@pytest.mark.parametrize(
    ("glob", "unit", "last"),
    [
        ("/*a*a*a*a*a*b", "a", ""),  # the reported case
        ("/*a*a*a*a*a*a*a*b", "a", ""),
        ("/*b*b*b*b*b*b*b*b", "a", "b"),  # every part but the last fails at the end
        ("/*" + "a" * 100 + "b*", "a", ""),
        ("/*" + "*".join(["a" * 20 + "b"] * 7) + "*", "a", ""),
        ("/*" + "ab" * 40 + "c*", "ab", ""),
    ],
)
def test_worst_case_globs_cost_less_than_canonicalising_the_url(
    glob: str, unit: str, last: str
) -> None:
    pattern = URLPattern.parse(HOST + glob)
    for length in LENGTHS:
        text = HOST + path_of(unit, length - len(last)) + last
        url = canonicalize_url(text)
        assert len(url.url) <= MAX_URL_LENGTH
        # The floor: canonicalising the URL, which every fetch does and which is linear in it.
        floor = best_of(5, lambda: canonicalize_url(text))  # noqa: B023 - used at once
        matching = best_of(5, lambda: pattern.matches(url))  # noqa: B023 - used at once
        assert matching < max(floor, 0.001), (
            f"{length}: {matching * 1e3:.2f} ms vs {floor * 1e3:.2f}"
        )
        assert matching < 0.05


def test_the_reported_redos_is_decided_at_once() -> None:
    policy = OutboundPolicy([HOST + "/*a*a*a*a*a*b"])
    url = HOST + "/" + "a" * 110
    started = time.perf_counter()
    decision = policy.match(url)
    assert time.perf_counter() - started < 0.05
    assert not decision.allowed and "matches none" in decision.reason
    assert policy.match(url + "b").allowed


def test_path_stars_are_bounded() -> None:
    URLPattern.parse(HOST + "/" + "*" * MAX_GLOB_STARS)
    URLPattern.parse("https://*.example.com:*/" + "a*" * MAX_GLOB_STARS)  # host, port stars aside
    URLPattern.parse(HOST + "/" + "%2A" * 40)  # an escaped star is a literal
    with pytest.raises(InvalidURL, match=f"9 '\\*' wildcards; at most {MAX_GLOB_STARS}"):
        URLPattern.parse(HOST + "/" + "*" * (MAX_GLOB_STARS + 1))
    with pytest.raises(InvalidURL, match="wildcards"):
        URLPattern.parse(HOST + "/a?" + "b=*&" * (MAX_GLOB_STARS + 1))


def test_pattern_and_url_lengths_are_bounded() -> None:
    URLPattern.parse(HOST + "/" + "a" * (MAX_PATTERN_LENGTH - len(HOST) - 1))
    with pytest.raises(InvalidURL, match=f"longer than {MAX_PATTERN_LENGTH}"):
        URLPattern.parse(HOST + "/" + "a" * (MAX_PATTERN_LENGTH - len(HOST)))
    canonicalize_url(HOST + "/" + "a" * (MAX_URL_LENGTH - len(HOST) - 1))
    assert not OutboundPolicy([HOST + "/*"]).match(HOST + "/" + "a" * MAX_URL_LENGTH).allowed


def manifest_with(*patterns: str) -> bytes:
    doc = {"name": "a", "version": "1.0.0", "entry": "m.py"}
    return json.dumps({**doc, "permissions": {"network": {"outbound": list(patterns)}}}).encode()


def test_the_validator_names_the_pattern_over_its_limits() -> None:
    _, issues = check_manifest_bytes(
        manifest_with(HOST + "/*", HOST + "/" + "*" * 9, HOST + "/" + "a" * MAX_PATTERN_LENGTH)
    )
    assert [i.path for i in issues] == [
        "$.permissions.network.outbound[1]",
        "$.permissions.network.outbound[2]",
    ]
    assert "at most 8" in issues[0].message
    assert "at most 2048 characters" in issues[1].message


# --------------------------------------------------------------------------- public suffixes


@pytest.mark.parametrize(
    "suffix",
    [
        "com",  # a top-level domain
        "co.uk",  # ICANN section, two labels: the case dot counting missed
        "com.au",
        "github.io",  # private section: subdomains belong to different users
        "blogspot.com",
        "s3.amazonaws.com",
        "anything.kawasaki.jp",  # under the wildcard rule *.kawasaki.jp
        "xn--p1ai",  # .рф, as A-label and as U-label below
        "рф",
        "localhost",  # unlisted top-level names follow the default rule '*'
        "internal",
    ],
)
def test_wildcards_over_public_suffixes_are_refused(suffix: str) -> None:
    with pytest.raises(InvalidURL, match="is a public suffix"):
        URLPattern.parse(f"https://*.{suffix}/*")
    _, issues = check_manifest_bytes(manifest_with(f"https://*.{suffix}/*"))
    assert [i.path for i in issues] == ["$.permissions.network.outbound[0]"]
    assert "registered domain" in issues[0].message


@pytest.mark.parametrize(
    "domain",
    [
        "example.com",
        "example.co.uk",
        "mydomain.com",
        "user.github.io",
        "city.kawasaki.jp",  # an exception rule (!city.kawasaki.jp): registrable
        "corp.internal",
        "xn--80ak6aa92e.xn--p1ai",
    ],
)
def test_wildcards_over_registrable_domains_are_allowed(domain: str) -> None:
    pattern = URLPattern.parse(f"https://*.{domain}/*")
    assert not is_public_suffix_wildcard(pattern)
    assert pattern.matches(canonicalize_url(f"https://api.{domain}/x"))


def test_exact_hosts_may_be_public_suffixes() -> None:
    # Naming one host grants that host only, suffix or not (co.uk serves a page of its own).
    assert not is_public_suffix_wildcard(URLPattern.parse("https://co.uk/*"))


def test_is_public_suffix_wildcard_judges_patterns_built_without_parse() -> None:
    built = URLPattern("https://*.co.uk/*", "https", "co.uk", True, None, 443, ("/", ""))
    assert is_public_suffix_wildcard(built)
    assert not is_public_suffix_wildcard(
        URLPattern("https://*.bbc.co.uk/*", "https", "bbc.co.uk", True, None, 443, ("/", ""))
    )
