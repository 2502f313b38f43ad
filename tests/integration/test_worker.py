"""A benign plugin in a real sandboxed worker: load, hooks, errors, timeouts, crash, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from autoweave_plugins.errors import HookError, HookTimeout, LoadError, PluginCrashed, UnknownHook
from autoweave_plugins.loader import build_spec
from tests.helpers.processes import process_exists
from tests.helpers.waiting import hooks_running, wait_until
from tests.helpers.workers import START_METHOD, running, start_worker, write_plugin

HOOKS = {
    "onLoad": "init",
    "onJobReceived": "job",
    "onSlow": "slow",
    "onSpin": "spin",
    "onFail": "fail",
    "onExit": "leave",
    "onBadResult": "bad",
}
CODE = """
import asyncio, sys
import autoweave

state = {"loaded": False}

def init():
    state["loaded"] = True

async def job(x, *, twice=False):
    await asyncio.sleep(0)
    return {"x": x * (2 if twice else 1), "loaded": state["loaded"]}

async def slow(seconds):
    await asyncio.sleep(seconds)
    return "done"

def spin():
    while True:
        pass

def fail():
    raise ValueError("bad input from the plugin")

def leave():
    sys.exit(3)

def bad():
    return object()
"""


async def test_load_and_call_sync_and_async_hooks(plugin_root: Path) -> None:
    plugin = write_plugin(plugin_root, "demo", CODE, hooks=HOOKS)
    async with running(plugin) as worker:
        assert await worker.call("onJobReceived", 21, twice=True) == {"x": 42, "loaded": True}
        results = await asyncio.gather(*(worker.call("onJobReceived", i) for i in range(50)))
        assert [r["x"] for r in results] == list(range(50))


async def test_plugin_exception_carries_its_traceback(plugin_root: Path) -> None:
    plugin = write_plugin(plugin_root, "demo", CODE, hooks=HOOKS)
    async with running(plugin) as worker:
        with pytest.raises(HookError) as caught:
            await worker.call("onFail")
        err = caught.value
        assert err.error_type == "ValueError" and "bad input" in err.error_message
        assert "main.py" in err.traceback and "raise ValueError" in err.traceback
        # the worker survives a plugin exception, and a SystemExit in a hook
        with pytest.raises(HookError, match="SystemExit"):
            await worker.call("onExit")
        assert (await worker.call("onJobReceived", 1))["x"] == 1


async def test_unknown_hook_and_unsendable_result(plugin_root: Path) -> None:
    plugin = write_plugin(plugin_root, "demo", CODE, hooks=HOOKS)
    async with running(plugin) as worker:
        with pytest.raises(UnknownHook, match="onNope"):
            await worker.call("onNope")
        with pytest.raises(HookError, match="cannot be sent"):
            await worker.call("onBadResult")


SCALARS = """
def text():
    return "h\\u00e9llo"

def raw():
    return b"\\x00\\xff"

def number():
    return 2.5

def flag():
    return True

def nothing():
    return None

def surrogate():
    return "\\ud800"

def huge():
    return b"x" * (9 << 20)
"""


async def test_scalar_results_and_the_scalars_a_frame_cannot_carry(plugin_root: Path) -> None:
    """Scalars skip the container check; encoding and the frame's size still refuse what the
    host could not read, as the hook's error, and the worker goes on serving."""
    names = ("text", "raw", "number", "flag", "nothing", "surrogate", "huge")
    hooks = {f"on{name.title()}": name for name in names}
    plugin = write_plugin(plugin_root, "scalars", SCALARS, hooks=hooks)
    async with running(plugin) as worker:
        for _ in range(2):
            with pytest.raises(HookError, match=r"unsendable value: result: .*surrogate"):
                await worker.call("onSurrogate")
            with pytest.raises(HookError, match=r"unsendable value: result: .*frame limit"):
                await worker.call("onHuge")
            results = [await worker.call(hook) for hook in list(hooks)[:5]]
            assert results == ["h\u00e9llo", b"\x00\xff", 2.5, True, None]
        assert worker.alive


async def test_async_timeout_cancels_without_killing(plugin_root: Path) -> None:
    plugin = write_plugin(plugin_root, "demo", CODE, hooks=HOOKS)
    async with running(plugin) as worker:
        with pytest.raises(HookTimeout):
            await worker.call("onSlow", 30, timeout=0.2)
        assert worker.alive
        assert await worker.call("onSlow", 0) == "done"


async def test_spinning_hook_is_killed_on_timeout(plugin_root: Path) -> None:
    plugin = write_plugin(plugin_root, "demo", CODE, hooks=HOOKS)
    async with running(plugin) as worker:
        pid = worker.pid
        assert pid is not None
        with pytest.raises(HookTimeout):
            await worker.call("onSpin", timeout=0.3)
        await asyncio.wait_for(worker.wait_closed(), 5)
        assert worker.exit_reason == "timeout" and not process_exists(pid)


async def test_sigkill_fails_in_flight_calls_quickly(plugin_root: Path) -> None:
    plugin = write_plugin(plugin_root, "demo", CODE, hooks=HOOKS)
    async with running(plugin) as worker:
        assert worker.pid is not None
        calls = [asyncio.ensure_future(worker.call("onSlow", 30)) for _ in range(10)]
        await hooks_running(worker, 10)
        os.kill(worker.pid, signal.SIGKILL)
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 2)
        assert all(isinstance(r, PluginCrashed) for r in results), results
        with pytest.raises(PluginCrashed):
            await worker.call("onJobReceived", 1)


async def test_caller_cancellation_cancels_in_the_worker(plugin_root: Path) -> None:
    plugin = write_plugin(plugin_root, "demo", CODE, hooks=HOOKS)
    async with running(plugin) as worker:
        call = asyncio.ensure_future(worker.call("onSlow", 30))
        await hooks_running(worker, 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await hooks_running(worker, 0)  # the cancel and a ping can arrive in one read
        assert (await worker.ping())["rss"] > 0


@pytest.mark.parametrize(
    ("code", "hooks", "message"),
    [
        ("raise RuntimeError('broken at import')\n", {}, "broken at import"),
        ("def init():\n    raise KeyError('onload failed')\n", {"onLoad": "init"}, "onload failed"),
        ("x = 1\n", {"onLoad": "missing_function"}, "does not define"),
        ("import subprocess\n", {}, "may not import 'subprocess'"),
    ],
)
async def test_load_failures_are_load_errors(
    plugin_root: Path, code: str, hooks: dict[str, str], message: str
) -> None:
    plugin = write_plugin(plugin_root, "broken", code, hooks=hooks)
    worker = await start_worker()
    try:
        with pytest.raises(LoadError, match=message) as caught:
            await worker.assign(build_spec(plugin))
        assert caught.value.traceback
        await asyncio.wait_for(worker.wait_closed(), 5)
    finally:
        await worker.stop()


async def test_extra_imports_can_be_granted(plugin_root: Path) -> None:
    plugin = write_plugin(
        plugin_root,
        "granted",
        "import fcntl\ndef ok():\n    return fcntl.__name__\n",
        hooks={"onOk": "ok"},
    )
    async with running(plugin, extra_imports=("fcntl",)) as worker:
        assert await worker.call("onOk") == "fcntl"


async def test_plugin_own_modules_import(plugin_root: Path) -> None:
    plugin = write_plugin(
        plugin_root,
        "multi",
        "import helpers\ndef ok():\n    return helpers.VALUE\n",
        hooks={"onOk": "ok"},
    )
    (Path(plugin.folder) / "helpers.py").write_text("VALUE = 'from helpers'\n")
    async with running(plugin) as worker:
        assert await worker.call("onOk") == "from helpers"


async def test_stop_reaps_the_process(plugin_root: Path) -> None:
    plugin = write_plugin(plugin_root, "demo", CODE, hooks=HOOKS)
    async with running(plugin) as worker:
        pid = worker.pid
    assert pid is not None and not process_exists(pid)
    assert worker.returncode == 0 and worker.exit_reason == "shutdown"


async def test_blank_worker_answers_pings_and_stops() -> None:
    worker = await start_worker()
    try:
        assert (await worker.ping())["calls"] == 0
    finally:
        await worker.stop()
    assert worker.returncode == 0


async def test_workers_die_with_a_killed_host(tmp_path: Path) -> None:
    """A host killed with SIGKILL leaves no worker behind (PR_SET_PDEATHSIG), nor a template."""
    script = tmp_path / "host.py"
    script.write_text(
        "import asyncio, sys\n"
        "from autoweave_plugins.settings import LimitsConfig, WorkerPoolConfig\n"
        "from autoweave_plugins.startmethod import StartMethod\n"
        "async def main():\n"
        "    method = StartMethod(WorkerPoolConfig(start_method=sys.argv[1]), LimitsConfig())\n"
        "    await method.open()\n"
        "    workers = [await method() for _ in range(2)]\n"
        "    template = [method.template.pid] if method.template else []\n"
        "    print(' '.join(str(p) for p in [w.pid for w in workers] + template), flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    host = await asyncio.create_subprocess_exec(
        sys.executable, str(script), START_METHOD, stdout=asyncio.subprocess.PIPE
    )
    assert host.stdout is not None
    line = await asyncio.wait_for(host.stdout.readline(), 30)
    pids = [int(p) for p in line.split()]
    assert len(pids) == (3 if START_METHOD == "template" else 2)
    assert all(process_exists(p) for p in pids)
    host.kill()
    await host.wait()
    await wait_until(
        lambda: not any(process_exists(p) for p in pids),
        "the killed host's workers are gone",
        timeout=2.0,
    )


async def test_exit_status_of_a_killed_worker_is_kept() -> None:
    """Killing goes through a pidfd: the host never reaps a worker behind its waiter's back."""
    worker = await start_worker()
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    await asyncio.wait_for(worker.wait_closed(), 5)
    assert worker.returncode == -signal.SIGKILL and worker.exit_reason == "crashed"


async def test_workers_do_not_carry_the_host_stack(tmp_path: Path) -> None:
    """DESIGN §5: the worker side imports only rpc, permissions, sandbox and sdk."""
    code = (
        "import sys\n"
        "HOST = ('httpx', 'prometheus_client', 'watchfiles', 'psutil', 'rich', 'autoweave_plugins.manager',\n"
        "        'autoweave_plugins.process', 'autoweave_plugins.pool', 'autoweave_plugins.broker.fetch',\n"
        "        'autoweave_plugins.channel', 'autoweave_plugins.output', 'autoweave_plugins.broker.service')\n"
        "def loaded():\n"
        "    return [m for m in HOST if m in sys.modules]\n"
    )
    plugin = write_plugin(tmp_path / "plugins", "lean", code, hooks={"onLoaded": "loaded"})
    async with running(plugin) as worker:
        assert await worker.call("onLoaded") == []
