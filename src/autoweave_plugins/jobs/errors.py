"""The Redis job queue's errors, all under ``AutoweaveError`` (see ``errors`` for the tree).

Kept beside the queue, as the environments' errors are beside the builder: they matter only to
code that uses ``autoweave_plugins.jobs``.
"""

from __future__ import annotations

from autoweave_plugins.errors import AutoweaveError

__all__ = [
    "InvalidJob",
    "JobDeadLettered",
    "JobError",
    "JobQueueFull",
    "JobResultTimeout",
    "JobsUnavailable",
]


class JobError(AutoweaveError):
    """Base of the errors of the Redis job queue (``autoweave_plugins.jobs``)."""


class InvalidJob(JobError, ValueError):
    """A job message is malformed. ``field`` names the part that is wrong, ``reason`` says how.

    A host dead-letters such a message with this text as its reason; it is never run or retried.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"job {field}: {reason}")
        self.field = field
        self.reason = reason


class JobDeadLettered(JobError):
    """The job was moved to the dead-letter stream ``autoweave:dead:<plugin>`` instead of run.

    ``reason`` says why (``max_deliveries`` reached, or a malformed message), ``last_error``
    is the error of its last delivery (empty if none was recorded), ``deliveries`` how often it
    was handed to a host.
    """

    def __init__(
        self, job_id: str, plugin: str, reason: str, last_error: str, deliveries: int
    ) -> None:
        detail = f"; last error: {last_error}" if last_error else ""
        super().__init__(
            f"job {job_id} of plugin {plugin!r} was dead-lettered after {deliveries} "
            f"deliveries: {reason}{detail}"
        )
        self.job_id = job_id
        self.plugin = plugin
        self.reason = reason
        self.last_error = last_error
        self.deliveries = deliveries


class JobQueueFull(JobError):
    """The plugin's job stream holds ``max_len`` jobs: submit again later, or add hosts."""


class JobResultTimeout(JobError, TimeoutError):
    """No answer to the job was recorded within the time ``JobQueue.result`` was given.

    The job may still run later: its answer stays readable for ``result_ttl`` seconds.
    """


class JobsUnavailable(JobError, ConnectionError):
    """The Redis server of the job queue cannot be reached (after the client's retries)."""
