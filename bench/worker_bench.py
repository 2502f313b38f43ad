"""Worker costs: blank start, assign on a warm worker, hook round trip vs. the IPC floor.

Run: .venv/bin/python bench/worker_bench.py   (prints JSON)

The floor is the same transport with nothing of ours in it: an asyncio host protocol and a
blocking child process echoing 4-byte-length-prefixed msgpack over a socketpair.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # for tests.helpers
from _stats import emit, pin, summary_ms, summary_us, unpin
from tests.helpers.plugins import write_plugin_folder

from autoweave_plugins.discovery import DiscoveredPlugin, check_plugin_folder
from autoweave_plugins.loader import build_spec
from autoweave_plugins.manifest import ManifestCache
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.rpc import FrameDecoder, encode

STARTS = 12
ROUND_TRIPS = 6000
ROUNDS = 12
PIPELINED = 20000

ECHO_CHILD = """
import socket, sys, msgpack
sock = socket.socket(fileno=int(sys.argv[1]))
buf = b""
while True:
    data = sock.recv(65536)
    if not data:
        break
    buf += data
    while len(buf) >= 4:
        n = int.from_bytes(buf[:4], "big")
        if len(buf) < 4 + n:
            break
        frame = msgpack.unpackb(buf[4:4 + n])
        buf = buf[4 + n:]
        body = msgpack.packb([11, frame[1], None])
        sock.sendall(len(body).to_bytes(4, "big") + body)
"""


class EchoHost(asyncio.Protocol):
    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.waiters: dict[int, asyncio.Future[Any]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            self.waiters.pop(frame[1]).set_result(frame[2])

    async def call(self, ident: int) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.waiters[ident] = future
        assert self.transport is not None
        self.transport.write(encode([2, ident, "onTrivial", (), {}]))
        return await future


async def start_floor() -> tuple[EchoHost, asyncio.subprocess.Process]:
    parent, child = socket.socketpair()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-c", ECHO_CHILD, str(child.fileno()), pass_fds=(child.fileno(),)
    )
    child.close()
    host = EchoHost()
    await asyncio.get_running_loop().create_connection(lambda: host, sock=parent)
    return host, proc


async def interleaved(worker: WorkerProcess, host: EchoHost) -> dict[str, Any]:
    """Alternate batches of ours and the floor, so machine noise lands on both alike."""
    ours: list[float] = []
    base: list[float] = []
    ident = 0
    for _ in range(ROUNDS):
        for _ in range(ROUND_TRIPS // ROUNDS):
            start = time.perf_counter()
            await worker.call("onTrivial")
            ours.append(time.perf_counter() - start)
        for _ in range(ROUND_TRIPS // ROUNDS):
            ident += 1
            start = time.perf_counter()
            await host.call(ident)
            base.append(time.perf_counter() - start)
    rates: dict[str, list[float]] = {"ours": [], "floor": []}
    for _ in range(3):
        start = time.perf_counter()
        await asyncio.gather(*(worker.call("onTrivial") for _ in range(PIPELINED)))
        rates["ours"].append(PIPELINED / (time.perf_counter() - start))
        start = time.perf_counter()
        await asyncio.gather(*(host.call(ident + i + 1) for i in range(PIPELINED)))
        ident += PIPELINED
        rates["floor"].append(PIPELINED / (time.perf_counter() - start))
    return {
        "round_trip_trivial_hook": summary_us(ours),
        "round_trip_floor_socketpair_msgpack_echo": summary_us(base),
        "round_trip_ratio_p50": round(statistics.median(ours) / statistics.median(base), 2),
        "pipelined_calls_per_s": round(statistics.median(rates["ours"])),
        "pipelined_floor_calls_per_s": round(statistics.median(rates["floor"])),
    }


def trivial_plugin(root: Path) -> DiscoveredPlugin:
    code = "def init():\n    pass\n\ndef trivial():\n    return None\n"
    hooks = {"onLoad": "init", "onTrivial": "trivial"}
    folder = write_plugin_folder(root, "trivial", code, hooks=hooks)
    found = check_plugin_folder(str(folder), ManifestCache())
    assert isinstance(found, DiscoveredPlugin)
    return found


async def blank_starts(flags: tuple[str, ...]) -> list[float]:
    samples = []
    for _ in range(STARTS):
        start = time.perf_counter()
        worker = await WorkerProcess.spawn(python_flags=flags)
        samples.append(time.perf_counter() - start)
        await worker.stop()
    return samples


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plugin = trivial_plugin(root)
        spec = build_spec(plugin)
        await (await WorkerProcess.spawn()).stop()  # make sure bytecode exists for the warm case
        empty_cache = root / "no-pycache"
        empty_cache.mkdir()
        cold_flags = ("-B", "-X", f"pycache_prefix={empty_cache}")
        with_bytecode = await blank_starts(())
        without_bytecode = await blank_starts(cold_flags)

        warm = [await WorkerProcess.spawn() for _ in range(STARTS)]
        assigns = []
        for worker in warm:
            start = time.perf_counter()
            await worker.assign(spec)
            assigns.append(time.perf_counter() - start)
        for worker in warm[1:]:
            await worker.stop()
        worker = warm[0]
        host, echo = await start_floor()
        for ident in range(1, 201):  # warm both paths
            await worker.call("onTrivial")
            await host.call(-ident)
        # On 2 cores a ping-pong costs ~40 us when both ends share a core and ~100 us across
        # cores, whatever the code: placement would dominate the ratio. Pin it, both ways.
        round_trips = {}
        for placement, child_cpu in (("same_core", 0), ("cross_core", 1)):
            pin(0, child_cpu, [worker.pid, echo.pid])
            round_trips[placement] = await interleaved(worker, host)
        unpin()
        await worker.stop()
        assert host.transport is not None
        host.transport.close()
        await echo.wait()
    emit(
        "worker",
        {
            "blank_start_to_ready": {
                "with_bytecode": summary_ms(with_bytecode),
                "without_bytecode": summary_ms(without_bytecode),
                "note": "without = -B and an empty pycache_prefix, so every module compiles from source",
            },
            "assign_sandbox_import_onload_warm_worker": summary_ms(assigns),
            "round_trips_pinned": round_trips,
            "goals": {
                "assign_p50_ms": 5,
                "round_trip_ratio_p50": 1.5,
                "round_trip_p99_us": 300,
                "pipelined_calls_per_s": 30000,
            },
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
