"""Plugin jobs and device events over Redis Streams, across many hosts.

- ``JobQueue``: submit jobs and wait for their answers (the client).
- ``JobConsumer``: a host's membership of the queue (``autoweave-plugins run --jobs URL``).
- ``RedisHotplugSource``: USB events from the stream ``aw:hotplug`` (``run --usb redis://``).
- ``JobsConfig``: the ``[jobs]`` section of the host config.

Delivery is at-least-once and the answer is recorded exactly once per job id; see
``scripts`` for the fence that makes it so. Names are imported on first use, so that reading
the config does not import redis-py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoweave_plugins.jobs.client import JobQueue
    from autoweave_plugins.jobs.codec import Answer
    from autoweave_plugins.jobs.consumer import JobConsumer
    from autoweave_plugins.jobs.errors import (
        InvalidJob,
        JobDeadLettered,
        JobError,
        JobQueueFull,
        JobResultTimeout,
        JobsUnavailable,
    )
    from autoweave_plugins.jobs.hotplug import RedisHotplugSource
    from autoweave_plugins.jobs_config import JobsConfig

_EXPORTS = {
    "InvalidJob": "autoweave_plugins.jobs.errors",
    "JobDeadLettered": "autoweave_plugins.jobs.errors",
    "JobError": "autoweave_plugins.jobs.errors",
    "JobQueueFull": "autoweave_plugins.jobs.errors",
    "JobResultTimeout": "autoweave_plugins.jobs.errors",
    "JobsUnavailable": "autoweave_plugins.jobs.errors",
    "Answer": "autoweave_plugins.jobs.codec",
    "JobQueue": "autoweave_plugins.jobs.client",
    "JobsConfig": "autoweave_plugins.jobs_config",
    "JobConsumer": "autoweave_plugins.jobs.consumer",
    "RedisHotplugSource": "autoweave_plugins.jobs.hotplug",
}

__all__ = [
    "Answer",
    "InvalidJob",
    "JobConsumer",
    "JobDeadLettered",
    "JobError",
    "JobQueue",
    "JobQueueFull",
    "JobResultTimeout",
    "JobsConfig",
    "JobsUnavailable",
    "RedisHotplugSource",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autoweave_plugins.jobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
