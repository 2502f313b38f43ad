"""Fixtures for the attack tests: a benign sibling worker and a host signal oracle.

Every test module here runs on one event loop per module (``pytestmark`` in each module), so
the sibling worker is spawned once per module instead of once per test. It is checked before
each test and replaced if an attack (or anything else) ended it, so one breach cannot hide
behind another.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from types import FrameType

import pytest
import pytest_asyncio

from autoweave_plugins.process import WorkerProcess
from tests.helpers.waiting import wait_until_sync
from tests.helpers.workers import write_plugin
from tests.security._support import (
    SIBLING_CODE,
    SIBLING_HOOKS,
    ReusableWorker,
    assert_responsive,
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def _sibling_holder(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ReusableWorker]:
    root = tmp_path_factory.mktemp("sibling-plugins")
    holder = ReusableWorker(write_plugin(root, "sibling", SIBLING_CODE, hooks=SIBLING_HOOKS))
    try:
        yield holder
    finally:
        with contextlib.suppress(Exception):
            await holder.close()


@pytest_asyncio.fixture(loop_scope="module")
async def sibling(_sibling_holder: ReusableWorker) -> WorkerProcess:
    """A benign plugin in its own worker; attacks must leave it alive and serving."""
    worker = await _sibling_holder.ensure()
    await assert_responsive(worker)
    return worker


@pytest.fixture
def host_sigusr1() -> Iterator[list[int]]:
    """Count SIGUSR1 delivered to this (host) process; proves the oracle works first."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        # Control: a real signal is seen. A process-directed signal may land on any thread
        # (asyncio's child watchers are threads); Python runs the handler in the main thread
        # at its next check, so give it a moment rather than expecting it synchronously.
        os.kill(os.getpid(), signal.SIGUSR1)
        wait_until_sync(
            lambda: bool(received), "the control SIGUSR1 is handled", timeout=2.0, interval=0.001
        )
        assert received == [signal.SIGUSR1]
        received.clear()
        yield received
    finally:
        signal.signal(signal.SIGUSR1, previous)
