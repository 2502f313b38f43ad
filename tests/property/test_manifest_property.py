"""Generated manifests: the fast and exact parse paths agree, and the schema agrees with both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from autoweave_plugins.manifest import SCHEMA_RESOURCE, check_manifest_bytes
from autoweave_plugins.manifest.parse import _exact_parse
from autoweave_plugins.manifest.validate import validate_document
from autoweave_plugins.permissions.suffixes import is_public_suffix

SCHEMA = json.loads(SCHEMA_RESOURCE.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
hosts = st.from_regex(r"[a-z][a-z0-9]{0,8}\.(com|org|example)", fullmatch=True)
paths = st.lists(st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True), min_size=1, max_size=4).map(
    lambda parts: "/" + "/".join(parts)
)


def _rule_path(rule: Any) -> str:
    path: str = rule["path"]
    return path


good_values: dict[str, st.SearchStrategy[Any]] = {
    "name": names,
    "version": st.from_regex(
        r"(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]?)\.(0|[1-9])(-beta\.[1-9])?", fullmatch=True
    ),
    "entry": st.from_regex(r"[a-z_]{1,8}(/[a-z_]{1,8})?\.py", fullmatch=True),
    "description": st.text(max_size=40),
}
# Values that are sometimes wrong in ways both the schema and the validator can judge.
any_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.text(max_size=12),
    st.floats(allow_nan=False, allow_infinity=False),
)
permissions = st.fixed_dictionaries(
    {},
    optional={
        "filesystem": st.lists(
            st.fixed_dictionaries(
                {
                    "path": st.one_of(
                        paths, st.sampled_from(["/", "rel", "/a/../b", "/proc/1", "/x/"])
                    ),
                    "mode": st.sampled_from(["read", "write", "readwrite", "exec"]),
                }
            ),
            max_size=3,
            unique_by=_rule_path,
        ),
        "network": st.fixed_dictionaries(
            {},
            optional={
                "outbound": st.lists(
                    st.one_of(
                        hosts.map(lambda h: f"https://{h}/*"),
                        # The Public Suffix List is beyond JSON Schema: only the validator
                        # refuses '*.us.org' (tests/unit/test_url_limits.py), so the schema
                        # agreement is judged on wildcards over registrable names.
                        hosts.filter(lambda h: not is_public_suffix(h)).map(
                            lambda h: f"http://*.{h}:8080/api/*"
                        ),
                        st.sampled_from(
                            [
                                "ftp://a.com/*",
                                "https://a.com@b.com/*",
                                "https://*x.com/*",
                                "https://a.com",
                            ]
                        ),
                    ),
                    max_size=3,
                ),
                "inbound": st.fixed_dictionaries(
                    {"port": st.one_of(st.integers(0, 70000), st.just("8080"))},
                    optional={"interface": st.sampled_from(["localhost", "all", "0.0.0.0"])},
                ),
            },
        ),
        "usb": st.fixed_dictionaries(
            {},
            optional={
                "vendor_ids": st.lists(
                    st.sampled_from(["0x1234", "0xABcd", "1234", "0x123"]), max_size=3
                )
            },
        ),
        "memory": st.fixed_dictionaries(
            {}, optional={"max_heap_mb": st.integers(-10, 5000), "max_workers": st.integers(-1, 20)}
        ),
    },
)
hooks = st.dictionaries(
    st.one_of(
        st.sampled_from(["onLoad", "onUnload", "onUSBAttach", "onCustom2"]),
        st.sampled_from(["load", "on_x"]),
    ),
    st.one_of(
        st.sampled_from(["initialize", "cleanup", "handle_it", "_private"]),
        st.sampled_from(["f()", "class", "1x", "__init__"]),
    ),
    max_size=4,
)
# PEP 508 strings both sides accept, and refusals the schema's pattern can also express.
requirements = st.lists(
    st.one_of(
        st.builds(
            "{}{}".format,
            names,
            st.sampled_from(["", ">=4.9", "==2.*", "[extra] >1,<3", "; python_version >= '3.8'"]),
        ),
        st.sampled_from(["x @ https://a.com/x.whl", "a b", "-r x.txt", "a#b", "a\n", "", 5]),
    ),
    max_size=3,
)
# Ranges both sides accept, and refusals the schema's pattern can also express.
dependencies = st.dictionaries(
    st.one_of(names, st.sampled_from(["Upper", "a b"])),
    st.one_of(
        st.sampled_from(["^1.2.0", "~1.2", "1.0.0", "1.x", "*", ">=1.2,<2", ">=1 || ^3.0"]),
        st.sampled_from(["", "1.0\n", "a@b", "x" * 129, 5, None]),
    ),
    max_size=3,
)
manifests = st.fixed_dictionaries(
    {
        key: st.one_of(value, any_scalar) if key != "description" else value
        for key, value in good_values.items()
    },
    optional={
        "permissions": permissions,
        "hooks": hooks,
        "requirements": requirements,
        "dependencies": dependencies,
        "unknown": st.integers(),
    },
)


@settings(max_examples=300)
@given(manifests)
def test_schema_and_validator_agree(doc: dict[str, Any]) -> None:
    manifest, issues = check_manifest_bytes(json.dumps(doc).encode())
    schema_errors = list(VALIDATOR.iter_errors(doc))
    assert (manifest is not None) == (not schema_errors), (
        issues,
        [e.message for e in schema_errors],
    )


@settings(max_examples=300)
@given(manifests, st.booleans())
def test_fast_and_exact_paths_agree(doc: dict[str, Any], indent: bool) -> None:
    data = json.dumps(doc, indent=2 if indent else None).encode()
    fast = check_manifest_bytes(data)
    tree, parse_issues = _exact_parse(data)
    assert parse_issues == ()
    assert validate_document(tree) == fast


def test_schema_agrees_with_the_corpus(corpus: Path) -> None:
    for path in sorted((corpus / "valid").glob("*.json")):
        errors = list(VALIDATOR.iter_errors(json.loads(path.read_bytes())))
        assert errors == [], f"{path.name}: {[e.message for e in errors]}"
    expected: dict[str, str] = json.loads((corpus / "invalid" / "EXPECTED.json").read_text())
    for name, json_path in expected.items():
        try:
            doc = json.loads((corpus / "invalid" / name).read_bytes())
        except (ValueError, UnicodeDecodeError):
            continue  # not JSON: no schema applies, the parser refuses it (test_conformance)
        if name == "duplicate-key.json":
            continue  # a parser property; JSON Schema sees only the last value
        errors = list(VALIDATOR.iter_errors(doc))
        assert errors, f"schema accepts {name}"
        # Schema engines report unknown or badly named keys on their parent object.
        parent = (
            json_path.rsplit(".", 1)[0].split("[")[0]
            if "[" not in json_path.rsplit(".", 1)[-1]
            else json_path
        )
        found = {e.json_path for e in errors}
        assert json_path in found or parent in found, (
            f"{name}: schema says {found}, expected {json_path}"
        )
