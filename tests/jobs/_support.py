"""Plugins and waiting helpers shared by the job-queue tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from autoweave_plugins import PluginManager
from autoweave_plugins.events import Event
from autoweave_plugins.jobs import JobConsumer, JobsConfig

WORDS = """
import os
import time

def count(job):
    return {"words": len(job["text"].split()), "pid": os.getpid()}

def boom(job):
    raise ValueError("bad input " + str(job))

def slow(seconds):
    time.sleep(seconds)
    return seconds

def blob(size):
    return "x" * size
"""

CRASH = """
import os

def crash(job):
    os._exit(7)
"""


def plugin(root: Path, name: str, code: str, hooks: dict[str, str], **permissions: Any) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    manifest: dict[str, Any] = {
        "name": name,
        "version": "1.0.0",
        "entry": "main.py",
        "hooks": hooks,
    }
    if permissions:
        manifest["permissions"] = permissions
    (folder / "autoweave.plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(code)
    return folder


def word_counter(root: Path, max_workers: int = 1) -> Path:
    hooks = {"onJobReceived": "count", "onBoom": "boom", "onSlow": "slow", "onBlob": "blob"}
    return plugin(root, "word-counter", WORDS, hooks, memory={"max_workers": max_workers})


def crasher(root: Path) -> Path:
    return plugin(root, "crasher", CRASH, {"onJobReceived": "crash"})


async def until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Wait for ``condition()`` to be true (checked every 20 ms); its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def host(
    root: Path, url: str, *, max_workers: int = 4, per_worker: int = 2, **jobs: Any
) -> AsyncIterator[tuple[PluginManager, JobConsumer, list[Event]]]:
    """A manager on ``root`` joined to the queue, with short leases; and its job events."""
    settings: dict[str, Any] = {
        "lease": 2.0,
        "heartbeat": 0.5,
        "max_deliveries": 3,
        "name": "test-host",
    }
    settings.update(jobs)
    config = JobsConfig(url=url, **settings)
    config.validate("jobs")
    manager = PluginManager(
        root, worker_pool={"min_workers": 0, "max_workers": max_workers}, watcher={"enabled": False}
    )
    events: list[Event] = []
    for name in ("job:started", "job:done", "job:failed", "job:dead"):
        manager.on(name, events.append)
    async with manager:
        consumer = JobConsumer(manager, config, max_workers=max_workers, per_worker=per_worker)
        await consumer.start()
        try:
            yield manager, consumer, events
        finally:
            await consumer.drain(timeout=5)
