"""The shared conformance corpus: every valid manifest loads, every invalid one names its path."""

from __future__ import annotations

import json
from pathlib import Path

from autoweave_plugins.manifest import check_manifest_bytes


def test_every_valid_manifest_validates(corpus: Path) -> None:
    files = sorted((corpus / "valid").glob("*.json"))
    assert files, "the valid corpus is empty"
    for path in files:
        manifest, issues = check_manifest_bytes(path.read_bytes())
        assert issues == (), f"{path.name}: {issues}"
        assert manifest is not None


def test_every_invalid_manifest_names_the_expected_path(corpus: Path) -> None:
    expected: dict[str, str] = json.loads((corpus / "invalid" / "EXPECTED.json").read_text())
    files = sorted(p.name for p in (corpus / "invalid").glob("*.json") if p.name != "EXPECTED.json")
    assert sorted(expected) == files, "EXPECTED.json and the corpus files disagree"
    for name, json_path in expected.items():
        manifest, issues = check_manifest_bytes((corpus / "invalid" / name).read_bytes())
        assert manifest is None, f"{name} was accepted"
        assert json_path in [i.path for i in issues], f"{name}: expected {json_path}, got {issues}"
        for issue in issues:
            assert len(issue.message) > 10, f"{name}: message too terse: {issue.message!r}"


def test_parse_errors_carry_line_and_column(corpus: Path) -> None:
    for name in ("truncated.json", "not-utf8.json"):
        _, issues = check_manifest_bytes((corpus / "invalid" / name).read_bytes())
        assert issues[0].path == "$"
        assert issues[0].line is not None and issues[0].column is not None, name
