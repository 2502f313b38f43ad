"""The linear path-glob matcher against two references: a regex, and ``fnmatch`` on '*'-only globs."""

from __future__ import annotations

import fnmatch
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from autoweave_plugins.permissions.globs import glob_matches, split_glob
from autoweave_plugins.permissions.urls import URLPattern, canonicalize_url

SETTINGS = settings(max_examples=1500, deadline=None)

# A small alphabet makes near-misses (overlapping and repeated parts) common.
globs = st.text(alphabet="ab*/?", max_size=10)
texts = st.text(alphabet="ab/?", max_size=14)


def regex_reference(glob: str, text: str) -> bool:
    """The previous implementation: each '*' as '.*', everything else literal."""
    pattern = ".*".join(re.escape(part) for part in glob.split("*"))
    return re.fullmatch(pattern, text, re.DOTALL) is not None


@SETTINGS
@given(glob=globs, text=texts)
@example(glob="ab*ba", text="aba")
@example(glob="*a*a*b", text="aaaa")
@example(glob="a*", text="a")
@example(glob="**", text="")
def test_matcher_agrees_with_the_regex_reference(glob: str, text: str) -> None:
    assert glob_matches(split_glob(glob), text) == regex_reference(glob, text)


@SETTINGS
@given(glob=st.text(alphabet="ab*/", max_size=10), text=st.text(alphabet="ab/", max_size=14))
def test_matcher_agrees_with_fnmatch_on_star_only_globs(glob: str, text: str) -> None:
    # fnmatch also treats '?' and '[' as wildcards; our globs do not, so they are left out here.
    assert glob_matches(split_glob(glob), text) == fnmatch.fnmatchcase(text, glob)


@SETTINGS
@given(glob=globs, text=texts)
def test_a_glob_matches_its_own_literal_text(glob: str, text: str) -> None:
    parts = split_glob(glob)
    filled = text.join(parts)  # each '*' replaced by the same arbitrary text
    assert glob_matches(parts, filled)


segments = st.text(alphabet="ab-", min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    glob=st.lists(st.one_of(segments, st.just("*")), max_size=6).map(lambda s: "/" + "/".join(s)),
    path=st.lists(segments, max_size=6).map(lambda s: "/" + "/".join(s)),
    query=st.none() | st.text(alphabet="ab=&*", max_size=6),
)
def test_url_patterns_match_like_the_reference(glob: str, path: str, query: str | None) -> None:
    pattern = URLPattern.parse(f"https://example.com{glob}")
    url = canonicalize_url(f"https://example.com{path}" + ("" if query is None else f"?{query}"))
    assert pattern.matches(url) == regex_reference(glob, url.target)
