"""The deadlines of one channel's requests: one heap and one timer, armed for the earliest.

The host's channel times out its requests with it; it imports nothing above the standard
library, as everything in ``rpc``.

A timer per request (and its cancellation when the answer comes first) costs every call more
than the heap push that replaces it. Answered requests are not removed from the heap: they are
skipped when they come first, and pruned once they make up most of it. What an expired
request becomes is the channel's business (``expire``).
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Mapping

__all__ = ["Deadlines"]


class Deadlines:
    """``pending``: the channel's requests by id, which may still be awaited (answered ones
    are pruned by it); ``awaited(ident)``: whether request ``ident`` still waits for its
    answer; ``expire(ident)``: its deadline passed while it waited."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pending: Mapping[int, object],
        awaited: Callable[[int], bool],
        expire: Callable[[int], None],
    ) -> None:
        self._loop = loop
        self._pending = pending
        self._awaited = awaited
        self._expire = expire
        self._heap: list[tuple[float, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def add(self, timeout: float, ident: int) -> None:
        """Request ``ident`` expires ``timeout`` seconds from now."""
        deadline = self._loop.time() + timeout
        heap = self._heap
        heapq.heappush(heap, (deadline, ident))
        if len(heap) > 2 * len(self._pending) + 64:  # mostly answered: prune
            # Answered ones only; the few expired or cancelled left are skipped when due.
            pending = self._pending
            heap = self._heap = [d for d in heap if d[1] in pending]
            heapq.heapify(heap)
        if deadline < self._timer_at:
            self._arm(deadline)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        self._heap.clear()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time()
        heap = self._heap
        while heap:
            deadline, ident = heap[0]
            if not self._awaited(ident):
                heapq.heappop(heap)
                continue
            if deadline > now:
                self._arm(deadline)
                return
            heapq.heappop(heap)
            self._expire(ident)
