"""The memory check's read: one open /proc file per worker, read again in place."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys

from autoweave_plugins.sampling import PAGE_SIZE, RssReader


def _statm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def test_it_reads_the_same_rss_as_statm_and_keeps_one_descriptor() -> None:
    reader = RssReader()
    first = reader.read(os.getpid())
    fd = reader.fd
    assert first is not None and abs(first - _statm_rss(os.getpid())) < 64 * PAGE_SIZE
    ballast = mmap.mmap(-1, 32 << 20)  # a fresh mapping, every page touched: 32 MiB more
    for offset in range(0, len(ballast), PAGE_SIZE):
        ballast[offset] = 1
    second = reader.read(os.getpid())
    assert reader.fd == fd  # read again in place, not reopened
    assert second is not None and second - first >= 24 << 20
    reader.close()
    assert reader.fd is None
    ballast.close()


def test_another_pid_reopens_and_a_gone_process_reads_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    reader = RssReader()
    try:
        assert reader.read(os.getpid()) is not None
        assert reader.read(child.pid) is not None and reader.pid == child.pid
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    # Reaped: the open file still names that process, and now reads nothing.
    assert reader.read(child.pid) is None and reader.fd is None
    assert reader.read(None) is None
