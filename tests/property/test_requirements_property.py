"""Generated requirement strings: the validator agrees with packaging, and canonical forms hold."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.requirements import InvalidRequirement, Requirement

from autoweave_plugins.manifest import SCHEMA_RESOURCE
from autoweave_plugins.manifest.requirements import (
    canonical_requirement,
    canonical_requirements,
    parse_requirement,
    requirement_problem,
)

SCHEMA_PATTERN = re.compile(
    json.loads(SCHEMA_RESOURCE.read_text())["properties"]["requirements"]["items"]["pattern"]
)

names = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,10}[A-Za-z0-9])?", fullmatch=True)
versions = st.from_regex(r"(0|[1-9][0-9]?)(\.(0|[1-9][0-9]?)){0,2}", fullmatch=True)
specifiers = st.lists(
    st.tuples(st.sampled_from(["==", "!=", ">=", "<=", ">", "<", "~="]), versions).map(
        lambda t: f"{t[0]}{t[1]}" if t[0] != "~=" or "." in t[1] else f"{t[0]}{t[1]}.0"
    ),
    max_size=3,
).map(",".join)
wildcard = versions.map(lambda v: f"=={v}.*")
markers = st.sampled_from(
    [
        "",
        "; python_version >= '3.8'",
        ';sys_platform == "linux"',
        " ; os_name != 'nt' and platform_machine == 'x86_64'",
        "; implementation_name == 'cpython' or python_full_version < '3.12.1'",
    ]
)
extras = st.lists(names, max_size=3).map(lambda e: f"[{', '.join(e)}]" if e else "")
spaces = st.sampled_from(["", " ", "  "])

requirements = st.builds(
    lambda pre, name, sp, extra, spec, marker: f"{pre}{name}{sp}{extra}{sp}{spec}{marker}",
    spaces,
    names,
    spaces,
    extras,
    st.one_of(specifiers, wildcard),
    markers,
)
hostile = st.sampled_from(["\n", "\r", "\t", "\x00", "#", "\x7f", "é", " # c", "\n--index-url x"])


@settings(max_examples=200)
@given(names, spaces, spaces, extras, st.one_of(specifiers, wildcard), markers)
def test_spellings_of_one_requirement_share_a_stable_canonical_form(
    name: str, space: str, other_space: str, extra: str, spec: str, marker: str
) -> None:
    text = f"{name}{space}{extra}{space}{spec}{marker}"
    respelled = ",".join(reversed(spec.split(",")))
    variant = f"{other_space}{name.upper().replace('-', '_')}{other_space}{extra.upper()}"
    variant += f"{other_space}{respelled}{marker}"
    for spelling in (text, variant):
        assert requirement_problem(spelling) is None, (spelling, requirement_problem(spelling))
        assert SCHEMA_PATTERN.search(spelling), spelling
    canonical = canonical_requirement(parse_requirement(text))
    assert canonical_requirement(parse_requirement(variant)) == canonical
    assert canonical_requirement(parse_requirement(canonical)) == canonical
    assert canonical_requirements([text, variant, canonical]) == (canonical,)


@settings(max_examples=200)
@given(requirements, hostile, st.data())
def test_a_control_character_or_comment_anywhere_is_refused(
    text: str, bad: str, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(text)))
    spoiled = text[:at] + bad + text[at:]
    assert requirement_problem(spoiled) is not None
    assert not SCHEMA_PATTERN.search(spoiled)


@settings(max_examples=500)
@given(st.text(max_size=80))
def test_the_validator_accepts_only_what_packaging_parses_without_a_url(text: str) -> None:
    problem = requirement_problem(text)  # never raises, whatever the text
    if problem is None:
        requirement = Requirement(text)
        assert requirement.url is None
        assert text.isascii() and "#" not in text and "\n" not in text
    else:
        assert isinstance(problem, str) and problem


@settings(max_examples=300)
@given(names, st.sampled_from(["https://x.example/a.whl", "file:///tmp/a.whl", "git+https://g/r"]))
def test_direct_url_references_are_refused(name: str, url: str) -> None:
    text = f"{name} @ {url}"
    try:
        Requirement(text)
    except InvalidRequirement:
        return
    assert "direct URL" in (requirement_problem(text) or "")
    assert not SCHEMA_PATTERN.search(text)
