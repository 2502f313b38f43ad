"""How the pool starts blank workers: forked from the template, or spawned; and the fallback.

With ``worker_pool.start_method = "template"`` (the default) one template process forks every
worker (``template``, ``forked``): a blank worker is ready in a few milliseconds and costs
about 2 MB of its own memory, instead of ~100 ms and ~14 MB for a fresh interpreter. The
template is kept healthy here:

- If it dies, it is started again (in the background as soon as its exit is noticed, or by the
  next fork), with a short backoff; workers already forked are the host's children, not its,
  and carry on. A fork that was in flight is retried once on the new template.
- It is replaced when the files it loaded change on disk (a package upgrade: the next fork
  waits for a template with the new code), and after ``template_max_forks`` forks or
  ``template_max_age`` seconds (in the background; forks continue meanwhile).
- If it cannot be started (an unsupported platform, or ``MAX_START_ATTEMPTS`` failures in a
  row), the pool spawns workers instead, for good, with a warning; ``snapshot()`` (in the
  manager's stats) and ``doctor`` say which method is active and why.

The trade-off of a template, written down: every worker forked from one template shares its
address-space layout (ASLR offsets of the interpreter, libraries, heap and stack) and its
string-hash seed. A plugin can read both in its own process, so it knows them for its
siblings. That only matters together with a memory-safety bug in a sibling that the plugin
can feed data to; the host itself is not forked from the template and keeps its own layout.
Android's zygote has the same property, and "From Zygote to Morula" (Lee et al., NDSS 2014)
showed how apps exploit it and proposed re-randomised zygotes. Re-creating the template after
N forks or T seconds bounds how many workers share one layout; ``start_method = "spawn"``
gives every worker its own, at ~50x the start time and ~7x the memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from typing import Any

from autoweave_plugins.errors import WorkerError
from autoweave_plugins.forked import fork_from
from autoweave_plugins.launch import Started
from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.settings import LimitsConfig, WorkerPoolConfig
from autoweave_plugins.template import Template, TemplateDied, TemplateError

__all__ = ["StartMethod", "TemplateUnavailable", "probe_start_method"]

log = logging.getLogger(__name__)

MAX_START_ATTEMPTS = 3
"""Template starts that may fail in a row before the pool falls back to spawning."""
RETRY_BASE = 0.1  # seconds before the second start attempt; doubles after each failure


class TemplateUnavailable(WorkerError):
    """The template could not be (re)started: the pool spawns workers from now on."""


class StartMethod:
    """Starts blank workers for the pool: ``await method()`` returns a ready ``WorkerProcess``.

    ``open()`` starts the template (or falls back); ``close()`` stops it. Between the two it
    belongs to the event loop that opened it.
    """

    def __init__(
        self,
        pool: WorkerPoolConfig,
        limits: LimitsConfig,
        *,
        python: str = sys.executable,
        python_flags: tuple[str, ...] = (),
    ) -> None:
        self.requested = pool.start_method
        self.active = "spawn"
        """The method in use: "template" once the template started, else "spawn"."""
        self.fallback_reason: str | None = None
        self.template: Template | None = None
        self.template_starts = 0
        self.replaced: Counter[str] = Counter()
        """Templates replaced, by reason: died, package_changed, max_forks, max_age."""
        self._config = pool
        self._python = python
        self._python_flags = python_flags
        self._ready_timeout = limits.ready_timeout
        self._worker_options: dict[str, Any] = {
            "max_frame": limits.max_frame,
            "output": limits.output,
            "ready_timeout": limits.ready_timeout,
            "max_concurrent_requests": limits.max_concurrent_requests,
        }
        self._starting: asyncio.Task[Template] | None = None
        self._watched: Template | None = None
        self._closing = False

    # --- life ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the template when it is the requested method; on failure, fall back."""
        if self.requested != "template" or self.template is not None:
            return
        try:
            self._install(await self._new_template())
        except (TemplateError, OSError) as exc:
            self._fall_back(str(exc))
            return
        self.active = "template"

    async def close(self) -> None:
        self._closing = True
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                started = await self._starting
                await started.close()
        self._unwatch()
        if self.template is not None:
            await self.template.close()

    async def __call__(self) -> WorkerProcess:
        if self.active == "template":
            try:
                return await WorkerProcess.start(self._fork, **self._worker_options)
            except TemplateUnavailable as exc:
                self._fall_back(str(exc))
        return await WorkerProcess.spawn(
            python=self._python,
            python_flags=self._python_flags,
            world=self._config.world(),
            **self._worker_options,
        )

    @property
    def replacing(self) -> bool:
        """A new template is being started (a replacement, or after a death)."""
        return self._starting is not None and not self._starting.done()

    def snapshot(self) -> dict[str, Any]:
        """What stats and ``doctor`` show."""
        template = self.template
        return {
            "requested": self.requested,
            "active": self.active,
            "fallback_reason": self.fallback_reason,
            "template_pid": template.pid if template is not None and template.running() else None,
            "template_forks": template.forks if template is not None else 0,
            "template_starts": self.template_starts,
            "template_replaced": dict(self.replaced),
        }

    def _fall_back(self, reason: str) -> None:
        if self.active == "spawn" and self.fallback_reason is not None:
            return
        self.active = "spawn"
        self.fallback_reason = reason
        log.warning("worker template unavailable (%s): spawning each worker instead", reason)

    # --- forking ---------------------------------------------------------------------------

    async def _fork(self) -> Started:
        """A fork from a current template; one retry if the template dies under the request."""
        for attempt in range(2):
            template = await self._current()
            try:
                return await fork_from(template, self._ready_timeout)
            except TemplateDied:
                if attempt:
                    raise
                log.warning("worker template %s died during a fork; retrying", template.pid)
        raise AssertionError("unreachable")

    async def _current(self) -> Template:
        template = self.template
        if template is None or not template.running():
            return await self._restart("died")
        reason = template.stale()
        if reason == "package_changed":
            return await self._restart(reason)  # the next worker must run the new code
        if reason is not None:
            self._restart_soon(reason)  # meanwhile, the old one keeps forking
        return template

    def _restart_soon(self, reason: str) -> None:
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self._replace(reason))
            self._starting.add_done_callback(self._replaced)

    async def _restart(self, reason: str) -> Template:
        self._restart_soon(reason)
        assert self._starting is not None
        try:
            return await asyncio.shield(self._starting)
        except TemplateError as exc:
            raise TemplateUnavailable(str(exc)) from exc

    async def _replace(self, reason: str) -> Template:
        """Start a new template (retrying with backoff), install it, close the old one."""
        old = self.template
        for attempt in range(MAX_START_ATTEMPTS):
            try:
                new = await self._new_template()
                break
            except (TemplateError, OSError) as exc:
                log.warning("worker template did not start (attempt %d): %s", attempt + 1, exc)
                if attempt + 1 == MAX_START_ATTEMPTS:
                    raise TemplateError(f"{MAX_START_ATTEMPTS} starts failed: {exc}") from exc
                await asyncio.sleep(RETRY_BASE * 2**attempt)
        if self._closing:
            await new.close()
            raise TemplateError("the pool is closing")
        self.replaced[reason] += 1
        self._install(new)
        if old is not None:
            await old.close()
        return new

    async def _new_template(self) -> Template:
        template = Template(
            python=self._python,
            python_flags=self._python_flags,
            ready_timeout=self._ready_timeout,
            max_forks=self._config.template_max_forks,
            max_age=self._config.template_max_age,
            world=self._config.world(),
        )
        self.template_starts += 1
        await template.start()
        return template

    def _replaced(self, task: asyncio.Task[Template]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None and not self._closing:
            self._fall_back(str(error))

    # --- watching for its death ------------------------------------------------------------

    def _install(self, template: Template) -> None:
        self._unwatch()
        self.template = template
        if template.pidfd is not None:
            asyncio.get_running_loop().add_reader(template.pidfd, self._template_exited)
            self._watched = template

    def _unwatch(self) -> None:
        watched, self._watched = self._watched, None
        if watched is not None and watched.pidfd is not None:
            asyncio.get_running_loop().remove_reader(watched.pidfd)

    def _template_exited(self) -> None:
        template = self._watched
        self._unwatch()
        if template is None or template is not self.template or self._closing:
            return
        template.running()  # reaps it and fails pending requests
        if self.active == "template":
            self._restart_soon("died")


async def probe_start_method(pool: WorkerPoolConfig | None = None) -> dict[str, Any]:
    """Which start method this machine gets, found by starting one blank worker (``doctor``)."""
    method = StartMethod(pool or WorkerPoolConfig(), LimitsConfig())
    try:
        await method.open()
        began = time.perf_counter()
        worker = await method()
        ready_ms = round((time.perf_counter() - began) * 1000, 2)
        await worker.stop()
    finally:
        await method.close()
    report = method.snapshot()
    return {
        "requested": report["requested"],
        "active": report["active"],
        "fallback_reason": report["fallback_reason"],
        "blank_worker_ready_ms": ready_ms,
    }
