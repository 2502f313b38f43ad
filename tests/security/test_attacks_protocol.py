"""Attack class 10: garbage and oversized frames written straight to the worker's RPC socket.

The plugin finds its end of the socketpair (``sys.argv[1]`` in the worker) and writes bytes
the runtime would never send. The host must end that worker (``ProtocolError``, exit reason
``protocol``), must not buffer anything like a claimed size, and must keep serving others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from autoweave_plugins.errors import PluginCrashed, ProtocolError
from autoweave_plugins.process import WorkerProcess
from tests.helpers.processes import process_exists
from tests.helpers.workers import running, write_plugin
from tests.security._support import (
    CALL_TIMEOUT,
    LOAD_TIMEOUT,
    PRELUDE,
    RAW_WRITE,
    assert_responsive,
    host_rss,
    peak_rss,
    reset_peak_rss,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MB = 1 << 20

INJECT_CODE = (
    PRELUDE
    + RAW_WRITE
    + """
import random
import socket


def frame(body):
    return len(body).to_bytes(4, "big") + body


def garbage():
    rng = random.Random(1234)
    body = b"\\xc1" + bytes(rng.getrandbits(8) for _ in range(4095))  # 0xc1: never valid msgpack
    return frame(body)


PAYLOADS = {
    "garbage": garbage,
    # A header claiming 1 GiB, followed by a megabyte of filler the host must not keep.
    "huge_header": lambda: (1 << 30).to_bytes(4, "big") + b"A" * (1 << 20),
    "just_over_cap": lambda: ((8 << 20) + 1).to_bytes(4, "big") + b"B" * (1 << 20),
    "unknown_kind": lambda: frame(b"\\x92\\x63\\x00"),  # [99, 0]
    "not_an_array": lambda: frame(b"\\x81\\xa4kind\\x0b"),  # {"kind": 11}
    "negative_id": lambda: frame(b"\\x93\\x0b\\xff\\xc0"),  # [11, -1, None]
    "reply_never_requested": lambda: frame(b"\\x93\\x0b\\xce\\x00\\x0f\\x42\\x40\\xc0"),  # [11, 1000000, None]
    "ready_twice": lambda: frame(b"\\x93\\x0a\\x00\\x80"),  # [10, 0, {}]
    "wrong_field_count": lambda: frame(b"\\x92\\x0b\\x01"),  # [11, 1]
}


def inject(route, via_socket):
    data = PAYLOADS[route]()
    if via_socket:  # the same through a socket object wrapping the RPC fd
        sock = socket.socket(fileno=os.dup(int(sys.argv[1])))
        sock.setblocking(True)
        sock.sendall(data)
        return len(data)
    return write_raw(data)
"""
)

ROUTES = [
    "garbage",
    "huge_header",
    "just_over_cap",
    "unknown_kind",
    "not_an_array",
    "negative_id",
    "reply_never_requested",
    "ready_twice",
    "wrong_field_count",
]


CASES = [pytest.param(route, False, id=f"{route}-os_write") for route in ROUTES] + [
    pytest.param(route, True, id=f"{route}-socket")
    for route in ("garbage", "huge_header", "unknown_kind")
]


@pytest.mark.parametrize(("route", "via_socket"), CASES)
async def test_bad_frames_end_only_that_worker(
    plugin_root: Path, sibling: WorkerProcess, route: str, via_socket: bool
) -> None:
    plugin = write_plugin(plugin_root, "frame-forger", INJECT_CODE, hooks={"onInject": "inject"})
    host_before = host_rss()
    async with running(plugin, extra_imports=("socket",), load_timeout=LOAD_TIMEOUT) as worker:
        pid = worker.pid
        assert pid is not None
        with pytest.raises((ProtocolError, PluginCrashed)):
            await worker.call("onInject", route, via_socket, timeout=CALL_TIMEOUT)
        await asyncio.wait_for(worker.wait_closed(), 5)
        assert worker.exit_reason == "protocol"
        assert not process_exists(pid)
        assert worker.channel.decoder.buffered < 16 * MB
        # Nothing more reaches a worker that broke the protocol.
        with pytest.raises(PluginCrashed):
            await worker.call("onInject", route, via_socket, timeout=CALL_TIMEOUT)
    growth = host_rss() - host_before
    assert growth < 32 * MB, f"host RSS grew by {growth / MB:.0f} MB"
    await assert_responsive(sibling)


AMPLIFY_CODE = (
    RAW_WRITE
    + '''
# Each element's msgpack encoding: an empty map, a 2-character string, a uint16 above the
# small-int cache. Every one becomes a fresh Python object in the host.
ELEMENTS = {"maps": b"\\x80", "short_strings": b"\\xa2ab", "uint16s": b"\\xcd\\x10\\x00"}


def amplify(frames, payload="maps"):
    """Well-formed LOG frames just under the size cap whose message is millions of objects.

    An empty map is one byte on the wire and ~70 bytes of host memory. The frame has a valid
    kind and shape, so only a limit on what it decodes to can stop it.
    """
    element = ELEMENTS[payload]
    count = ((8 << 20) - 16) // len(element)
    body = b"\\x94\\x10\\x00\\x14" + b"\\xdd" + count.to_bytes(4, "big") + element * count
    data = len(body).to_bytes(4, "big") + body
    for _ in range(frames):
        write_raw(data)
    return len(data)
'''
)


async def test_small_frames_cannot_balloon_the_host(
    plugin_root: Path, sibling: WorkerProcess
) -> None:
    plugin = write_plugin(plugin_root, "amplifier", AMPLIFY_CODE, hooks={"onAmplify": "amplify"})
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        await assert_responsive(sibling)
        peak_before = reset_peak_rss()
        lags: list[float] = []

        async def ticker() -> None:
            while True:
                started = time.perf_counter()
                await asyncio.sleep(0.01)
                lags.append(time.perf_counter() - started - 0.01)

        ticking = asyncio.ensure_future(ticker())
        try:
            # The host ends the worker mid-call: the call fails with the protocol violation.
            with pytest.raises((ProtocolError, PluginCrashed)):
                await worker.call("onAmplify", 2, timeout=CALL_TIMEOUT)
        finally:
            ticking.cancel()
        peak_growth = peak_rss() - peak_before
        still_alive = worker.alive
    await assert_responsive(sibling)
    # Evidence in the host: its event loop did not stall, its peak memory stayed within 8x
    # the frame cap, and the worker was ended.
    assert max(lags, default=0.0) < 0.5, f"host event loop blocked for {max(lags):.2f} s"
    assert peak_growth < 64 * MB, f"host peak RSS grew by {peak_growth / MB:.0f} MB"
    assert not still_alive, "a worker that sends such frames should be ended"


@pytest.mark.parametrize("payload", ["short_strings", "uint16s"])
async def test_scalar_heavy_frames_cannot_balloon_the_host(
    plugin_root: Path, sibling: WorkerProcess, payload: str
) -> None:
    """Counting containers is not enough: ~2.8 million 2-character strings or uint16s in one
    valid 8 MiB frame would cost the host ~140-220 MB if scalars were not budgeted too."""
    plugin = write_plugin(plugin_root, "amplifier", AMPLIFY_CODE, hooks={"onAmplify": "amplify"})
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        await assert_responsive(sibling)
        peak_before = reset_peak_rss()
        with contextlib.suppress(ProtocolError, PluginCrashed):  # ending it is a fine answer
            await worker.call("onAmplify", 2, payload, timeout=CALL_TIMEOUT)
        peak_growth = peak_rss() - peak_before
    await assert_responsive(sibling)
    # Evidence in the host: no more than 8x the frame cap, whatever the frame decodes to.
    assert peak_growth < 64 * MB, f"host peak RSS grew by {peak_growth / MB:.0f} MB"
