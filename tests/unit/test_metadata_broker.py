"""The host's chmod/utime broker, driven through a real socket with real descriptors.

The broker runs on this test's event loop; the "worker" end is a plain socket here, so that
requests a worker's wrapper would never send (several descriptors, garbage, setuid modes) can
be sent too. Verdicts are read from the disk.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import pytest_asyncio

from autoweave_plugins.broker.metadata import MetadataService, private_tmp_device, writable_roots


@pytest_asyncio.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[socket.socket, Path, MetadataService]]:
    grant = tmp_path / "grant"
    grant.mkdir()
    host_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    service = MetadataService(host_end, writable_roots([(str(grant), "readwrite")]), rate=50)
    service.start()
    worker_end.setblocking(False)
    try:
        yield worker_end, grant, service
    finally:
        service.close()
        worker_end.close()


async def ask(sock: socket.socket, op: list[Any], fds: list[int], raw: bytes | None = None) -> Any:
    loop = asyncio.get_running_loop()
    socket.send_fds(sock, [raw if raw is not None else msgpack.packb(op)], fds)
    return msgpack.unpackb(await loop.sock_recv(sock, 1024))


def opened(path: Path, flags: int = os.O_PATH) -> int:
    return os.open(path, flags | os.O_CLOEXEC)


async def test_changes_inside_the_grant(broker: tuple[socket.socket, Path, Any]) -> None:
    sock, grant, _service = broker
    target = grant / "sub" / "file"
    target.parent.mkdir()
    target.write_text("x")
    fd = opened(target)
    try:
        assert await ask(sock, ["chmod", 0o600], [fd]) == [0]
        assert await ask(sock, ["utime", [5 * 10**9, 7 * 10**9 + 3]], [fd]) == [0]
    finally:
        os.close(fd)
    info = target.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_atime_ns, info.st_mtime_ns) == (5 * 10**9, 7 * 10**9 + 3)
    fd = opened(target.parent)
    try:
        assert await ask(sock, ["utime", None], [fd]) == [0]  # now
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "where", ["outside", "grant_itself", "sibling_prefix", "deleted", "hardlinked"]
)
async def test_refuses_what_is_not_inside_a_writable_grant(
    broker: tuple[socket.socket, Path, Any], tmp_path: Path, where: str
) -> None:
    sock, grant, _service = broker
    if where == "outside":
        target = tmp_path / "host-file"
    elif where == "grant_itself":
        target = grant
    elif where == "sibling_prefix":  # /x/grant-evil is not inside /x/grant
        target = tmp_path / "grant-evil"
    else:
        target = grant / "victim"
    if where in ("outside", "sibling_prefix", "deleted", "hardlinked"):
        target.write_text("x")
    target.chmod(0o700 if target.is_dir() else 0o600)
    if where == "hardlinked":
        os.link(target, grant / "second-name")
    before = target.stat()
    fd = opened(target)
    try:
        if where == "deleted":
            target.unlink()
        reply = await ask(sock, ["chmod", 0o777], [fd])
        assert reply[0] != 0, reply
        after = os.fstat(fd)
    finally:
        os.close(fd)
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)


async def test_never_sets_setuid_or_setgid(broker: tuple[socket.socket, Path, Any]) -> None:
    sock, grant, _service = broker
    target = grant / "tool"
    target.write_text("#!/bin/sh\n")
    fd = opened(target)
    try:
        for mode in (0o4755, 0o2755, 0o6777, 0o10000, -1):
            assert (await ask(sock, ["chmod", mode], [fd]))[0] != 0, oct(mode)
    finally:
        os.close(fd)
    assert stat.S_IMODE(target.stat().st_mode) & (stat.S_ISUID | stat.S_ISGID) == 0


async def test_malformed_requests_are_answered_and_their_descriptors_closed(
    broker: tuple[socket.socket, Path, Any],
) -> None:
    sock, grant, service = broker
    target = grant / "f"
    target.write_text("x")
    a, b = opened(target), opened(target)
    open_before = len(os.listdir("/proc/self/fd"))
    try:
        cases: list[tuple[list[Any], list[int], bytes | None]] = [
            (["chmod", 0o600], [], None),  # no descriptor
            (["chmod", 0o600], [a, b], None),  # two
            ([], [a], b"\xc1garbage"),  # not msgpack
            (["rm", "-rf"], [a], None),  # no such operation
            (["utime", [1]], [a], None),  # malformed times
            (["utime", [1 << 63, 0]], [a], None),  # out of range
            (["chmod", "0o777"], [a], None),
        ]
        for op, fds, raw in cases:
            reply = await ask(sock, op, fds, raw)
            assert reply[0] != 0, (op, reply)
    finally:
        os.close(a)
        os.close(b)
    assert stat.S_IMODE(target.stat().st_mode) != 0o600
    assert service.served == len(cases)
    # Every copy the broker received was closed: only the test's own two went.
    assert len(os.listdir("/proc/self/fd")) == open_before - 2


async def test_a_flood_is_paced_by_the_rate(broker: tuple[socket.socket, Path, Any]) -> None:
    sock, grant, service = broker
    target = grant / "f"
    target.write_text("x")
    fd = opened(target)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for _ in range(100):  # rate 50/s and a burst of 50: at least a second
            assert await ask(sock, ["utime", None], [fd]) == [0]
    finally:
        os.close(fd)
    assert loop.time() - started >= 0.9
    assert service.served == 100


def test_grants_with_symlinks_are_not_writable_roots(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    roots = writable_roots(
        [(str(tmp_path / "link"), "readwrite"), (str(real), "read"), ("/nowhere", "write")],
        str(real),
    )
    assert roots == ("/nowhere", str(real))


@pytest.mark.parametrize("known", [True, False])
async def test_the_workers_own_tmp_is_known_by_its_device(tmp_path: Path, known: bool) -> None:
    """A world's /tmp has no host path: a file on its device is accepted, found or not."""
    elsewhere = tmp_path / "world-tmp" / "file"
    elsewhere.parent.mkdir()
    elsewhere.write_text("x")
    elsewhere.chmod(0o600)
    device = os.stat(elsewhere).st_dev
    asked: list[int] = []

    def own_tmp() -> int | None:
        asked.append(1)
        return device if known else None

    host_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    service = MetadataService(host_end, (), own_tmp=own_tmp)
    service.start()
    worker_end.setblocking(False)
    fd = opened(elsewhere)
    try:
        answers = [await ask(worker_end, ["chmod", 0o640], [fd]) for _ in range(2)]
        setuid = await ask(worker_end, ["chmod", 0o4755], [fd])
    finally:
        os.close(fd)
        service.close()
        worker_end.close()
    mode = stat.S_IMODE(elsewhere.stat().st_mode)
    assert setuid[0] != 0 and not mode & stat.S_ISUID
    if known:
        assert answers == [[0], [0]] and mode == 0o640
        assert len(asked) == 1  # found once, then kept
    else:
        assert all(answer[0] != 0 for answer in answers) and mode == 0o600
        assert len(asked) == 3  # never found: asked again each time


def test_a_worker_without_a_world_has_no_private_tmp_device() -> None:
    assert private_tmp_device(os.getpid()) is None
