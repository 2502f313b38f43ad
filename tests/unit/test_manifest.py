"""Manifest parsing and validation beyond the corpus: every field, limits, hostile documents."""

from __future__ import annotations

import json
from typing import Any

import pytest

from autoweave_plugins.errors import ManifestError
from autoweave_plugins.manifest import check_manifest_bytes, parse_manifest_bytes
from autoweave_plugins.manifest.parse import MAX_DEPTH, MAX_MANIFEST_BYTES
from autoweave_plugins.permissions.paths import FileMode

BASE: dict[str, Any] = {"name": "demo", "version": "1.0.0", "entry": "main.py"}


def issues_of(doc: Any) -> list[tuple[str, str]]:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    manifest, issues = check_manifest_bytes(data)
    assert (manifest is None) == bool(issues)
    return [(i.path, i.message) for i in issues]


def paths_of(doc: Any) -> list[str]:
    return [p for p, _ in issues_of(doc)]


def with_(**fields: Any) -> dict[str, Any]:
    return {**BASE, **fields}


def test_minimal_manifest_gets_documented_defaults() -> None:
    manifest = parse_manifest_bytes(json.dumps(BASE).encode())
    assert manifest.permissions.filesystem == ()
    assert manifest.permissions.outbound == ()
    assert manifest.permissions.inbound is None
    assert manifest.permissions.max_heap_mb == 256
    assert manifest.permissions.max_workers == 1
    assert not manifest.permissions.usb.vendor_ids
    assert dict(manifest.hooks) == {}


def test_full_manifest_builds_typed_records() -> None:
    doc = with_(
        author={"name": "A", "email": "a@example.com", "url": "https://example.com"},
        permissions={
            "filesystem": [
                {"path": "/tmp/x", "mode": "readwrite"},
                {"path": "/var/tmp/y", "mode": "read"},
            ],
            "network": {"outbound": ["https://*.example.com/*"], "inbound": {"port": 8080}},
            "usb": {"vendor_ids": ["0xABCD"], "product_ids": ["0x00ff"]},
            "memory": {"max_heap_mb": 512, "max_workers": 4},
        },
        hooks={"onLoad": "init", "onCustomThing": "custom"},
        dependencies={"other-plugin": "^1.2.0"},
    )
    m = parse_manifest_bytes(json.dumps(doc).encode())
    assert [(r.path, r.mode) for r in m.permissions.filesystem] == [
        ("/tmp/x", FileMode.READWRITE),
        ("/var/tmp/y", FileMode.READ),
    ]
    assert m.permissions.outbound[0].host == "example.com" and m.permissions.outbound[0].subdomains
    assert m.permissions.inbound is not None and m.permissions.inbound.interface == "localhost"
    assert m.permissions.usb.vendor_ids == frozenset({"0xabcd"})
    assert m.permissions.usb.product_ids == frozenset({"0x00ff"})
    assert (m.permissions.max_heap_mb, m.permissions.max_workers) == (512, 4)
    assert m.hooks["onCustomThing"] == "custom"
    assert m.author is not None and m.author.email == "a@example.com"


def test_all_errors_are_reported_not_only_the_first() -> None:
    doc = {
        "name": "Bad Name",
        "version": "1",
        "entry": "/abs.py",
        "permissions": {
            "filesystem": [{"path": "rel", "mode": "x"}],
            "memory": {"max_workers": 99},
        },
        "hooks": {"load": "f", "onOk": "not an identifier"},
        "extra": True,
    }
    assert sorted(paths_of(doc)) == sorted(
        [
            "$.extra",
            "$.name",
            "$.version",
            "$.entry",
            "$.permissions.filesystem[0].path",
            "$.permissions.filesystem[0].mode",
            "$.permissions.memory.max_workers",
            "$.hooks.load",
            "$.hooks.onOk",
        ]
    )


def test_missing_required_fields_are_named() -> None:
    assert sorted(paths_of({})) == ["$.entry", "$.name", "$.version"]


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("name", "a" * 65, "$.name"),
        ("name", "-lead", "$.name"),
        ("name", 5, "$.name"),
        ("version", "1.0.0\n", "$.version"),
        ("version", "01.0.0", "$.version"),
        ("version", "1.0.0-", "$.version"),
        ("entry", "main.txt", "$.entry"),
        ("entry", "a\\b.py", "$.entry"),
        ("entry", "a/../b.py", "$.entry"),
        ("entry", "./main.py", "$.entry"),
        ("entry", "a//main.py", "$.entry"),
        ("entry", "x\x00.py", "$.entry"),
        ("entry", ".py", "$.entry"),
        ("description", 3, "$.description"),
        ("author", "Ada", "$.author"),
        ("author", {"email": "not-an-email"}, "$.author.email"),
        ("author", {"url": "javascript:alert(1)"}, "$.author.url"),
        ("author", {"nick": "x"}, "$.author.nick"),
        ("hooks", [], "$.hooks"),
        ("hooks", {"onLoad": 3}, "$.hooks.onLoad"),
        ("hooks", {"onLoad": "class"}, "$.hooks.onLoad"),
        ("hooks", {"onLoad": "__import__"}, "$.hooks.onLoad"),
        ("hooks", {"on load": "f"}, "$.hooks['on load']"),
        ("dependencies", {"Other": "1.0.0"}, "$.dependencies.Other"),
        ("dependencies", {"other": 1}, "$.dependencies.other"),
        ("$schema", 1, "$.$schema"),
    ],
)
def test_field_errors_name_their_path(field: str, value: Any, path: str) -> None:
    assert path in paths_of(with_(**{field: value}))


@pytest.mark.parametrize(
    ("permissions", "path"),
    [
        ({"filesystem": {}}, "$.permissions.filesystem"),
        ({"filesystem": ["/tmp"]}, "$.permissions.filesystem[0]"),
        ({"filesystem": [{"mode": "read"}]}, "$.permissions.filesystem[0].path"),
        ({"filesystem": [{"path": "/tmp/a"}]}, "$.permissions.filesystem[0].mode"),
        ({"filesystem": [{"path": "/tmp/a/", "mode": "read"}]}, "$.permissions.filesystem[0].path"),
        (
            {"filesystem": [{"path": "/proc/self", "mode": "read"}]},
            "$.permissions.filesystem[0].path",
        ),
        ({"filesystem": [{"path": "/proc", "mode": "read"}]}, "$.permissions.filesystem[0].path"),
        (
            {"filesystem": [{"path": "/tmp/a\x00b", "mode": "read"}]},
            "$.permissions.filesystem[0].path",
        ),
        (
            {"filesystem": [{"path": "/tmp/./a", "mode": "read"}]},
            "$.permissions.filesystem[0].path",
        ),
        (
            {
                "filesystem": [
                    {"path": "/tmp/a", "mode": "read"},
                    {"path": "/tmp/a", "mode": "write"},
                ]
            },
            "$.permissions.filesystem[1].path",
        ),
        (
            {"filesystem": [{"path": "/tmp/a", "mode": "read", "x": 1}]},
            "$.permissions.filesystem[0].x",
        ),
        ({"network": {"outbound": "https://a.com/*"}}, "$.permissions.network.outbound"),
        ({"network": {"outbound": ["https://a.com"]}}, "$.permissions.network.outbound[0]"),
        ({"network": {"outbound": ["https://*.1.2.3.4/*"]}}, "$.permissions.network.outbound[0]"),
        ({"network": {"outbound": ["https://*.com/*"]}}, "$.permissions.network.outbound[0]"),
        ({"network": {"outbound": ["https://a.com:99999/*"]}}, "$.permissions.network.outbound[0]"),
        ({"network": {"outbound": ["https://a.com/#x"]}}, "$.permissions.network.outbound[0]"),
        ({"network": {"outbound": ["https://a .com/*"]}}, "$.permissions.network.outbound[0]"),
        ({"network": {"inbound": {"port": 80}}}, "$.permissions.network.inbound.port"),
        ({"network": {"inbound": {"port": 65536}}}, "$.permissions.network.inbound.port"),
        ({"network": {"inbound": {"port": 8080.0}}}, "$.permissions.network.inbound.port"),
        ({"network": {"inbound": {"port": True}}}, "$.permissions.network.inbound.port"),
        ({"network": {"inbound": {}}}, "$.permissions.network.inbound.port"),
        ({"network": {"udp": []}}, "$.permissions.network.udp"),
        ({"usb": {"vendor_ids": ["0x12345"]}}, "$.permissions.usb.vendor_ids[0]"),
        ({"usb": {"vendor_ids": ["0xGGGG"]}}, "$.permissions.usb.vendor_ids[0]"),
        ({"usb": {"vendor_ids": [4660]}}, "$.permissions.usb.vendor_ids[0]"),
        ({"usb": {"product_ids": ["0x1234"]}}, "$.permissions.usb.product_ids"),
        ({"memory": {"max_heap_mb": 15}}, "$.permissions.memory.max_heap_mb"),
        ({"memory": {"max_heap_mb": 4097}}, "$.permissions.memory.max_heap_mb"),
        ({"memory": {"max_heap_mb": "256"}}, "$.permissions.memory.max_heap_mb"),
        ({"memory": {"max_workers": 17}}, "$.permissions.memory.max_workers"),
        ({"cpu": {}}, "$.permissions.cpu"),
    ],
)
def test_permission_errors_name_their_path(permissions: dict[str, Any], path: str) -> None:
    assert path in paths_of(with_(permissions=permissions))


def test_messages_are_actionable() -> None:
    [(_, message)] = issues_of(
        with_(permissions={"filesystem": [{"path": "/tmp/a/", "mode": "read"}]})
    )
    assert "'/tmp/a'" in message  # tells the fix
    [(_, message)] = issues_of(with_(permisions={}))
    assert "did you mean 'permissions'" in message


def test_oversized_document_is_refused_before_parsing() -> None:
    data = json.dumps(with_(description="x" * 10)).encode() + b" " * MAX_MANIFEST_BYTES
    [(path, message)] = issues_of(data)
    assert path == "$" and "at most" in message


def test_nesting_limit_is_exact() -> None:
    def nested(depth: int) -> bytes:
        # the manifest object itself is level 1; the description holds the rest
        return (
            b'{"name":"a","version":"1.0.0","entry":"m.py","description":'
            + b"[" * (depth - 1)
            + b"]" * (depth - 1)
            + b"}"
        )

    too_deep = issues_of(nested(MAX_DEPTH + 1))
    assert too_deep[0][0] == "$" and "deeper than 64" in too_deep[0][1]
    # at the limit it parses, and fails only because description is not a string
    assert paths_of(nested(MAX_DEPTH)) == ["$.description"]


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    doc = with_(description="[" * 500 + "{" * 500)
    assert issues_of(doc) == []


def test_huge_flat_document_is_not_mistaken_for_deep() -> None:
    doc = with_(dependencies={f"p{i}": "1.0.0" for i in range(200)})
    assert issues_of(doc) == []


def test_duplicate_keys_are_found_at_any_depth() -> None:
    data = b'{"name":"a","version":"1.0.0","entry":"m.py","permissions":{"memory":{"max_heap_mb":64,"max_heap_mb":4096}}}'
    assert paths_of(data) == ["$.permissions.memory.max_heap_mb"]


def test_duplicate_keys_hidden_behind_escapes_are_found() -> None:
    # "n\u0061me" is "name": the escape forces the exact slow path
    data = b'{"name":"a","n\\u0061me":"b","version":"1.0.0","entry":"m.py"}'
    assert paths_of(data) == ["$.name"]


def test_invalid_utf8_reports_position() -> None:
    data = b'{\n  "name": "a",\n  "description": "\xff"\n}'
    manifest, issues = check_manifest_bytes(data)
    assert manifest is None
    assert (issues[0].path, issues[0].line, issues[0].column) == ("$", 3, 19)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"null",
        b"\xef\xbb\xbf" + json.dumps(BASE).encode(),  # BOM
        b'{"name":"a","version":"1.0.0","entry":"m.py","description":NaN}',
        b'{"name":"a","version":"1.0.0","entry":"m.py","description":Infinity}',
        b'{"name":"a","version":"1.0.0","entry":"m.py"} trailing',
        b'{"name":"a","version":"1.0.0","entry":"m.py",}',
        b"{'name':'a'}",
    ],
)
def test_malformed_documents_are_refused_at_the_root(data: bytes) -> None:
    paths = paths_of(data)
    assert paths and paths[0] == "$"


def test_lone_surrogate_escape_is_refused() -> None:
    data = b'{"name":"a","version":"1.0.0","entry":"m.py","description":"\\ud800"}'
    assert paths_of(data) == ["$.description"]


def test_huge_integer_is_refused_cleanly() -> None:
    data = (
        b'{"name":"a","version":"1.0.0","entry":"m.py","permissions":{"memory":{"max_heap_mb":'
        + b"9" * 400
        + b"}}}"
    )
    assert paths_of(data) == ["$.permissions.memory.max_heap_mb"]


def test_manifest_error_lists_every_issue() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest_bytes(b'{"name": "X"}', source="plugins/x/autoweave.plugin.json")
    err = caught.value
    assert err.source == "plugins/x/autoweave.plugin.json"
    assert {i.path for i in err.issues} == {"$.name", "$.version", "$.entry"}
    assert "$.name" in str(err) and "plugins/x" in str(err)


def test_requirements_are_pep508_strings_kept_as_written() -> None:
    written = ["humanize>=4.9", "pydantic==2.*", "attrs[tests] ; python_version >= '3.8'"]
    manifest = parse_manifest_bytes(json.dumps(with_(requirements=written)).encode())
    assert manifest.requirements == tuple(written)
    assert parse_manifest_bytes(json.dumps(BASE).encode()).requirements == ()


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ("humanize", "$.requirements", "must be an array"),
        (["a"] * 129, "$.requirements", "at most 128 items"),
        (["humanize", 5], "$.requirements[1]", "must be a string"),
        (["humanize", "foo bar"], "$.requirements[1]", "not a PEP 508 requirement"),
        (["humanize>="], "$.requirements[0]", "at column 9"),
        (["-r other.txt"], "$.requirements[0]", "not a PEP 508 requirement"),
        (["x @ https://evil.example/x.whl"], "$.requirements[0]", "direct URL reference"),
        (["x\n--index-url https://evil.example"], "$.requirements[0]", "printable ASCII"),
        (["x ; os_name == 'a #b'"], "$.requirements[0]", "'#'"),
        (["a" * 513], "$.requirements[0]", "at most 512 characters"),
    ],
)
def test_bad_requirements_are_named_by_json_path(value: Any, path: str, message: str) -> None:
    found = issues_of(with_(requirements=value))
    assert any(p == path and message in m for p, m in found), found
