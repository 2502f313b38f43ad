"""Oracles for the attack tests: evidence gathered outside the hostile plugin.

A hostile plugin's own report is a hint, never the verdict. The verdict comes from things the
plugin cannot forge: files on disk, hits counted by servers the test runs, signals the test
process receives, the host's own memory, the process table, and whether a sibling worker is
still alive and answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.loader import build_spec
from autoweave_plugins.process import WorkerProcess
from tests.helpers.net import tcp_server
from tests.helpers.workers import start_worker

__all__ = [
    "CALL_TIMEOUT",
    "LOAD_TIMEOUT",
    "PACK_STR",
    "PRELUDE",
    "RAW_WRITE",
    "SIBLING_CODE",
    "SIBLING_HOOKS",
    "HTTPRecorder",
    "HitCounter",
    "ReusableWorker",
    "assert_responsive",
    "host_rss",
    "http_recorder",
    "peak_rss",
    "read_proc",
    "reset_peak_rss",
    "restore_scheduling",
    "scheduling_of",
    "shmem_bytes",
    "sysv_keys",
    "sysv_random_key",
    "sysv_remove",
    "sysv_segment",
    "tcp_counter",
    "udp_counter",
]

LOAD_TIMEOUT = 15.0
CALL_TIMEOUT = 15.0

# Common head of every attack plugin: ``attempt`` runs one step and describes the outcome.
PRELUDE = '''
import os
import sys


def attempt(fn, *args, **kwargs):
    """Run one attack step and describe what happened instead of raising."""
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        return {
            "ok": False,
            "error": type(exc).__name__,
            "errno": getattr(exc, "errno", None),
            "detail": str(exc)[:300],
        }
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value[:300])
    elif not isinstance(value, (int, str, bool, type(None))):
        value = repr(value)[:300]
    return {"ok": True, "value": value}
'''

# For attack plugins that build msgpack by hand, so the SDK's encoder checks nothing.
PACK_STR = """
def pack_str(data):
    n = len(data)
    if n < 32:
        return bytes([0xA0 | n]) + data
    if n < 65536:
        return b"\\xda" + n.to_bytes(2, "big") + data
    return b"\\xdb" + n.to_bytes(4, "big") + data
"""

# For attack plugins that speak the wire protocol themselves: the RPC socket is fd argv[1].
RAW_WRITE = '''
import os
import sys


def write_raw(data):
    """Write all of ``data`` straight to the RPC socket, past the SDK's checks and limits."""
    fd = int(sys.argv[1])
    os.set_blocking(fd, True)
    try:
        view, sent = memoryview(data), 0
        while sent < len(data):
            sent += os.write(fd, view[sent:])
    finally:
        os.set_blocking(fd, False)
    return sent
'''

SIBLING_CODE = """
import os

def echo(value):
    return value

def pid():
    return os.getpid()
"""
SIBLING_HOOKS = {"onEcho": "echo", "onPid": "pid"}


async def assert_responsive(worker: WorkerProcess, limit: float = 1.0) -> float:
    """A benign worker answers a call in under ``limit`` seconds: the host is fine."""
    token = secrets.token_hex(8)
    started = time.perf_counter()
    answer = await worker.call("onEcho", token, timeout=limit + 1.0)
    elapsed = time.perf_counter() - started
    assert answer == token
    assert elapsed < limit, f"sibling call took {elapsed:.3f} s"
    return elapsed


class ReusableWorker:
    """A worker kept for a whole test module, replaced whenever it is found dead.

    Spawning an interpreter is most of the cost of a test. Attackers whose routes leave no
    state behind (a refused syscall changes nothing) and the benign sibling are shared this
    way; anything that kills its own worker on purpose gets a fresh one per test.
    """

    def __init__(self, plugin: DiscoveredPlugin, extra_imports: tuple[str, ...] = ()) -> None:
        self.plugin = plugin
        self.extra_imports = extra_imports
        self.worker: WorkerProcess | None = None
        self.respawns = 0

    async def ensure(self) -> WorkerProcess:
        if self.worker is not None and self.worker.alive:
            return self.worker
        if self.worker is not None:
            self.respawns += 1
            await self.worker.stop()
        worker = await start_worker()
        try:
            spec = build_spec(self.plugin, extra_imports=self.extra_imports)
            await worker.assign(spec, timeout=LOAD_TIMEOUT)
        except BaseException:
            await worker.stop()
            raise
        self.worker = worker
        return worker

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.stop()


def read_proc(path: str) -> bytes | None:
    """A /proc file's bytes, or None when this process may not read it."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except PermissionError:
        return None


def host_rss() -> int:
    """This (host) process's resident set, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS; returns that value.

    ``ru_maxrss`` only ever grows over the whole test session, so a peak measured with it
    depends on what ran before; clearing the high-water mark makes the measure per test.
    """
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return peak_rss()


def _kib_field(path: str, key: str) -> int:
    """The ``key:  <n> kB`` line of a /proc file such as status or meminfo, in bytes."""
    with open(path) as table:
        for line in table:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} line in {path}")


def peak_rss() -> int:
    """This process's peak RSS since the last ``reset_peak_rss``, in bytes."""
    return _kib_field("/proc/self/status", "VmHWM")


def shmem_bytes() -> int:
    """System-wide shared memory (tmpfs, memfd, shared anonymous mappings), in bytes."""
    return _kib_field("/proc/meminfo", "Shmem")


@dataclass
class HitCounter:
    """A local server that counts every connection or datagram it sees."""

    port: int = 0
    hits: int = 0
    payloads: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def tcp_counter() -> AsyncIterator[HitCounter]:
    """A TCP listener on 127.0.0.1 that counts accepted connections."""
    counter = HitCounter()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counter.hits += 1
        with contextlib.suppress(Exception):
            counter.payloads.append(await asyncio.wait_for(reader.read(256), 0.5))
        writer.close()

    async with tcp_server(accept) as counter.port:
        yield counter


class _DatagramCounter(asyncio.DatagramProtocol):
    def __init__(self, counter: HitCounter) -> None:
        self.counter = counter

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.counter.hits += 1
        self.counter.payloads.append(data)


@contextlib.asynccontextmanager
async def udp_counter() -> AsyncIterator[HitCounter]:
    """A UDP socket on 127.0.0.1 that counts datagrams."""
    counter = HitCounter()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _DatagramCounter(counter), local_addr=("127.0.0.1", 0)
    )
    counter.port = transport.get_extra_info("sockname")[1]
    try:
        yield counter
    finally:
        transport.close()


@dataclass
class HTTPRecorder:
    """A tiny HTTP/1.1 server on 127.0.0.1 that records every request target it receives.

    ``/allowed/...`` answers 200; a path in ``redirects`` answers 302 to its Location; anything
    else answers 200 with a secret body (so a refused URL that leaks through is obvious).
    """

    port: int = 0
    targets: list[str] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)
    secret_body: bytes = b""

    def hits(self, fragment: str) -> list[str]:
        return [target for target in self.targets if fragment in target]

    def response_for(self, target: str) -> bytes:
        location = self.redirects.get(target)
        if location is not None:
            head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
            return (head + "Connection: close\r\n\r\n").encode("latin-1")
        body = b"allowed:" + target.encode() if target.startswith("/allowed/") else self.secret_body
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        return (head + "Connection: close\r\n\r\n").encode("latin-1") + body


@contextlib.asynccontextmanager
async def http_recorder() -> AsyncIterator[HTTPRecorder]:
    recorder = HTTPRecorder(secret_body=b"SECRET-" + secrets.token_hex(8).encode())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            target = parts[1] if len(parts) == 3 else request_line
            recorder.targets.append(target)
            writer.write(recorder.response_for(target))
            await asyncio.wait_for(writer.drain(), 5)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async with tcp_server(handle) as recorder.port:
        yield recorder


# --- System V IPC (shared memory, message queues, semaphores) -------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p
_libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
_libc.shmdt.argtypes = (ctypes.c_void_p,)
_IPC_CREAT, _IPC_EXCL, _IPC_RMID = 0o1000, 0o2000, 0


def sysv_random_key() -> int:
    return 0x5EC00000 | secrets.randbelow(1 << 20)


def sysv_keys(kind: str) -> set[int]:
    """Keys of the System V objects of ``kind`` (shm, msg, sem) the kernel lists now."""
    with open(f"/proc/sysvipc/{kind}") as table:
        rows = table.read().splitlines()[1:]
    return {int(row.split()[0]) for row in rows if row.strip()}


def sysv_remove(kind: str, key: int) -> None:
    """Remove the object with ``key`` if it exists (cleans up what an attack left behind)."""
    if kind == "shm":
        ident = _libc.shmget(key, 0, 0)
        if ident >= 0:
            _libc.shmctl(ident, _IPC_RMID, None)
    elif kind == "msg":
        ident = _libc.msgget(key, 0)
        if ident >= 0:
            _libc.msgctl(ident, _IPC_RMID, None)
    else:
        ident = _libc.semget(key, 0, 0)
        if ident >= 0:
            _libc.semctl(ident, 0, _IPC_RMID)


@contextlib.contextmanager
def sysv_segment(content: bytes) -> Iterator[tuple[int, Callable[[], bytes]]]:
    """A shared memory segment owned by this (host) process, holding ``content``."""
    key = sysv_random_key()
    ident = _libc.shmget(key, 4096, _IPC_CREAT | _IPC_EXCL | 0o600)
    if ident < 0:
        raise OSError(ctypes.get_errno(), "shmget failed in the host")
    address = _libc.shmat(ident, None, 0)
    try:
        ctypes.memmove(address, content, len(content))

        def read_back() -> bytes:
            return ctypes.string_at(address, len(content))

        yield key, read_back
    finally:
        _libc.shmdt(address)
        _libc.shmctl(ident, _IPC_RMID, None)


# --- scheduling (nice, CPU affinity, policy, I/O priority) -----------------------------------

_SYS_IOPRIO_GET, _SYS_IOPRIO_SET, _IOPRIO_WHO_PROCESS = 252, 251, 1


@dataclass(frozen=True)
class Scheduling:
    nice: int
    affinity: frozenset[int]
    policy: int
    ioprio: int


def scheduling_of(pid: int) -> Scheduling:
    """How the kernel schedules ``pid``, read from outside it."""
    return Scheduling(
        os.getpriority(os.PRIO_PROCESS, pid),
        frozenset(os.sched_getaffinity(pid)),
        os.sched_getscheduler(pid),
        int(_libc.syscall(_SYS_IOPRIO_GET, _IOPRIO_WHO_PROCESS, pid)),
    )


def restore_scheduling(saved: Scheduling) -> None:
    """Best effort: put this process back the way it was (an unprivileged host may fail)."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, saved.affinity)
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, saved.policy, os.sched_param(0))
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, saved.nice)
    _libc.syscall(_SYS_IOPRIO_SET, _IOPRIO_WHO_PROCESS, 0, saved.ioprio)
