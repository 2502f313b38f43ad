"""Attack: error text the host keeps. The plugin answers its calls with its own ERROR frames.

The worker's runtime cuts a hook's error to 4 KiB of message and 16 KiB of traceback, but that
code runs in the plugin's process: the plugin can write any ERROR frame it likes to its RPC
socket. Here it answers each call with a frame whose type, message or traceback fills the
8 MiB frame. The manager keeps each plugin's recent errors; nothing in them may be longer than
the host's own bounds, whatever the worker sent.

Evidence outside the plugin: the host's RSS once the errors are kept, the errors as the host's
manager reports them, the exceptions the host raised, and a benign sibling's latency meanwhile.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from autoweave_plugins import PluginManager
from autoweave_plugins.errors import HookError
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.rpc.wire_errors import MAX_MESSAGE, MAX_TRACEBACK
from tests.helpers.workers import write_plugin
from tests.security._support import CALL_TIMEOUT, PACK_STR, assert_responsive, host_rss

pytestmark = pytest.mark.asyncio(loop_scope="module")

MB = 1 << 20
CALLS = 22  # more than the 20 recent errors a plugin's record keeps

SHOUT_CODE = (
    PACK_STR
    + """
import os
import sys
import time

NEAR_CAP = (8 << 20) - 4096



def error_frame(ident, field):
    fields = {"type": "ValueError", "message": "m", "traceback": "t"}
    fields[field] = "E" * NEAR_CAP
    body = b"\\x93\\x0c\\xce" + ident.to_bytes(4, "big") + bytes([0x80 | len(fields)])
    body += b"".join(pack_str(k.encode()) + pack_str(v.encode()) for k, v in fields.items())
    return len(body).to_bytes(4, "big") + body


def ping():
    return "pong"


def shout(field):
    # The runtime called this hook from a frame that holds the call's id.
    ident = sys._getframe(1).f_locals["ident"]
    data, fd = error_frame(ident, field), int(sys.argv[1])
    view, sent = memoryview(data), 0
    while sent < len(data):
        try:
            sent += os.write(fd, view[sent:])
        except BlockingIOError:
            time.sleep(0.001)
    return "the host has already raised my error"
"""
)


@pytest.mark.parametrize("field", ["message", "type", "traceback"])
async def test_error_text_the_host_keeps_is_bounded(
    tmp_path: Path, sibling: WorkerProcess, field: str
) -> None:
    root = tmp_path / "plugins"
    write_plugin(root, "shouter", SHOUT_CODE, hooks={"onShout": "shout", "onPing": "ping"})
    manager = PluginManager(
        root, worker_pool={"min_workers": 1, "max_workers": 2}, watcher={"enabled": False}
    )
    async with manager:
        assert await manager.call("shouter", "onPing", timeout=CALL_TIMEOUT) == "pong"
        gc.collect()
        before = host_rss()
        longest = {"type": 0, "message": 0, "traceback": 0}
        for _ in range(CALLS):
            with pytest.raises(HookError) as caught:
                await manager.call("shouter", "onShout", field, timeout=CALL_TIMEOUT)
            error = caught.value  # as the host raised it, before anything else kept it
            for name, text in (
                ("type", error.error_type),
                ("message", error.error_message),
                ("traceback", error.traceback),
            ):
                longest[name] = max(longest[name], len(text))
            del caught, error
            await assert_responsive(sibling)
        gc.collect()
        growth = host_rss() - before
        kept = manager.get_plugin_metadata("shouter")["errors"]
    assert growth < 100 * MB, f"host RSS grew by {growth / MB:.0f} MB keeping error text"
    assert len(kept) >= 20 and all(len(e["message"]) < MAX_MESSAGE + 512 for e in kept)
    assert longest["type"] <= 128 and longest["message"] <= MAX_MESSAGE, longest
    assert longest["traceback"] <= MAX_TRACEBACK + 8, longest
    await assert_responsive(sibling)
