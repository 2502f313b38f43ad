"""The template's pure pieces: the on-disk fingerprint, its messages, and its settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins.errors import ConfigError
from autoweave_plugins.settings import LimitsConfig, ManagerConfig, WorkerPoolConfig
from autoweave_plugins.startmethod import StartMethod
from autoweave_plugins.template import decode_message, fingerprint, on_disk
from autoweave_plugins.worker.sibling import ARCHES


def entries(*paths: Path) -> list[list[Any]]:
    result: list[list[Any]] = []
    for path in paths:
        status = path.stat()
        result.append([str(path), status.st_mtime_ns, status.st_size])
    return result


def test_the_fingerprint_changes_with_mtime_size_or_a_missing_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text("x = 1\n")
    second.write_text("y = 2\n")
    seen = entries(first, second)
    assert fingerprint(on_disk(seen)) == fingerprint(seen)  # nothing changed
    status = first.stat()
    os.utime(first, ns=(status.st_atime_ns, status.st_mtime_ns + 1))
    assert fingerprint(on_disk(seen)) != fingerprint(seen)
    os.utime(first, ns=(status.st_atime_ns, status.st_mtime_ns))
    second.write_text("y = 22\n")  # a different size, whatever the clock's resolution
    os.utime(second, ns=(second.stat().st_atime_ns, seen[1][1]))
    assert fingerprint(on_disk(seen)) != fingerprint(seen)
    second.unlink()
    assert on_disk(seen)[1][1:] == [-1, -1]


@given(st.binary(max_size=256))
def test_any_bytes_from_the_template_decode_to_a_map(data: bytes) -> None:
    assert isinstance(decode_message(data), dict)


@given(
    st.one_of(
        st.integers(-(2**63), 2**64 - 1), st.text(), st.lists(st.booleans(), max_size=3), st.none()
    )
)
def test_a_message_that_is_not_a_map_is_an_error(value: object) -> None:
    assert "error" in decode_message(msgpack.packb(value))


def test_start_method_settings_are_validated() -> None:
    assert WorkerPoolConfig().start_method == "template"
    with pytest.raises(ConfigError, match=r"worker_pool\.start_method: must be one of"):
        ManagerConfig.from_mapping({"worker_pool": {"start_method": "forkserver"}})
    with pytest.raises(ConfigError, match=r"worker_pool\.template_max_forks: must be >= 0"):
        ManagerConfig.from_mapping({"worker_pool": {"template_max_forks": -1}})
    with pytest.raises(ConfigError, match=r"worker_pool\.template_max_age: must be >= 0"):
        ManagerConfig.from_mapping({"worker_pool": {"template_max_age": -1.0}})


async def test_spawn_requested_starts_no_template() -> None:
    method = StartMethod(WorkerPoolConfig(start_method="spawn"), LimitsConfig())
    await method.open()
    assert method.template is None and method.active == "spawn"
    assert method.snapshot() == {
        "requested": "spawn",
        "active": "spawn",
        "fallback_reason": None,
        "template_pid": None,
        "template_forks": 0,
        "template_starts": 0,
        "template_replaced": {},
    }
    await method.close()


def test_the_clone_argument_order_is_known_for_each_supported_machine() -> None:
    # x86_64 passes the child TID pointer 4th, aarch64 (CLONE_BACKWARDS) 5th.
    assert ARCHES["x86_64"].child_tid_arg == 3 and ARCHES["aarch64"].child_tid_arg == 4
    assert os.uname().machine not in ARCHES or ARCHES[os.uname().machine].clone > 0
