"""What a worker prints and logs, forwarded into host logging: bounded in line length and rate.

A worker's stdout and stderr are pipes the plugin can fill at will, and its LOG frames are
records it chooses. Both reach the host's logging only line by line, each line cut to
``max_line`` and the whole under one token bucket per stream, so a chatty or hostile plugin
costs the host a bounded amount of memory and log volume. Lines over the rate are dropped and
counted; the count is logged when the bucket allows.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from autoweave_plugins.ratelimit import TokenBucket
from autoweave_plugins.rpc import brief

__all__ = ["DEFAULT_OUTPUT_LIMITS", "OutputLimits", "PluginOutput"]

log = logging.getLogger("autoweave_plugins.process")


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """How much of a worker's stdout, stderr and log records reaches host logging."""

    lines_per_second: float = 50.0
    """Lines a second each stream (stdout, stderr, log records) may forward, on average."""

    burst: int = 200
    """Lines a stream may forward at once before the rate applies."""

    max_line: int = 2048
    """Bytes of a stdout/stderr line (characters of a log record) kept; the rest is dropped."""


DEFAULT_OUTPUT_LIMITS = OutputLimits()


class PluginOutput:
    """Forwards one worker's output to the logger of the plugin it runs."""

    def __init__(self, limits: OutputLimits) -> None:
        self.limits = limits
        self.logger = log
        self._records = TokenBucket(limits.lines_per_second, limits.burst)

    def bind(self, plugin: str) -> None:
        """From now on, lines are logged under the plugin's own logger."""
        self.logger = logging.getLogger(f"autoweave_plugins.plugin.{plugin}")

    def record(self, level: int, message: object) -> None:
        """One LOG frame from the worker: its level is clamped, its text cut to ``max_line``."""
        if self._records.allow():
            text = message if isinstance(message, str) else brief(message)
            text = text[: self.limits.max_line]
            self.logger.log(max(logging.DEBUG, min(level, logging.CRITICAL)), "%s", text)

    async def pump(self, stream: asyncio.StreamReader, level: int) -> None:
        """Forward a pipe line by line until EOF, never buffering more than one line."""
        limits = self.limits
        bucket = TokenBucket(limits.lines_per_second, limits.burst)
        partial = b""
        reported = 0
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()[: limits.max_line]
            for line in lines:
                if bucket.allow():
                    text = line[: limits.max_line].decode("utf-8", "replace")
                    self.logger.log(level, "%s", text)
            if bucket.denied > reported and bucket.allow():
                self.logger.warning(
                    "output rate limit: %d lines suppressed", bucket.denied - reported
                )
                reported = bucket.denied
