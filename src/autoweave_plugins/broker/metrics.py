"""Plugin metrics as the host receives them: validated again, rate-limited, series capped.

The worker's SDK checks names and values too, but a hostile worker can send any frame, so
the host repeats every check. A plugin can create at most ``max_series`` distinct
(name, labels) series; samples beyond the cap or the rate are dropped and counted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from autoweave_plugins.ratelimit import TokenBucket

__all__ = ["PluginMetrics"]

NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.:]{0,127}\Z")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}\Z")

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(slots=True)
class _Series:
    last: float = 0.0
    total: float = 0.0
    count: int = 0


@dataclass(slots=True)
class PluginMetrics:
    """The metrics of one plugin."""

    max_series: int = 256
    per_second: float = 500.0
    series: dict[SeriesKey, _Series] = field(default_factory=dict)
    dropped_rate: int = 0
    dropped_series: int = 0
    rejected: int = 0
    _bucket: TokenBucket = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # A second's worth may come at once: the first burst is allowed.
        self._bucket = TokenBucket(self.per_second, self.per_second)

    def record(self, name: Any, value: Any, labels: Any) -> bool:
        """Store one sample if it is valid and within limits. Returns whether it was kept."""
        if (
            not isinstance(name, str)
            or not NAME.match(name)
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not isinstance(labels, dict)
            or len(labels) > 8
            or not all(
                isinstance(k, str) and LABEL.match(k) and isinstance(v, str) and len(v) <= 128
                for k, v in labels.items()
            )
        ):
            self.rejected += 1
            return False
        if not self._bucket.allow():
            self.dropped_rate += 1
            return False
        key = (name, tuple(sorted(labels.items())))
        series = self.series.get(key)
        if series is None:
            if len(self.series) >= self.max_series:
                self.dropped_series += 1
                return False
            series = self.series[key] = _Series()
        series.last = float(value)
        series.total += float(value)
        series.count += 1
        return True

    def snapshot(self) -> dict[str, Any]:
        return {
            "series": [
                {
                    "name": n,
                    "labels": dict(labels),
                    "last": s.last,
                    "total": s.total,
                    "count": s.count,
                }
                for (n, labels), s in self.series.items()
            ],
            "dropped_rate": self.dropped_rate,
            "dropped_series": self.dropped_series,
            "rejected": self.rejected,
        }
