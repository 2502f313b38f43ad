"""The sandbox's pure pieces: the prctl allow-list's blocks, the filter's report, the tripwire."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins import sandbox
from autoweave_plugins.manifest import check_manifest_bytes
from autoweave_plugins.sandbox import native
from autoweave_plugins.sandbox.seccomp import (
    PRCTL_ALLOWED,
    PRCTL_OPTION_SPACE,
    _aligned_blocks,
    build_filter,
    main_stack_zone,
)


@given(st.integers(0, 1 << 20), st.integers(0, 1 << 12))
def test_aligned_blocks_cover_the_range_exactly(low: int, width: int) -> None:
    high = low + width
    covered: list[int] = []
    for value, size in _aligned_blocks(low, high):
        assert size & (size - 1) == 0 and value % size == 0  # one MASKED_EQ test each
        covered.extend(range(value, value + size))
    assert covered == list(range(low, high))


def test_the_prctl_allow_list_is_small_and_reads_state() -> None:
    assert 1 not in PRCTL_ALLOWED  # PR_SET_PDEATHSIG
    assert 4 not in PRCTL_ALLOWED  # PR_SET_DUMPABLE
    assert {15, 16} <= PRCTL_ALLOWED  # thread names
    assert max(PRCTL_ALLOWED) < PRCTL_OPTION_SPACE


def test_the_filter_names_everything_it_denies() -> None:
    _flt, report = build_filter()
    assert report["unknown_to_libseccomp"] == []
    zone = main_stack_zone()
    assert zone is not None and report["mremap_denied_from"] == hex(zone)
    here = ctypes.c_int(0)
    assert ctypes.addressof(here) < zone  # the heap is below the stack's zone


INSTALL_PROGRAM = """
import os, socket, sys
from autoweave_plugins.sandbox.privileges import drop_privileges
from autoweave_plugins.sandbox.seccomp import Program, build_filter
program = Program(build_filter()[0])
before = socket.socket(); before.close()  # the control: allowed until the filter is in
drop_privileges()
program.install()
try:
    socket.socket()
except PermissionError:
    print(program.instructions, "refused")
"""


def test_the_compiled_program_is_the_filter_libseccomp_would_load() -> None:
    """Compiled once (the template), installed with one syscall: the kernel then refuses
    what the filter denies. In a fresh interpreter, as the filter cannot be taken off."""
    done = subprocess.run(
        [sys.executable, "-c", INSTALL_PROGRAM],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    instructions, verdict = done.stdout.split()
    assert verdict == "refused" and int(instructions) > 100


def test_sonames_only_runs_nothing_and_restores_find_library() -> None:
    original = ctypes.util.find_library
    with native.sonames_only():
        assert ctypes.util.find_library("c") == "libc.so.6"
        assert ctypes.util.find_library("udev") is None
    assert ctypes.util.find_library is original


def test_the_tripwire_refuses_programs_until_the_sandbox_is_complete(tmp_path: Path) -> None:
    """In a fresh interpreter: a program that would leave a marker is refused, then allowed."""
    before, after = tmp_path / "before", tmp_path / "after"
    script = f"""
import subprocess
from autoweave_plugins.sandbox import native
native.forbid_programs()
try:
    subprocess.run(["touch", {str(before)!r}])
except PermissionError as exc:
    print("refused", exc.errno)
native.sandbox_complete()
subprocess.run(["touch", {str(after)!r}])
"""
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused 1"
    assert not before.exists()  # evidence: the program never ran
    assert after.exists()  # ...and the hook steps aside for seccomp afterwards


def test_max_threads_is_validated_with_its_path() -> None:
    doc = b'{"name": "t", "version": "1.0.0", "entry": "main.py", "permissions": {"memory": {"max_threads": 0}}}'
    manifest, issues = check_manifest_bytes(doc)
    assert manifest is None
    assert [i.path for i in issues] == ["$.permissions.memory.max_threads"]
    ok, _ = check_manifest_bytes(doc.replace(b'"max_threads": 0', b'"max_threads": 8'))
    assert ok is not None and ok.permissions.max_threads == 8


def test_prepare_leaves_out_system_data_this_machine_lacks(monkeypatch: Any) -> None:
    """Left out once, in the template, rather than skipped and logged by every worker."""
    monkeypatch.setattr(sandbox, "runtime_read_paths", lambda: [sys.prefix, "/no/such/zoneinfo"])
    assert sandbox.prepare().read_paths == (sys.prefix,)


LANDLOCKED = """
import json, os, sys
from autoweave_plugins.sandbox.landlock import READ_FILE, Landlock
from autoweave_plugins.sandbox.privileges import drop_privileges
readable, writable, single, outside = sys.argv[1:5]
landlock = Landlock()
drop_privileges()
report = landlock.restrict(
    [readable, "/no/such/dir"], [(writable, "readwrite")], [(single, READ_FILE)]
)
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return type(exc).__name__
print(json.dumps({
    "report": report,
    "read": attempt(lambda: open(os.path.join(readable, "in.txt")).read()),
    "write_in_read_grant": attempt(lambda: open(os.path.join(readable, "new"), "w")),
    "write": attempt(lambda: open(os.path.join(writable, "made"), "w").write("x")),
    "single": attempt(lambda: open(single).read()),
    "outside": attempt(lambda: open(outside).read()),
}))
"""


def test_landlock_grants_exactly_its_rules(tmp_path: Path) -> None:
    """The ruleset made from plain integers (``Landlock``): each grant with its mode, a
    single file with file rights only, nothing else, and a missing path reported."""
    readable, writable = tmp_path / "readable", tmp_path / "writable"
    readable.mkdir()
    writable.mkdir()
    (readable / "in.txt").write_text("in")
    single, outside = tmp_path / "single.txt", tmp_path / "outside.txt"
    single.write_text("single")
    outside.write_text("outside")
    paths = [str(p) for p in (readable, writable, single, outside)]
    done = subprocess.run(
        [sys.executable, "-c", LANDLOCKED, *paths],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["report"]["missing_paths"] == ["/no/such/dir"]
    assert seen["report"]["tcp_denied"] is True
    assert (seen["read"], seen["write"], seen["single"]) == ("ok", "ok", "ok")
    assert seen["write_in_read_grant"] == "PermissionError"
    assert seen["outside"] == "PermissionError"
