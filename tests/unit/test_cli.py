"""The real console script, run as a subprocess: output formats and exit statuses."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import REPO, MakePlugin
from tests.helpers.cli import cli

EXAMPLES = REPO / "examples" / "plugins"


def test_examples_are_valid() -> None:
    run = cli("validate", str(EXAMPLES))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("ok ") >= 3


def test_json_output_shape(tmp_path: Path, make_plugin: MakePlugin) -> None:
    good = make_plugin("good")
    bad = make_plugin("bad", permissions={"filesystem": [{"path": "/tmp/x", "mode": "execute"}]})
    run = cli("validate", "--json", str(good), str(bad))
    assert run.returncode == 1
    reports = json.loads(run.stdout)
    assert [r["ok"] for r in reports] == [True, False]
    assert reports[0]["errors"] == []
    assert reports[1]["errors"] == [
        {
            "path": "$.permissions.filesystem[0].mode",
            "message": "must be one of read, write, readwrite (got 'execute')",
        }
    ]


def test_parse_errors_have_line_and_column_in_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "x",\n  oops\n}')
    [report] = json.loads(cli("validate", "--json", str(path)).stdout)
    assert report["errors"][0]["line"] == 3 and report["errors"][0]["column"] == 3


def test_unprintable_keys_are_escaped_not_fatal(tmp_path: Path) -> None:
    """A lone surrogate or a control character in a key once ended validate with
    UnicodeEncodeError and no JSON at all."""
    path = tmp_path / "m.json"
    path.write_bytes(b'{"\\ud800": 1}')
    run = cli("validate", "--json", str(path))
    assert run.returncode == 1, run.stderr
    [report] = json.loads(run.stdout)
    assert [e["path"] for e in report["errors"]] == ["$['\\ud800']"]
    path.write_bytes(b'{"name": "a", "version": "1.0.0", "entry": "m.py", "\\ud800\\n\\u0000": 1}')
    [report] = json.loads(cli("validate", "--json", str(path)).stdout)
    assert report["errors"][0]["path"] == "$['\\ud800\\n\\x00']"
    human = cli("validate", str(path))
    assert human.returncode == 1 and human.stderr == ""
    assert "$['\\ud800\\n\\x00']: this key contains a lone surrogate" in human.stdout


def test_folder_names_that_are_not_utf8(tmp_path: Path, make_plugin: MakePlugin) -> None:
    root = tmp_path / "plugins"
    make_plugin("good", folder=os.fsdecode(b"good\xff\n"))
    make_plugin("Bad", folder=os.fsdecode(b"bad\xfe"))
    reports = json.loads(cli("validate", "--json", str(root)).stdout)
    by_folder = {os.fsencode(r["path"]).split(b"/")[-2]: r["ok"] for r in reports}
    assert by_folder == {b"good\xff\n": True, b"bad\xfe": False}
    human = cli("validate", str(root))
    assert human.returncode == 1 and human.stderr == ""
    assert "bad\\udcfe/autoweave.plugin.json" in human.stdout
    assert "good\\udcff\\n/autoweave.plugin.json" in human.stdout


def test_human_output_lists_paths(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"name": "Bad", "version": "1.0.0", "entry": "main.py"}')
    run = cli("validate", str(path))
    assert run.returncode == 1
    assert "invalid" in run.stdout and "$.name:" in run.stdout


def test_usage_errors_exit_2() -> None:
    assert cli("validate").returncode == 2
    assert cli("no-such-command").returncode == 2


def test_folder_without_plugins_is_invalid(tmp_path: Path) -> None:
    run = cli("validate", str(tmp_path))
    assert run.returncode == 1 and "no autoweave.plugin.json" in run.stdout


def test_corpus_through_the_cli(corpus: Path) -> None:
    valid = cli("validate", *map(str, sorted((corpus / "valid").glob("*.json"))))
    assert valid.returncode == 0, valid.stdout
    invalid_files = sorted(
        p for p in (corpus / "invalid").glob("*.json") if p.name != "EXPECTED.json"
    )
    reports = json.loads(cli("validate", "--json", *map(str, invalid_files)).stdout)
    assert len(reports) == len(invalid_files) and not any(r["ok"] for r in reports)


def test_doctor_reports_layers() -> None:
    run = cli("doctor", "--json")
    report = json.loads(run.stdout)
    assert {"landlock", "seccomp", "cgroups_v2", "user_namespaces", "missing_required"} <= set(
        report
    )
    assert run.returncode == (1 if report["missing_required"] else 0)
    assert report["start_method"]["active"] == "template", report["start_method"]
    assert report["start_method"]["blank_worker_ready_ms"] > 0
    human = cli("doctor")
    assert "strict mode:" in human.stdout and "landlock" in human.stdout
    assert "start method: template" in human.stdout
