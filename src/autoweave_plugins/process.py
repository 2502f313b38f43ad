"""One sandboxed worker process, seen from the host: spawn, assign, call, ping, stop.

The worker is hostile. Nothing it sends is trusted: frames are size-capped and shape-checked
(a bad one ends the worker with ``ProtocolError``), its stdout and stderr are read in bounded
chunks and rate-limited into host logging, and every call has a host-side deadline. A call
that overruns is cancelled in the worker; if the worker does not answer the cancel within
``cancel_grace`` (a hook spinning in pure Python), the worker is killed.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from autoweave_plugins.broker.fetch import FetchBroker, FetchLimits
from autoweave_plugins.broker.metrics import PluginMetrics
from autoweave_plugins.discovery import DiscoveredPlugin
from autoweave_plugins.errors import (
    AutoweaveError,
    HookError,
    HookTimeout,
    LoadError,
    LoadTimeout,
    PermissionDenied,
    PluginCrashed,
    ProtocolError,
    SandboxUnavailable,
    UnknownHook,
    WorkerError,
)
from autoweave_plugins.permissions.urls import OutboundPolicy
from autoweave_plugins.rpc import DEFAULT_MAX_FRAME, FrameDecoder, Kind, check_worker_frame, encode
from autoweave_plugins.stats import LatencyWindow
from autoweave_plugins.worker.http import ServeLimits
from autoweave_plugins.worker.spec import WorkerSpec

__all__ = ["OutputLimits", "WorkerProcess", "build_spec"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """How much of a worker's stdout/stderr and log records reach host logging."""

    lines_per_second: float = 50.0
    burst: int = 200
    max_line: int = 2048


class _RateLimiter:
    __slots__ = ("burst", "rate", "stamp", "suppressed", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens = rate, burst, float(burst)
        self.stamp = time.monotonic()
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.suppressed += 1
        return False


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    hook: str


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


MAX_CONCURRENT_REQUESTS = 16
"""Brokered requests one worker may have in flight; each may buffer a whole response."""

ExitCallback = Callable[["WorkerProcess", str, int | None], None]


@dataclass(slots=True)
class WorkerStats:
    calls: int = 0
    errors: int = 0
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    rss: int | None = None  # measured by the host at the last health check


class WorkerProcess(asyncio.Protocol):
    """A worker process and its RPC channel. Create it with ``await WorkerProcess.spawn()``."""

    def __init__(self, max_frame: int, output: OutputLimits) -> None:
        self.decoder = FrameDecoder(max_frame)
        self.output = output
        self.process: asyncio.subprocess.Process | None = None
        self._pidfd: int | None = None
        self._socket: socket.socket | None = None
        self.transport: asyncio.Transport | None = None
        self.plugin: str | None = None
        self.spec: WorkerSpec | None = None
        self.fetch_broker: FetchBroker | None = None
        self.metrics = PluginMetrics()
        self.stats = WorkerStats()
        self.exit_reason: str | None = None
        self.returncode: int | None = None
        self.on_exit: list[ExitCallback] = []
        self._last_id = 0
        self._pending: dict[int, _Pending] = {}
        self._ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._exited = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._requests: set[asyncio.Task[None]] = set()
        self._log_limiter = _RateLimiter(output.lines_per_second, output.burst)
        self._plugin_log = log

    # --- lifecycle -----------------------------------------------------------------------

    @classmethod
    async def spawn(
        cls,
        *,
        python: str = sys.executable,
        python_flags: tuple[str, ...] = (),
        max_frame: int = DEFAULT_MAX_FRAME,
        output: OutputLimits = OutputLimits(),
        ready_timeout: float = 30.0,
    ) -> WorkerProcess:
        """Start a blank worker and wait until it reports ready."""
        self = cls(max_frame, output)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = await asyncio.create_subprocess_exec(
                python, "-I", *python_flags, "-m", "autoweave_plugins.worker", str(child.fileno()), str(os.getpid()),
                pass_fds=(child.fileno(),), env={}, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True, close_fds=True, cwd="/",
            )  # fmt: skip
        finally:
            child.close()
        # Signals go through a pidfd: never to a recycled pid, and never reaping the child
        # (Popen.send_signal polls first, which steals the exit status from asyncio's watcher).
        self._pidfd = os.pidfd_open(self.process.pid)
        loop = asyncio.get_running_loop()
        self._socket = parent  # kept to pass file descriptors with sendmsg
        await loop.create_connection(lambda: self, sock=parent)
        self._spawn_task(self._watch_exit())
        assert self.process.stdout is not None and self.process.stderr is not None
        self._spawn_task(self._pump(self.process.stdout, logging.INFO))
        self._spawn_task(self._pump(self.process.stderr, logging.WARNING))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), ready_timeout)
        except TimeoutError:
            self.kill("timeout")
            raise WorkerError(f"worker did not start within {ready_timeout:g} s") from None
        except WorkerError:
            self.kill("crashed")
            raise
        except asyncio.CancelledError:
            self.kill("shutdown")
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def in_flight(self) -> int:
        """Calls (and pings) sent and not yet answered."""
        return len(self._pending)

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until the calls in flight now have been answered."""
        futures = [pending.future for pending in self._pending.values()]
        if futures:
            await asyncio.wait(futures, timeout=timeout)

    @property
    def alive(self) -> bool:
        return self.returncode is None and self.exit_reason is None

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_exit(self) -> None:
        assert self.process is not None
        self.returncode = await self.process.wait()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._finish(self.exit_reason or "crashed")

    def _finish(self, reason: str) -> None:
        """The worker is gone (or going): fail everything in flight, exactly once."""
        if self.exit_reason is None:
            self.exit_reason = reason
        error_reason = self.exit_reason
        for request in list(self._requests):
            request.cancel()  # nobody is left to read the answer
        for ident, pending in list(self._pending.items()):
            if not pending.future.done():
                pending.future.set_exception(
                    PluginCrashed(
                        f"worker exited ({error_reason}) during {pending.hook}", self.plugin
                    )
                )
            self._pending.pop(ident, None)
        if not self._ready.done():
            self._ready.set_exception(
                WorkerError(f"worker exited before it was ready ({error_reason})")
            )
        if self.transport is not None:
            self.transport.close()
        if self.returncode is not None and not self._exited.is_set():
            self._exited.set()
            for callback in self.on_exit:
                try:
                    callback(self, error_reason, self.returncode)
                except Exception:
                    log.exception("worker exit callback failed")

    def kill(self, reason: str) -> None:
        """SIGKILL the worker now. In-flight calls fail with PluginCrashed naming ``reason``."""
        if self.exit_reason is None:
            self.exit_reason = reason
        self._signal(signal.SIGKILL)
        self._finish(reason)

    def _signal(self, sig: int) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    async def stop(self, timeout: float = 2.0, reason: str = "shutdown") -> None:
        """Ask the worker to exit, then SIGTERM, then SIGKILL; returns once it is reaped."""
        if self.process is None:
            return
        if self.process.returncode is None:
            self.exit_reason = self.exit_reason or reason
            self._write([Kind.EXIT, 0])
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and self.process.returncode is None:
                    self._signal(sig)
                try:
                    await asyncio.wait_for(asyncio.shield(self._exited.wait()), timeout / 2)
                    break
                except TimeoutError:
                    continue
        await self._exited.wait()
        for task in list(self._background):
            task.cancel()

    async def wait_closed(self) -> None:
        await self._exited.wait()

    # --- channel -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        # EOF on the socket is the fastest crash signal: the process may not be reaped yet.
        # During a requested stop it is just the worker leaving; let it exit by itself.
        expected = self.exit_reason is not None
        self._finish(self.exit_reason or "crashed")
        if not expected:
            self._signal(signal.SIGKILL)

    def _write(self, frame: list[Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(frame))

    def data_received(self, data: bytes) -> None:
        try:
            for frame in self.decoder.feed(data):
                self._dispatch(frame)
        except ProtocolError as exc:
            self._protocol_violation(exc)

    def _protocol_violation(self, exc: ProtocolError) -> None:
        log.error(
            "worker %s (plugin %s) broke the protocol: %s; killing it", self.pid, self.plugin, exc
        )
        error = ProtocolError(str(exc), self.plugin)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self.kill("protocol")

    def _dispatch(self, frame: Any) -> None:
        kind, ident = check_worker_frame(frame)
        if kind == Kind.RESULT or kind == Kind.ERROR or kind == Kind.PONG:
            pending = self._pending.pop(ident, None)
            if pending is None:
                if ident > self._last_id:
                    raise ProtocolError(f"reply to request {ident}, which was never sent")
                return  # a late answer to a call that timed out or was cancelled
            if pending.future.done():
                return
            if kind == Kind.ERROR:
                pending.future.set_exception(self._remote_error(pending.hook, frame[2]))
            else:
                pending.future.set_result(frame[2])
        elif kind == Kind.REQUEST:
            if len(self._requests) >= MAX_CONCURRENT_REQUESTS:
                error = {
                    "type": "FetchError",
                    "message": f"more than {MAX_CONCURRENT_REQUESTS} requests at once",
                }
                self._write([Kind.REPLY_ERROR, ident, error])
                return
            task = asyncio.ensure_future(self._serve_request(ident, frame[2], frame[3]))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
        elif kind == Kind.METRIC:
            self.metrics.record(frame[2], frame[3], frame[4])
        elif kind == Kind.LOG:
            if self._log_limiter.allow():
                message = str(frame[3])[: self.output.max_line]
                self._plugin_log.log(
                    max(logging.DEBUG, min(frame[2], logging.CRITICAL)), "%s", message
                )
        elif kind == Kind.READY:
            if self._ready.done():
                raise ProtocolError("READY sent twice")
            self._ready.set_result(frame[2])

    def _next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def _remote_error(self, hook: str, error: dict[str, Any]) -> AutoweaveError:
        kind = str(error.get("type", "Exception"))
        message = str(error.get("message", ""))
        trace = str(error.get("traceback", ""))
        if hook == "<assign>":
            if kind == "SandboxUnavailable":
                return SandboxUnavailable(tuple(message.rpartition(": ")[2].split(", ")), message)
            return LoadError(f"{kind}: {message}", self.plugin, trace)
        if kind == "UnknownHook":
            return UnknownHook(message, self.plugin)
        return HookError(self.plugin, hook, kind, message, trace)

    async def _serve_request(self, ident: int, op: str, payload: Any) -> None:
        try:
            if op != "fetch" or not isinstance(payload, dict):
                raise WorkerError(f"unknown request {op!r}")
            if self.fetch_broker is None:
                raise PermissionDenied("network.outbound", "this host offers no outbound HTTP")
            reply = await self.fetch_broker.fetch(payload)
        except AutoweaveError as exc:
            kind = "PermissionDenied" if isinstance(exc, PermissionDenied) else type(exc).__name__
            message = exc.message if isinstance(exc, PermissionDenied) else str(exc)
            self._write([Kind.REPLY_ERROR, ident, {"type": kind, "message": message}])
        except Exception as exc:  # the broker is trusted code, but a bug must not kill the host
            log.exception("fetch broker failed")
            self._write(
                [Kind.REPLY_ERROR, ident, {"type": "FetchError", "message": f"host error: {exc}"}]
            )
        else:
            self._write([Kind.REPLY, ident, reply])

    async def _pump(self, stream: asyncio.StreamReader, level: int) -> None:
        """Forward output line by line, bounded in line length and rate; never buffer more."""
        limiter = _RateLimiter(self.output.lines_per_second, self.output.burst)
        partial = b""
        reported = 0
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()[: self.output.max_line]
            for line in lines:
                if limiter.allow():
                    text = line[: self.output.max_line].decode("utf-8", "replace")
                    self._plugin_log.log(level, "%s", text)
            if limiter.suppressed > reported and limiter.allow():
                self._plugin_log.warning(
                    "output rate limit: %d lines suppressed", limiter.suppressed - reported
                )
                reported = limiter.suppressed

    # --- requests ------------------------------------------------------------------------

    async def _send_with_fds(self, payload: bytes, fds: list[int]) -> None:
        """Write one frame with file descriptors attached (SCM_RIGHTS), beside the transport.

        Safe only while the transport has nothing queued, or bytes would be reordered; at
        assignment the channel is idle but for a possible health-check ping.
        """
        assert self._socket is not None and self.transport is not None
        for _ in range(100):
            if self.transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        else:
            raise WorkerError("the channel stayed busy; cannot hand over sockets", self.plugin)
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sent = self._socket.sendmsg([payload], rights)
        if sent < len(payload):  # the rest carries no descriptors: the transport may send it
            self.transport.write(payload[sent:])

    async def _request(
        self, frame: list[Any], hook: str, timeout: float | None, fds: list[int] | None = None
    ) -> Any:
        if not self.alive:
            raise PluginCrashed(f"worker is not running ({self.exit_reason})", self.plugin)
        ident = frame[1]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            payload = encode(frame)
        except (TypeError, ValueError, OverflowError) as exc:
            raise WorkerError(
                f"arguments for {hook} cannot be sent to the worker: {exc}", self.plugin
            ) from None
        self._pending[ident] = _Pending(future, hook)
        assert self.transport is not None
        if fds:
            await self._send_with_fds(payload, fds)
        else:
            self.transport.write(payload)
        try:
            if timeout is None:
                return await future
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            future.add_done_callback(_consume)  # a late answer or failure that nobody awaits
            raise
        except asyncio.CancelledError:
            self._pending.pop(ident, None)
            if frame[0] == Kind.CALL:
                self._write([Kind.CANCEL, ident])
            raise

    async def assign(
        self,
        spec: WorkerSpec,
        *,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
        fetch_limits: FetchLimits | None = None,
        inbound: list[socket.socket] | None = None,
    ) -> dict[str, Any]:
        """Give this blank worker its plugin: sandbox, import, onLoad. Raises LoadError.

        ``http`` is the client the fetch broker uses; without it, ``fetch`` is refused.
        """
        self.plugin = spec.plugin
        self.spec = spec
        patterns = spec.manifest.get("permissions", {}).get("network", {}).get("outbound", [])
        if http is not None:
            self.fetch_broker = FetchBroker(
                OutboundPolicy(patterns), http, fetch_limits or FetchLimits()
            )
        self._plugin_log = logging.getLogger(f"autoweave_plugins.plugin.{spec.plugin}")
        ident = self._next_id()
        try:
            info: dict[str, Any] = await self._request(
                [Kind.ASSIGN, ident, spec.to_wire()],
                "<assign>",
                timeout,
                fds=[s.fileno() for s in inbound or ()],
            )
        except TimeoutError:
            self.kill("timeout")
            raise LoadTimeout(f"loading took longer than {timeout:g} s", spec.plugin) from None
        except PluginCrashed as exc:
            raise LoadError(f"worker died while loading: {exc}", spec.plugin) from None
        return info

    async def call(
        self,
        hook: str,
        *args: Any,
        timeout: float | None = None,
        cancel_grace: float = 0.25,
        **kwargs: Any,
    ) -> Any:
        """Call a hook. Raises HookError, HookTimeout, UnknownHook or PluginCrashed."""
        ident = self._next_id()
        started = time.perf_counter()
        self.stats.calls += 1
        try:
            result = await self._request([Kind.CALL, ident, hook, args, kwargs], hook, timeout)
        except TimeoutError:
            self.stats.errors += 1
            await self._cancel_or_kill(ident, cancel_grace)
            raise HookTimeout(f"{hook} did not finish within {timeout:g} s", self.plugin) from None
        except AutoweaveError:
            self.stats.errors += 1
            raise
        finally:
            self.stats.latency.add(time.perf_counter() - started)
        return result

    async def _cancel_or_kill(self, ident: int, grace: float) -> None:
        pending = self._pending.get(ident)
        self._write([Kind.CANCEL, ident])
        if pending is not None:
            try:
                await asyncio.wait_for(asyncio.shield(pending.future), grace)
                return
            except TimeoutError:
                pass
            except AutoweaveError:
                return  # the worker answered the cancel: it is responsive
        if pending is not None and not pending.future.done():
            self._pending.pop(ident, None)
            pending.future.cancel()
            self.kill("timeout")

    def measure_rss(self) -> int | None:
        """The worker's resident memory, read by the host from /proc (psutil)."""
        if self.pid is None or not self.alive:
            return None
        try:
            self.stats.rss = int(psutil.Process(self.pid).memory_info().rss)
        except psutil.Error:
            return None
        return self.stats.rss

    async def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        """Health check: the worker answers with its RSS and counters, or is killed."""
        ident = self._next_id()
        try:
            info: dict[str, Any] = await self._request([Kind.PING, ident], "<ping>", timeout)
        except TimeoutError:
            self.kill("unhealthy")
            raise WorkerError(f"no pong within {timeout:g} s; worker killed", self.plugin) from None
        return info


def build_spec(
    plugin: DiscoveredPlugin,
    *,
    strict: bool = False,
    extra_imports: tuple[str, ...] = (),
    config: dict[str, Any] | None = None,
    serve_limits: ServeLimits | None = None,
) -> WorkerSpec:
    """The ASSIGN payload for a discovered, validated plugin."""
    manifest = plugin.manifest
    return WorkerSpec(
        plugin=manifest.name,
        folder=plugin.folder,
        entry=manifest.entry,
        hooks=dict(manifest.hooks),
        manifest=dict(manifest.document),
        filesystem=[(rule.path, rule.mode.value) for rule in manifest.permissions.filesystem],
        max_heap_mb=manifest.permissions.max_heap_mb,
        config=dict(config or {}),
        strict=strict,
        extra_imports=list(extra_imports),
        serve_limits=(serve_limits or ServeLimits()).to_wire(),
    )
