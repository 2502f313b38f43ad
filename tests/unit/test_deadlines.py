"""A channel's request deadlines: one heap, one timer; expiry in order, answered ones skipped."""

from __future__ import annotations

import asyncio

from autoweave_plugins.rpc.deadlines import Deadlines


class Requests:
    """The channel's side: which requests wait, and which expired (in order)."""

    def __init__(self) -> None:
        self.pending: dict[int, object] = {}
        self.expired: list[int] = []
        self.done = asyncio.Event()
        self.deadlines = Deadlines(
            asyncio.get_running_loop(), self.pending, self.pending.__contains__, self.expire
        )

    def expire(self, ident: int) -> None:
        self.expired.append(ident)
        del self.pending[ident]
        if not any(i in self.pending for i in (1, 2, 4)):
            self.done.set()


async def test_requests_expire_in_deadline_order_and_answered_ones_never() -> None:
    requests = Requests()
    for ident, timeout in ((1, 0.06), (2, 0.01), (3, 0.03), (4, 0.04)):
        requests.pending[ident] = object()
        requests.deadlines.add(timeout, ident)
    del requests.pending[3]  # answered before its deadline
    await asyncio.wait_for(requests.done.wait(), 5)
    assert requests.expired == [2, 4, 1]


async def test_answered_requests_do_not_pile_up() -> None:
    requests = Requests()
    for ident in range(1, 10_001):
        requests.pending[ident] = object()
        requests.deadlines.add(30.0, ident)
        del requests.pending[ident]  # answered at once, as most calls are
    assert len(requests.deadlines._heap) <= 65
    requests.deadlines.close()
    assert requests.expired == []
