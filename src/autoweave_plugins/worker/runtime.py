"""The worker's life after assignment: import the plugin, run onLoad, serve hook calls.

Runs inside the sandbox. Sync hooks are called straight from the frame handler (no task), so
a trivial call costs one decode, one call and one encode; async hooks get a task each so they
can run concurrently and be cancelled. A sync hook that never returns blocks this loop, and
the host's timeout kills the worker: Python code cannot be interrupted from outside.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from autoweave_plugins import sdk
from autoweave_plugins.errors import FetchError, InvalidURL, PermissionDenied
from autoweave_plugins.permissions.paths import FileMode, PathPolicy, PathRule
from autoweave_plugins.ratelimit import TokenBucket
from autoweave_plugins.rpc import (
    PLAIN_TYPES,
    UNSENDABLE,
    FrameDecoder,
    Kind,
    ValueBudget,
    WorkerSpec,
    check_value,
    encode,
    exception_to_wire,
    read_buffer,
    read_wire_error,
    wire_error,
)
from autoweave_plugins.rpc.serve_limits import ServeLimits
from autoweave_plugins.sandbox.imports import ImportGuard
from autoweave_plugins.worker.entry import import_entry
from autoweave_plugins.worker.environment import prepare_environment
from autoweave_plugins.worker.explain import Explainer
from autoweave_plugins.worker.http import start_servers, stop_servers
from autoweave_plugins.worker.metadata import MetadataClient, install_metadata
from autoweave_plugins.worker.refusals import install_refusals

__all__ = ["PluginRuntime"]

EXIT_GRACE = 0.8  # for inbound requests in progress; the host sends SIGTERM after 1 s
_REMOTE_ERRORS: dict[str, Callable[[str], Exception]] = {
    "PermissionDenied": lambda message: PermissionDenied("network.outbound", message),
    "InvalidURL": lambda message: InvalidURL("", message),
    "FetchError": FetchError,
}


_CALL, _RESULT = Kind.CALL, Kind.RESULT


class _HostLogHandler(logging.Handler):
    def __init__(self, runtime: PluginRuntime) -> None:
        super().__init__()
        self.runtime = runtime

    def emit(self, record: logging.LogRecord) -> None:
        self.runtime.send([Kind.LOG, 0, record.levelno, self.format(record)[:8192]])


class PluginRuntime(asyncio.BufferedProtocol):
    def __init__(self, spec: WorkerSpec, decoder: FrameDecoder) -> None:
        self.spec = spec
        self.decoder = decoder
        decoder.max_frame = spec.max_frame  # the host's limit holds both ways
        self.explainer = Explainer.for_spec(spec)
        self.paths = PathPolicy([PathRule(p, FileMode(m)) for p, m in spec.filesystem])
        self.hooks: dict[str, Callable[..., Any]] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.request_ids = itertools.count(1)
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.metric_bucket = TokenBucket(spec.metrics_per_second, spec.metrics_per_second)
        self.calls = 0
        self.listeners: list[socket.socket] = []
        self.servers: list[asyncio.Server] = []
        self._exit_task: asyncio.Task[None] | None = None
        self._read = read_buffer()

    # --- transport -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop: not an asyncio class

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, frame: list[Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(frame))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read

    def buffer_updated(self, nbytes: int) -> None:
        for frame in self.decoder.feed(self._read[:nbytes]):
            kind = frame[0]
            if kind == _CALL:
                self._call(*frame)
            elif kind == Kind.PING:
                self.send([Kind.PONG, frame[1], self._health()])
            elif kind == Kind.REPLY or kind == Kind.REPLY_ERROR:
                self._resolve(frame)
            elif kind == Kind.CANCEL:
                task = self.tasks.get(frame[1])
                if task is not None:
                    task.cancel()
            elif kind == Kind.EXIT:
                self._exit_task = asyncio.ensure_future(self._exit())

    async def _exit(self) -> None:
        await stop_servers(self.servers, EXIT_GRACE)
        assert self.transport is not None
        self.transport.close()

    # --- hooks ---------------------------------------------------------------------------

    def _call(
        self, _kind: int, ident: int, hook: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """A CALL frame, ``[kind, id, hook, args, kwargs]`` (the host's: its shape is sure)."""
        self.calls += 1
        function = self.hooks.get(hook)
        if function is None:
            declared = ", ".join(sorted(self.hooks)) or "none"
            message = f"hook {hook!r} is not declared (declared: {declared})"
            self.send([Kind.ERROR, ident, wire_error("UnknownHook", message, "")])
            return
        try:
            result = function(*args, **kwargs)
        except BaseException as exc:
            self.send([Kind.ERROR, ident, exception_to_wire(self.explainer.annotate(exc))])
            return
        if type(result) in PLAIN_TYPES:  # most sync hooks: no awaitable or container check
            self._reply(ident, result, True)
        elif inspect.isawaitable(result):
            self.tasks[ident] = asyncio.ensure_future(self._finish(ident, result))
        else:
            self._reply(ident, result)

    async def _finish(self, ident: int, awaitable: Any) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            error = wire_error("CancelledError", "cancelled by the host", "")
            self.send([Kind.ERROR, ident, error])
        except BaseException as exc:
            self.send([Kind.ERROR, ident, exception_to_wire(self.explainer.annotate(exc))])
        else:
            self._reply(ident, result)
        finally:
            self.tasks.pop(ident, None)

    def _reply(self, ident: int, result: Any, checked: bool = False) -> None:
        # What the host's decoder would refuse is refused here, as the hook's error: sent as
        # it is, it would break the protocol and end this worker (rpc/values.py). ``checked``:
        # a scalar, in the model whatever its value (a str's size and encoding are seen below).
        problem = None
        if not checked:
            budget = ValueBudget(self.decoder.max_containers - 1, self.decoder.max_elements - 3)
            problem = check_value(result, "result", budget)
        if problem is None:
            try:
                frame = encode([_RESULT, ident, result])
            except (TypeError, ValueError, OverflowError) as exc:
                problem = ("result", str(exc))
            else:
                if len(frame) - 4 <= self.spec.max_frame:
                    assert self.transport is not None
                    self.transport.write(frame)
                    return
                problem = ("result", (
                    f"{len(frame) - 4} bytes encoded, over the {self.spec.max_frame}-byte "
                    "frame limit (limits.max_frame); write bulk data to a file"
                ))  # fmt: skip
        self.send([Kind.ERROR, ident, wire_error(UNSENDABLE, ": ".join(problem))])

    def _health(self) -> dict[str, Any]:
        rss = 0
        try:
            with open(f"/proc/{os.getpid()}/statm", "rb") as statm:
                rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
        return {
            "rss": rss,
            "calls": self.calls,
            "tasks": len(self.tasks),
            "metrics_dropped": self.metric_bucket.denied,
        }

    # --- requests to the host (SDK) ------------------------------------------------------

    def request(self, op: str, payload: dict[str, Any]) -> asyncio.Future[Any]:
        ident = next(self.request_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        self.send([Kind.REQUEST, ident, op, payload])
        return future

    def _resolve(self, frame: list[Any]) -> None:
        future = self.pending.pop(frame[1], None)
        if future is None or future.done():
            return
        if frame[0] == Kind.REPLY:
            future.set_result(frame[2])
        else:
            error = read_wire_error(frame[2], default_message="request failed")
            make = _REMOTE_ERRORS.get(error.type, FetchError)
            future.set_exception(make(error.message))

    def send_metric(self, name: str, value: float, labels: dict[str, str]) -> None:
        if self.metric_bucket.allow():
            self.send([Kind.METRIC, 0, name, value, labels])

    async def start_servers(self, handler: sdk.Handler) -> list[asyncio.Server]:
        """Serve ``autoweave.serve``'s handler on the listening sockets the host handed over."""
        limits = ServeLimits.from_wire(self.spec.serve_limits)
        return await start_servers(self.listeners, handler, limits)

    # --- loading -------------------------------------------------------------------------

    async def load(self, broker: socket.socket | None = None) -> dict[str, Any]:
        """Import the entry and run onLoad. Raises whatever the plugin raises."""
        spec = self.spec
        handler = _HostLogHandler(self)
        handler.setFormatter(logging.Formatter("%(message)s"))
        plugin_log = logging.getLogger("autoweave.plugin")
        plugin_log.addHandler(handler)
        plugin_log.setLevel(logging.DEBUG)
        plugin_log.propagate = False
        sdk._bind(self, spec.manifest, spec.config)
        sys.modules["autoweave"] = sdk
        prepare_environment(spec)
        install_refusals(self.explainer)
        if broker is not None:
            install_metadata(MetadataClient(broker))
        module = import_entry(spec, self._guard)
        for hook, target in spec.hooks.items():
            function = getattr(module, target, None)
            if not callable(function):
                raise AttributeError(
                    f"hook {hook} names {target!r}, which {spec.entry} does not define as a function"
                )
            self.hooks[hook] = function
        on_load = self.hooks.get("onLoad")
        if on_load is not None:
            result = on_load()
            if inspect.isawaitable(result):
                await result
        return {"hooks": sorted(self.hooks)}

    def _guard(self, package: str) -> None:
        spec = self.spec
        ImportGuard(
            spec.plugin, spec.folder, spec.extra_imports, spec.denied_imports, package
        ).install()


async def serve(
    sock: socket.socket,
    spec: WorkerSpec,
    decoder: FrameDecoder,
    assign_id: int,
    sandbox: dict[str, Any],
    listeners: list[socket.socket],
    broker: socket.socket | None = None,
) -> None:
    """Load the plugin, answer the ASSIGN, then serve frames until the host closes the channel."""
    loop = asyncio.get_running_loop()
    runtime = PluginRuntime(spec, decoder)
    runtime.listeners = listeners
    await loop.create_connection(lambda: runtime, sock=sock)
    started = time.perf_counter()
    try:
        info = await runtime.load(broker)
    except BaseException as exc:
        runtime.send([Kind.ERROR, assign_id, exception_to_wire(runtime.explainer.annotate(exc))])
        await asyncio.sleep(0)
        return
    info["load_ms"] = round((time.perf_counter() - started) * 1000, 3)
    runtime.send([Kind.RESULT, assign_id, {**info, "sandbox": sandbox, "pid": os.getpid()}])
    await runtime.closed
