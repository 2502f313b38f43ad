"""Attack class: the worker's view of the machine, with the namespace layer alone.

A hostile "plugin part" runs in ``tests/world_child.py`` after it has entered its world, with
no other sandbox layer, so these tests hold the namespace layer to account by itself. Its
loot goes to its one write grant; the verdict comes from outside: that file on the host,
hits counted by servers the test runs, the host's process table and the worker's channel.
Each attack also runs once with the namespaces refused (the fallback), where it must
succeed: that proves each oracle can see a breach, so its silence in a world means something.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from autoweave_plugins.sandbox.namespaces import worker_pid
from tests.helpers.processes import children_of as children
from tests.security._support import sysv_segment, tcp_counter, udp_counter
from tests.worlds import (
    CHILD,
    as_unprivileged,
    next_event,
    run_world,
    shared_dir,
    start_world,
    write_grant,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces"),
]
MODES = ["world", "fallback"]


class Scene:
    """A plugin folder beside a sibling's with a secret, a host config with another, loot."""

    def __init__(self, root: Path) -> None:
        self.token = secrets.token_hex(12)
        self.plugin = root / "plugins" / "attacker"
        self.plugin.mkdir(parents=True)
        sibling = root / "plugins" / "sibling"
        sibling.mkdir()
        self.sibling_secret = sibling / "secret.txt"
        self.sibling_secret.write_text(f"SIBLING-{self.token}")
        self.host_config = root / "host.toml"
        self.host_config.write_text(f'api_key = "HOST-{self.token}"\n')
        self.loot_dir = write_grant(root / "loot")
        self.loot = self.loot_dir / "loot.txt"

    def config(self, mode: str, code: str, **extra: Any) -> dict[str, Any]:
        world = {"folder": str(self.plugin), "grants": [(str(self.loot_dir), "readwrite")]}
        found: dict[str, Any] = {"world": world, "code": code, **extra}
        if mode == "fallback":
            found["disabled"] = ["mount"]
        return found

    def stolen(self) -> str:
        return self.loot.read_text() if self.loot.exists() else ""


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    return Scene(tmp_path)


LOOT = """
def keep(text):
    with open(config["loot"], "a") as loot:
        loot.write(text + "\\n")
"""


@pytest.mark.parametrize("mode", MODES)
async def test_processes_files_and_ipc_of_the_host_are_out_of_sight(
    scene: Scene, mode: str
) -> None:
    # A decoy host process carries a secret in its command line; a SysV segment holds one.
    decoy = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdin.read()", f"DECOY-{scene.token}",
        stdin=asyncio.subprocess.PIPE,
    )  # fmt: skip
    code = (
        LOOT
        + """
import ctypes, os
for entry in os.listdir("/proc"):
    for name in ("cmdline", "environ"):
        try:
            keep(open(f"/proc/{entry}/{name}", "rb").read().decode(errors="replace"))
        except OSError:
            pass
for path in config["targets"]:
    try:
        keep(open(path).read())
    except OSError as exc:
        keep(f"{path}: {exc.strerror}")
libc = ctypes.CDLL(None)
libc.shmat.restype = ctypes.c_void_p
ident = libc.shmget(config["shm_key"], 0, 0)
if ident >= 0:
    address = libc.shmat(ident, None, 0o10000)
    keep(ctypes.string_at(address, 64).decode(errors="replace"))
"""
    )
    try:
        with sysv_segment(f"SHM-{scene.token}".encode()) as (key, _read_back):
            targets = [str(scene.sibling_secret), str(scene.host_config)]
            extra = {"targets": targets, "shm_key": key, "loot": str(scene.loot)}
            outcome = await run_world(scene.config(mode, code, **extra))
    finally:
        assert decoy.stdin is not None
        decoy.stdin.close()
        await decoy.wait()
    assert outcome.returncode == 0, outcome.stderr
    stolen = scene.stolen()
    leaks = [
        kind for kind in ("DECOY", "SIBLING", "HOST", "SHM") if f"{kind}-{scene.token}" in stolen
    ]
    if mode == "world":
        assert leaks == []
    else:
        assert leaks == ["DECOY", "SIBLING", "HOST", "SHM"]


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("mode", MODES)
async def test_no_tcp_udp_or_abstract_socket_reaches_the_host(scene: Scene, mode: str) -> None:
    abstract = f"\0aw-world-{scene.token}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(abstract)
    listener.listen()
    listener.setblocking(False)
    code = (
        LOOT
        + """
import socket
for kind, port in (("tcp", config["tcp"]), ("udp", config["udp"])):
    try:
        if kind == "tcp":
            socket.create_connection(("127.0.0.1", port), timeout=2).sendall(b"hi")
        else:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hi", ("127.0.0.1", port))
        keep(f"{kind} sent")
    except OSError as exc:
        keep(f"{kind}: {exc.strerror}")
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(config["abstract"])
except OSError as exc:
    keep(f"abstract: {exc.strerror}")
"""
    )
    try:
        async with tcp_counter() as tcp, udp_counter() as udp:
            extra = {
                "tcp": tcp.port,
                "udp": udp.port,
                "abstract": abstract,
                "loot": str(scene.loot),
            }
            outcome = await run_world(scene.config(mode, code, **extra))
            if mode == "fallback":  # the servers' callbacks may trail the child's exit
                await until(lambda: tcp.hits and udp.hits)
        try:
            listener.accept()[0].close()
            abstract_hits = 1
        except BlockingIOError:
            abstract_hits = 0
    finally:
        listener.close()
    assert outcome.returncode == 0, outcome.stderr
    hits = (tcp.hits, udp.hits, abstract_hits)
    if mode == "world":
        assert hits == (0, 0, 0), scene.stolen()
        assert "Network is unreachable" in scene.stolen()
    else:
        assert hits == (1, 1, 1), scene.stolen()


HOST = """
import json, os, subprocess, sys
config = json.loads(sys.argv[1])
config["die_with_parent"] = os.getpid()
fd = int(sys.argv[2])
child = subprocess.Popen(
    [sys.executable, "-I", sys.argv[3], json.dumps(config)], pass_fds=(fd,),
    env={"AW_MARKER": sys.argv[4]}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
)
os.close(fd)
print(json.dumps({"worker": child.pid}), flush=True)
for line in child.stdout:  # relayed, so the test's pipe is the host's alone
    sys.stdout.buffer.write(line)
    sys.stdout.flush()
child.wait()
"""

STAY = """
import ctypes, os, socket, threading
ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG 0: do not die with the parent
channel = socket.socket(fileno=config["fd"])

def serve():
    while channel.recv(16):
        channel.sendall(b"pong")

threading.Thread(target=serve).start()  # not a daemon: the process stays for it
emit({"ready": os.getpid()})
"""


def marked(token: str) -> list[int]:
    """Every process on the machine whose environment carries ``token``."""
    needle = f"AW_MARKER={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                found.append(int(entry))
    return found


async def exited(pidfd: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, ready)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)


async def ping(end: socket.socket) -> bytes:
    """The worker's answer on its channel; b"" once nothing holds the other end."""
    end.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(end, b"ping")
        return await loop.sock_recv(end, 16)
    except (BrokenPipeError, ConnectionResetError):
        return b""


@pytest_asyncio.fixture(loop_scope="module")
async def channel() -> AsyncIterator[tuple[socket.socket, socket.socket]]:
    pair = socket.socketpair()
    yield pair
    for end in pair:
        end.close()


@pytest.mark.parametrize("mode", MODES)
async def test_nothing_of_the_worker_outlives_a_killed_host(
    scene: Scene, mode: str, channel: tuple[socket.socket, socket.socket]
) -> None:
    host_end, worker_end = channel
    token = secrets.token_hex(8)
    config = scene.config(mode, STAY, fd=worker_end.fileno())
    host = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-c", HOST, json.dumps(config), str(worker_end.fileno()),
        str(CHILD), token, pass_fds=(worker_end.fileno(),), stdout=asyncio.subprocess.PIPE,
        env={}, start_new_session=True,
    )  # fmt: skip
    worker_end.close()
    assert host.stdout is not None
    outer = json.loads(await asyncio.wait_for(host.stdout.readline(), 30))["worker"]
    assert "ready" in json.loads(await asyncio.wait_for(host.stdout.readline(), 30))
    family = sorted(marked(token))
    assert outer in family and len(family) == (3 if mode == "world" else 1)
    pidfds = [os.pidfd_open(pid) for pid in family]
    try:
        host.kill()  # SIGKILL: the host gets no chance to clean up
        await host.wait()  # by now the kernel has sent every parent-death signal due
        if mode == "fallback":  # the oracle works: a plugin that opts out survives its host
            assert await asyncio.wait_for(ping(host_end), 30) == b"pong"
            assert marked(token) == family
            return
        await asyncio.wait_for(asyncio.gather(*(exited(fd) for fd in pidfds)), 30)
        assert await asyncio.wait_for(ping(host_end), 30) == b""
        assert marked(token) == []  # nothing of it is left, threads and all
    finally:
        for pid in marked(token):
            os.kill(pid, signal.SIGKILL)
        for fd in pidfds:
            os.close(fd)


TAKEOVER = """
import ctypes, errno, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
attached = libc.ptrace(PTRACE_ATTACH, 1, None, None) == 0
emit({"attach": "attached" if attached else errno.errorcode[ctypes.get_errno()]})
sys.stdin.readline()  # the test looks at pid 1 from outside meanwhile
if attached:
    os.waitpid(1, 0)
    libc.ptrace(PTRACE_DETACH, 1, None, None)
refused = []
for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):
    try:
        os.kill(1, sig)
    except OSError as exc:
        refused.append(errno.errorcode[exc.errno])
emit({"signalled": True})
sys.stdin.readline()
"""


def tracer_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("TracerPid:"))


def state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


@pytest.mark.parametrize("host", ["root", "unprivileged"])
async def test_the_worker_cannot_take_over_or_kill_its_pid_1(host: str) -> None:
    with contextlib.ExitStack() as stack:
        wrapper = stack.enter_context(as_unprivileged()) if host == "unprivileged" else ()
        root = stack.enter_context(shared_dir())
        (root / "plugin").mkdir()
        config = {"world": {"folder": str(root / "plugin")}, "code": TAKEOVER}
        world = await start_world(config, wrapper=wrapper)
        try:
            assert world.stdin is not None
            attempt = await next_event(world)
            outer = world.pid
            assert outer is not None
            holder = next(pid for pid in children(outer) if pid != worker_pid(outer))
            assert tracer_of(holder) == 0, attempt  # pid 1 is nobody's puppet
            world.stdin.write(b"\n")
            assert await next_event(world) == {"signalled": True}
            assert state_of(holder) in ("S", "R")  # still there, and running
            world.stdin.write(b"\n")
            await asyncio.wait_for(world.wait(), 30)
        finally:
            if world.returncode is None:
                world.kill()
                await world.wait()
