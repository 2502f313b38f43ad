"""One sandboxed worker process, seen from the host: spawn, assign, call, ping, stop.

``WorkerProcess`` is the façade the pool and the manager use. It owns the OS process (started
by a ``Launch``: a clean interpreter here, or a fork of the template in ``forked``; signalled
through a pidfd, never reaped behind its waiter's back, sampled for RSS and CPU) and puts
together the parts that serve it: the ``channel`` (frames, ids, wire errors), ``output``
(stdout, stderr and log records into host logging), the request service of ``broker.service``
and the plugin's metrics.

The worker is hostile, and every call has a host-side deadline. A call that overruns is
cancelled in the worker; if the worker does not answer the cancel within ``cancel_grace`` (a
hook spinning in pure Python), the worker is killed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypedDict, Unpack

import httpx

from autoweave_plugins.broker.fetch import FetchLimits
from autoweave_plugins.broker.metrics import PluginMetrics
from autoweave_plugins.broker.service import MAX_CONCURRENT_REQUESTS, RequestService
from autoweave_plugins.channel import (
    ASSIGN_HOOK,
    DEFAULT_MAX_WRITE_BUFFER,
    PING_HOOK,
    Channel,
    Routes,
)
from autoweave_plugins.errors import (
    AutoweaveError,
    HookTimeout,
    LoadError,
    LoadTimeout,
    PluginCrashed,
    ProtocolError,
    WorkerError,
)
from autoweave_plugins.latency import WorkerStats
from autoweave_plugins.launch import WORLD, Launch, OSProcess, spawn_interpreter
from autoweave_plugins.output import DEFAULT_OUTPUT_LIMITS, OutputLimits, PluginOutput
from autoweave_plugins.provision import Provisions
from autoweave_plugins.rpc import DEFAULT_MAX_FRAME, Kind, WorkerSpec
from autoweave_plugins.sampling import RssReader, Sample, sample_process
from autoweave_plugins.sandbox.namespaces import worker_pid
from autoweave_plugins.sandbox.world import WorldOptions
from autoweave_plugins.tasks import TaskSet

__all__ = ["OutputLimits", "Sample", "WorkerProcess", "WorkerStats"]

log = logging.getLogger(__name__)

EOF_GRACE = 0.5
"""Seconds a worker whose channel closed unasked has to exit by itself before SIGKILL."""

ExitCallback = Callable[["WorkerProcess", str, int | None], None]
_CALL = Kind.CALL


class WorkerOptions(TypedDict, total=False):
    """``WorkerProcess``'s settings (its constructor's keywords)."""

    max_frame: int
    output: OutputLimits
    max_concurrent_requests: int
    max_write_buffer: int


class WorkerProcess:
    """A worker process and its RPC channel. Create it with ``await WorkerProcess.spawn()``
    or ``await WorkerProcess.start(launch)``."""

    def __init__(
        self,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        output: OutputLimits = DEFAULT_OUTPUT_LIMITS,
        max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
    ) -> None:
        self.process: OSProcess | None = None
        self.method: str | None = None
        """How it was started: "spawn" or "template"."""
        self.plugin: str | None = None
        self.exit_reason: str | None = None
        self.returncode: int | None = None
        self.on_exit: list[ExitCallback] = []
        self.stats = WorkerStats()
        self.metrics = PluginMetrics()
        self.output = PluginOutput(output)
        self.channel = Channel(
            Routes(
                request=self._serve_request,
                metric=self.metrics.record,
                log=self.output.record,
                violation=self._protocol_violation,
                lost=self._connection_lost,
            ),
            max_frame=max_frame,
            max_write_buffer=max_write_buffer,
        )
        self.requests = RequestService(
            self.channel, max_concurrent_requests=max_concurrent_requests
        )
        self.provisions: Provisions | None = None  # private tmp and metadata broker, once assigned
        self._plugin_pid: int | None = None  # found once assigned: the worker is settled then
        self._rss = RssReader()  # the memory check's: one open /proc file, read in place
        self._exited = asyncio.Event()
        self._background = TaskSet("worker")

    # --- the OS process ------------------------------------------------------------------

    @classmethod
    async def spawn(
        cls,
        *,
        python: str = sys.executable,
        python_flags: tuple[str, ...] = (),
        world: WorldOptions = WORLD,
        ready_timeout: float = 30.0,
        **options: Unpack[WorkerOptions],
    ) -> WorkerProcess:
        """Start a blank worker from a fresh interpreter and wait until it reports ready."""
        launch = functools.partial(spawn_interpreter, python, python_flags, world)
        return await cls.start(launch, ready_timeout=ready_timeout, **options)

    @classmethod
    async def start(
        cls, launch: Launch, *, ready_timeout: float = 30.0, **options: Unpack[WorkerOptions]
    ) -> WorkerProcess:
        """Start a blank worker with ``launch`` and wait until it reports ready."""
        self = cls(**options)
        started = await launch()
        self.process = started.process
        self.method = started.method
        await self.channel.open(started.channel)
        self._background.spawn(self._watch_exit())
        self._background.spawn(self.output.pump(started.stdout, logging.INFO))
        self._background.spawn(self.output.pump(started.stderr, logging.WARNING))
        try:
            await asyncio.wait_for(asyncio.shield(self.channel.ready), ready_timeout)
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
    def alive(self) -> bool:
        return self.returncode is None and self.exit_reason is None

    async def _watch_exit(self) -> None:
        assert self.process is not None
        self.returncode = await self.process.wait()
        self._rss.close()
        if self.provisions is not None:
            await self.provisions.close()
        self._finish(self.exit_reason or self._unasked_reason())

    def _unasked_reason(self) -> str:
        """Why the worker ended when the host did not end it: a worker that refused its
        assignment (the plugin's code failed to load) leaves as ``load_failed``, not crashed."""
        return "load_failed" if self.channel.assign_refused else "crashed"

    def _finish(self, reason: str) -> None:
        """The worker is gone (or going): fail everything in flight, exactly once."""
        if self.exit_reason is None:
            self.exit_reason = reason
        error_reason = self.exit_reason
        self.requests.cancel_all()  # nobody is left to read the answers
        self.channel.close(error_reason)
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
        if self.process is not None:
            self.process.send_signal(sig)

    async def stop(self, timeout: float = 2.0, reason: str = "shutdown") -> None:
        """Ask the worker to exit, then SIGTERM, then SIGKILL; returns once it is reaped."""
        if self.process is None:
            return
        if self.process.returncode is None:
            self.exit_reason = self.exit_reason or reason
            self.channel.send([Kind.EXIT, 0])
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and self.process.returncode is None:
                    self._signal(sig)
                try:
                    await asyncio.wait_for(asyncio.shield(self._exited.wait()), timeout / 2)
                    break
                except TimeoutError:
                    continue
        await self._exited.wait()
        await self._background.cancel_all()

    async def wait_closed(self) -> None:
        await self._exited.wait()

    @property
    def plugin_pid(self) -> int | None:
        """The host's pid of the process that runs the plugin: ``pid`` itself for a template's
        worker (pid 1 of its namespace) or one without namespaces; a spawned worker's
        grandchild in its world (``pid`` only relays, its child holds the namespace)."""
        return self._plugin_pid or self.pid

    def sample(self) -> Sample | None:
        """RSS and CPU seconds of the live worker, read by the host; None if gone."""
        return sample_process(self.plugin_pid) if self.alive else None

    def measure_rss(self) -> int | None:
        """The worker's resident memory, read by the host (cheap: the memory check's read)."""
        rss = self._rss.read(self.plugin_pid) if self.alive else None
        if rss is not None:
            self.stats.rss = rss
        return rss

    # --- what the channel routes here ----------------------------------------------------

    def _connection_lost(self) -> None:
        # EOF on the socket is the fastest crash signal: the process may not be reaped yet.
        # During a requested stop it is just the worker leaving; let it exit by itself.
        # In its own namespaces the process the host holds outlives the plugin's by the
        # moment it takes to notice and end the same way: a short grace keeps that exit code.
        expected = self.exit_reason is not None
        self._finish(self.exit_reason or self._unasked_reason())
        if not expected:
            asyncio.get_running_loop().call_later(EOF_GRACE, self._signal, signal.SIGKILL)

    def _serve_request(self, ident: int, op: str, payload: Any) -> None:
        self.requests.submit(ident, op, payload)

    def _protocol_violation(self, exc: ProtocolError) -> None:
        log.error(
            "worker %s (plugin %s) broke the protocol: %s; killing it", self.pid, self.plugin, exc
        )
        self.kill("protocol")

    # --- hooks ---------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until the calls in flight now have been answered."""
        await self.channel.drain(timeout)

    async def _request(
        self, frame: list[Any], hook: str, timeout: float | None, fds: list[int] | None = None
    ) -> Any:
        if not self.alive:
            raise PluginCrashed(f"worker is not running ({self.exit_reason})", self.plugin)
        return await self.channel.request(frame, hook, timeout, fds)

    async def assign(
        self,
        spec: WorkerSpec,
        *,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
        fetch_limits: FetchLimits | None = None,
        inbound: list[socket.socket] | None = None,
        on_refused: Callable[[AutoweaveError], None] | None = None,
    ) -> dict[str, Any]:
        """Give this blank worker its plugin: sandbox, import, onLoad. Raises LoadError.

        ``http`` is the client the fetch broker uses; without it, ``fetch`` is refused.
        ``on_refused`` is told of the plugin's requests that a permission refused. The
        worker also gets its private temp folder and metadata broker (``provision``).
        """
        assert self.pid is not None and self.provisions is None
        self.provisions, spec = Provisions.open(spec, self.pid)
        self.plugin = self.channel.plugin = spec.plugin
        self.requests.grant(spec.manifest, http, fetch_limits, on_refused)
        self.output.bind(spec.plugin)
        ident = self.channel.next_id()
        try:
            info: dict[str, Any] = await self._request(
                [Kind.ASSIGN, ident, spec.to_wire()],
                ASSIGN_HOOK,
                timeout,
                fds=[*self.provisions.fds(), *(s.fileno() for s in inbound or ())],
            )
        except TimeoutError:
            self.kill("timeout")
            raise LoadTimeout(f"loading took longer than {timeout:g} s", spec.plugin) from None
        except PluginCrashed as exc:
            raise LoadError(f"worker died while loading: {exc}", spec.plugin) from None
        finally:
            self.provisions.sent()
        self._plugin_pid = worker_pid(self.pid)
        return info

    def call(
        self,
        hook: str,
        *args: Any,
        timeout: float | None = None,
        cancel_grace: float = 0.25,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, Any]:
        """Call a hook (await it). Raises HookError, HookTimeout, UnknownHook or PluginCrashed,
        and ``UnsendableValue`` (nothing sent, nothing counted) for arguments outside the model."""
        return self.call_with(hook, args, kwargs, timeout, cancel_grace)

    async def call_with(
        self,
        hook: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        cancel_grace: float,
    ) -> Any:
        """``call`` with its arguments as they are: the manager's route, one frame shorter."""
        channel = self.channel
        if args or kwargs:
            channel.check_arguments(hook, args, kwargs)
        started = time.perf_counter()
        if self.exit_reason is not None or self.returncode is not None:
            self._count(started, error=True)
            raise PluginCrashed(f"worker is not running ({self.exit_reason})", self.plugin)
        ident = channel.next_id()
        frame = [_CALL, ident, hook, args, kwargs]
        # UnsendableValue from here: refused before sending, not the plugin's call nor error.
        future = channel.start_request(frame, hook, timeout)
        try:
            result = await future
        except asyncio.CancelledError:
            channel.abandon(frame)
            raise
        except TimeoutError:
            self._count(started, error=True)
            await self._cancel_or_kill(ident, cancel_grace)
            raise HookTimeout(f"{hook} did not finish within {timeout:g} s", self.plugin) from None
        except AutoweaveError:
            self._count(started, error=True)
            raise
        stats = self.stats
        stats.calls += 1
        stats.latency.add(time.perf_counter() - started)
        return result

    def _count(self, started: float, *, error: bool) -> None:
        self.stats.calls += 1
        self.stats.errors += error
        self.stats.latency.add(time.perf_counter() - started)

    async def _cancel_or_kill(self, ident: int, grace: float) -> None:
        future = self.channel.pending(ident)
        self.channel.send([Kind.CANCEL, ident])
        if future is not None:
            try:
                await asyncio.wait_for(asyncio.shield(future), grace)
                return
            except TimeoutError:
                pass
            except AutoweaveError:
                return  # the worker answered the cancel: it is responsive
        if future is not None and not future.done():
            self.channel.forget(ident)
            self.kill("timeout")

    async def ping(self, timeout: float = 5.0) -> dict[str, Any]:
        """Health check: the worker answers with its RSS and counters, or is killed."""
        ident = self.channel.next_id()
        try:
            info: dict[str, Any] = await self._request([Kind.PING, ident], PING_HOOK, timeout)
        except TimeoutError:
            self.kill("unhealthy")
            raise WorkerError(f"no pong within {timeout:g} s; worker killed", self.plugin) from None
        return info
