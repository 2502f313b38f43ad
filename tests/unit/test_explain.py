"""The notes the sandbox adds to what it refuses: the layer, and the fix, for each case."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from autoweave_plugins.worker.explain import NOTE_PREFIX, Explainer, add_note_once


@pytest.fixture
def explainer(tmp_path: Path) -> Explainer:
    for name in ("rw", "ro", "plugin", "tmp"):
        (tmp_path / name).mkdir()
    return Explainer(
        "demo",
        str(tmp_path / "plugin"),
        ((str(tmp_path / "rw"), "readwrite"), (str(tmp_path / "ro"), "read")),
        str(tmp_path / "tmp"),
        256,
        64,
    )


@pytest.mark.parametrize(
    ("host", "port", "pattern"),
    [
        ("example.com", 443, "'https://example.com/*'"),
        ("example.com", "https", "'https://example.com/*'"),
        ("example.com", 80, "'http://example.com/*'"),
        ("example.com", 8080, "'https://example.com:8080/*'"),
        (b"api.example.com", None, "'https://api.example.com/*'"),
        ("2001:db8::1", 443, "'https://[2001:db8::1]/*'"),
    ],
)
def test_network_notes_name_the_pattern(host: object, port: object, pattern: str) -> None:
    note = Explainer.network(host, port)
    assert "autoweave.fetch" in note and pattern in note
    assert "permissions.network.outbound" in note


def test_filesystem_notes_say_which_grant_and_mode(explainer: Explainer, tmp_path: Path) -> None:
    outside = explainer.filesystem("/srv/data/x.json", write=False)
    assert '"path": "/srv/data/x.json", "mode": "read"' in outside
    new_file = explainer.filesystem("/srv/data/new.json", write=True)
    assert '"path": "/srv/data", "mode": "readwrite"' in new_file
    read_only = explainer.filesystem(str(tmp_path / "ro" / "f"), write=True)
    assert "may only read" in read_only and '"mode": "readwrite"' in read_only
    own = explainer.filesystem(str(tmp_path / "rw" / "f"), write=True)
    assert "file's own permissions, not the sandbox" in own
    plugin = explainer.filesystem(str(tmp_path / "plugin" / "f"), write=True)
    assert "read-only" in plugin and str(tmp_path / "tmp") in plugin


def test_the_boundary_explains_the_whole_chain_once(explainer: Explainer) -> None:
    try:
        try:
            raise MemoryError
        except MemoryError as inner:
            raise ExceptionGroup("many", [PermissionError(errno.EACCES, "x", "/srv/x")]) from inner
    except ExceptionGroup as outer:
        explainer.annotate(outer)
        explainer.annotate(outer)
        memory = outer.__cause__
        member = outer.exceptions[0]
    assert memory is not None and member is not None
    assert [n for n in memory.__notes__ if "memory.max_heap_mb = 256 MB" in n]
    assert len(member.__notes__) == 1 and member.__notes__[0].startswith(NOTE_PREFIX)


def test_a_note_is_added_once() -> None:
    error = PermissionError(errno.EPERM, "no")
    add_note_once(error, f"{NOTE_PREFIX}: first")
    add_note_once(error, f"{NOTE_PREFIX}: second")
    assert error.__notes__ == [f"{NOTE_PREFIX}: first"]


def test_notes_that_plugin_code_broke_are_left_alone(explainer: Explainer) -> None:
    from autoweave_plugins.rpc import exception_to_wire

    error = MemoryError()
    setattr(error, "__notes__", 42)  # noqa: B010  (as plugin code may)
    explainer.annotate(error)
    assert exception_to_wire(error)["type"] == "MemoryError"
