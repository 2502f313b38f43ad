"""Attack class 3: direct network access (TCP connect, UDP sendto, bind/listen, unix sockets).

The test runs its own TCP and UDP servers on 127.0.0.1 (and unix sockets in a private
directory) and counts what reaches them; after the attack, a sentinel the test sends itself
must be all that arrived. The plugin is granted ``socket`` and ``ctypes`` imports, so only the
kernel (seccomp denies ``socket()``, Landlock denies TCP bind/connect and scopes abstract unix
sockets) stands in the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from autoweave_plugins.process import WorkerProcess
from tests.helpers.waiting import wait_until
from tests.helpers.workers import write_plugin
from tests.security._support import (
    CALL_TIMEOUT,
    PRELUDE,
    HitCounter,
    ReusableWorker,
    assert_responsive,
    tcp_counter,
    udp_counter,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

NET_CODE = (
    PRELUDE
    + '''
import asyncio
import ctypes
import socket

SYS_SOCKET, SYS_CONNECT, SYS_SENDTO = 41, 42, 44


def tcp_connect(port):
    conn = socket.create_connection(("127.0.0.1", port), timeout=2)
    conn.sendall(b"hello from a hostile plugin")
    return "connected"


def udp_sendto(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return sock.sendto(b"hello from a hostile plugin", ("127.0.0.1", port))


def tcp_listen():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    LISTENERS.append(sock)
    return sock.getsockname()[1]


def sockaddr_in(port):
    # struct sockaddr_in: family, port (big-endian), 127.0.0.1, zero padding
    return (2).to_bytes(2, "little") + port.to_bytes(2, "big") + bytes([127, 0, 0, 1]) + bytes(8)


def raw_syscalls(port, kind):
    """socket/connect/sendto by raw syscall numbers, past every Python wrapper."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(SYS_SOCKET, 2, kind, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "socket() syscall refused")
    address = sockaddr_in(port)
    if kind == 1:
        if libc.syscall(SYS_CONNECT, fd, address, len(address)) < 0:
            raise OSError(ctypes.get_errno(), "connect() syscall refused")
        return "connected"
    sent = libc.syscall(SYS_SENDTO, fd, b"raw", 3, 0, address, len(address))
    if sent < 0:
        raise OSError(ctypes.get_errno(), "sendto() syscall refused")
    return sent


def unix_pair_to_inet(port):
    a, _b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    return a.sendto(b"x", ("127.0.0.1", port))


async def asyncio_connect(port):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    writer.write(b"hello")
    await writer.drain()
    return "connected"


LISTENERS = []


async def attack(route, tcp_port, udp_port):
    if route == "tcp_connect":
        return attempt(tcp_connect, tcp_port)
    if route == "udp_sendto":
        return attempt(udp_sendto, udp_port)
    if route == "tcp_bind_listen":
        return attempt(tcp_listen)
    if route == "raw_syscall_tcp":
        return attempt(raw_syscalls, tcp_port, 1)
    if route == "raw_syscall_udp":
        return attempt(raw_syscalls, udp_port, 2)
    if route == "unix_socketpair_to_inet":
        return attempt(unix_pair_to_inet, udp_port)
    if route == "asyncio_open_connection":
        try:
            return {"ok": True, "value": await asyncio_connect(tcp_port)}
        except BaseException as exc:
            return {"ok": False, "error": type(exc).__name__, "detail": str(exc)[:300]}
    raise ValueError(route)


def unix_dgram_sendto(path):
    a, _b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    return a.sendto(b"hello from a hostile plugin", path)


def unix_dgram_connect(path):
    a, _b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.connect(path)
    return a.send(b"hello from a hostile plugin")


def unix_stream_connect(path):
    a, _b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.connect(path)
    return a.send(b"hello from a hostile plugin")


def unix_attack(route, path):
    if route in ("dgram_sendto", "abstract_dgram_sendto"):
        return attempt(unix_dgram_sendto, path)
    if route == "dgram_connect":
        return attempt(unix_dgram_connect, path)
    if route == "stream_connect":
        return attempt(unix_stream_connect, path)
    raise ValueError(route)
'''
)
HOOKS = {"onAttack": "attack", "onUnix": "unix_attack"}
GRANTS = ("socket", "ctypes")


SENTINEL = b"sentinel"


async def _sentinel(tcp: HitCounter, udp: HitCounter) -> None:
    """Send one connection and one datagram from this host and wait until both are counted.

    Before an attack it proves the counters work. After one it flushes: accepting connections
    and receiving datagrams are first in, first out, so anything the attack sent before it
    returned has been counted by the time the sentinel has.
    """
    _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", tcp.port), 5)
    writer.write(SENTINEL)
    await writer.drain()
    writer.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(SENTINEL, ("127.0.0.1", udp.port))
    await wait_until(
        lambda: SENTINEL in tcp.payloads and SENTINEL in udp.payloads,
        "the sentinel connection and datagram are counted",
        timeout=2.0,
    )


async def _prove_counting(tcp: HitCounter, udp: HitCounter) -> None:
    """Control: the counters really see a connection and a datagram from this host."""
    await _sentinel(tcp, udp)
    assert (tcp.hits, udp.hits) == (1, 1)
    tcp.hits = udp.hits = 0
    tcp.payloads.clear()
    udp.payloads.clear()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def _attacker_holder(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ReusableWorker]:
    root = tmp_path_factory.mktemp("plugins")
    holder = ReusableWorker(write_plugin(root, "net-attacker", NET_CODE, hooks=HOOKS), GRANTS)
    try:
        yield holder
    finally:
        await holder.close()


@pytest_asyncio.fixture(loop_scope="module")
async def attacker(_attacker_holder: ReusableWorker) -> WorkerProcess:
    """The module's attacker worker (a refused syscall leaves no state), respawned if dead."""
    return await _attacker_holder.ensure()


@pytest.mark.parametrize(
    "route",
    [
        "tcp_connect",
        "udp_sendto",
        "tcp_bind_listen",
        "raw_syscall_tcp",
        "raw_syscall_udp",
        "unix_socketpair_to_inet",
        "asyncio_open_connection",
    ],
)
async def test_no_direct_network(
    attacker: WorkerProcess, sibling: WorkerProcess, route: str
) -> None:
    async with tcp_counter() as tcp, udp_counter() as udp:
        await _prove_counting(tcp, udp)
        report = await attacker.call("onAttack", route, tcp.port, udp.port, timeout=CALL_TIMEOUT)
        await _sentinel(tcp, udp)
        # Evidence outside the plugin: the servers saw nothing but the sentinel.
        assert (tcp.hits, udp.hits) == (1, 1), (tcp.payloads, udp.payloads, report)
    assert attacker.alive
    assert report["ok"] is False, report
    assert report["error"] in ("PermissionError", "OSError", "TypeError"), report
    await assert_responsive(sibling)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private directory with a short path (unix socket paths are limited to 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="aw-sec-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def _unix_targets(directory: Path) -> AsyncIterator[tuple[dict[str, str], list[bytes]]]:
    """A datagram socket, a stream listener and an abstract datagram socket, all counting."""
    received: list[bytes] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(b"stream connection")
        writer.close()

    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(str(directory / "dgram.sock"))
    dgram.setblocking(False)
    abstract_name = f"\0autoweave-sec-{directory.name}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(abstract_name)
    abstract.setblocking(False)
    server = await asyncio.start_unix_server(accept, str(directory / "stream.sock"))
    paths = {
        "dgram_sendto": str(directory / "dgram.sock"),
        "dgram_connect": str(directory / "dgram.sock"),
        "abstract_dgram_sendto": abstract_name,
        "stream_connect": str(directory / "stream.sock"),
    }
    try:
        yield paths, received
    finally:
        for sock in (dgram, abstract):
            with contextlib.suppress(BlockingIOError):
                while True:
                    received.append(sock.recv(4096))
            sock.close()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


@pytest.mark.parametrize(
    "route",
    [
        "dgram_sendto",
        "dgram_connect",
        "abstract_dgram_sendto",
        "stream_connect",
    ],
)
async def test_no_unix_sockets_outside(
    attacker: WorkerProcess, short_dir: Path, sibling: WorkerProcess, route: str
) -> None:
    async with _unix_targets(short_dir) as (paths, received):
        # Control: the targets really count what reaches them.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            probe.sendto(b"control", paths["dgram_sendto"])
            probe.sendto(b"control", paths["abstract_dgram_sendto"])
        report = await attacker.call("onUnix", route, paths[route], timeout=CALL_TIMEOUT)
        # Datagrams are queued by the time the attack's send returns; a stream connection is
        # counted when accepted, first in, first out: once the server has accepted and hung up
        # on a sentinel of ours, any connection the attack made has been counted.
        reader, writer = await asyncio.open_unix_connection(paths["stream_connect"])
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    await assert_responsive(sibling)
    # Evidence outside the plugin: only the two control datagrams and the sentinel arrived.
    expected = [b"control", b"control", b"stream connection"]
    assert sorted(received) == expected, (received, report)
    assert report["ok"] is False, report
