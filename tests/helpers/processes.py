"""The process table as the host sees it: who is alive, and what a process has started.

Evidence read from the kernel, never from what a worker says about itself.
"""

from __future__ import annotations

import psutil

__all__ = ["descendants", "process_exists"]


def process_exists(pid: int) -> bool:
    """``pid`` is running (a zombie has exited: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def descendants(pid: int | None = None, *, zombies: bool = False) -> set[int]:
    """Pids below ``pid`` (this process by default), at any depth; exited ones if ``zombies``.

    A ``pid`` that no longer exists has none.
    """
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    return {p.pid for p in below if zombies or process_exists(p.pid)}


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid``, live or exited but not yet reaped."""
    try:
        return [p.pid for p in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []
