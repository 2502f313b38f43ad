"""The names of everything the job queue keeps in Redis, decided in one place.

Hosts, clients and the hotplug source all build key names here, so a producer written in
another language only has to follow this list (it is also in the README).
"""

from __future__ import annotations

__all__ = [
    "GROUP",
    "HOTPLUG_GROUP",
    "HOTPLUG_STREAM",
    "dead_stream",
    "done_channel",
    "error_key",
    "jobs_stream",
    "result_key",
    "stats_key",
]

GROUP = "autoweave"
"""The consumer group every host reads the job streams in."""
HOTPLUG_STREAM = "aw:hotplug"
"""Where the USB daemon of the system we replace publishes attach/detach events."""
HOTPLUG_GROUP = "plugin-loader"
"""The consumer group of ``aw:hotplug``, as in the system we replace."""


def jobs_stream(plugin: str) -> str:
    """The stream of a plugin's queued and in-flight jobs."""
    return f"autoweave:jobs:{plugin}"


def dead_stream(plugin: str) -> str:
    """Jobs that will not be run: ``max_deliveries`` reached, or malformed."""
    return f"autoweave:dead:{plugin}"


def result_key(job_id: str) -> str:
    """A job's answer, written once (SET NX) and kept for ``result_ttl``."""
    return f"autoweave:result:{job_id}"


def error_key(job_id: str) -> str:
    """The error of a job's last failed delivery, for its dead letter."""
    return f"autoweave:error:{job_id}"


def stats_key(plugin: str) -> str:
    """A hash of counters shared by all hosts: done, failed, dead, duplicate, redelivered."""
    return f"autoweave:stats:{plugin}"


def done_channel(job_id: str) -> str:
    """Pub/sub channel told when the job's answer is recorded, so waiters need not poll."""
    return f"autoweave:done:{job_id}"
