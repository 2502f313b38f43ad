"""Records: the state machine, one assignment per worker, and call accounting."""

from __future__ import annotations

import pytest

from autoweave_plugins.errors import UnknownPlugin
from autoweave_plugins.recovery import CircuitBreaker
from autoweave_plugins.registry import (
    TRANSITIONS,
    IllegalTransition,
    PluginRecord,
    PluginState,
    Registry,
)
from autoweave_plugins.settings import Priority
from tests.unit.conftest import FakeWorker, as_process, plugin

S = PluginState


def state_of(r: PluginRecord) -> PluginState:
    """Read afresh (mypy would keep the state narrowed from an earlier assert)."""
    return r.state


def record(name: str = "alpha", state: PluginState = S.DISCOVERED) -> PluginRecord:
    made = PluginRecord(plugin(name), Priority.NORMAL, False, CircuitBreaker(5, 60.0))
    made._state = state
    return made


@pytest.mark.parametrize(
    ("start", "end"), [(a, b) for a in PluginState for b in PluginState if a is not b]
)
def test_only_the_table_s_transitions_are_allowed(start: PluginState, end: PluginState) -> None:
    r = record(state=start)
    if end in TRANSITIONS[start]:
        r.move_to(end)
        assert r.state is end
    else:
        with pytest.raises(IllegalTransition, match=f"{start} -> {end}"):
            r.move_to(end)
        assert r.state is start


def test_nothing_serves_before_it_is_loaded() -> None:
    for start in (S.DISCOVERED, S.DORMANT):
        assert not TRANSITIONS[start] & {S.ACTIVE, S.IDLE, S.FAILED}
    assert not TRANSITIONS[S.PREPARING] & {S.ACTIVE, S.IDLE}  # ready means discovered again
    assert S.ACTIVE not in TRANSITIONS[S.FAILED]  # calls are refused while the breaker is open
    assert all(S.QUEUED in TRANSITIONS[s] for s in PluginState if s is not S.QUEUED)


def test_staying_in_a_state_is_always_allowed() -> None:
    for state in PluginState:
        r = record(state=state)
        r.move_to(state)
        assert r.state is state


def test_the_lifecycle_of_a_call() -> None:
    r = record()
    for state in (S.QUEUED, S.LOADING, S.IDLE):
        r.move_to(state)
    worker = FakeWorker()
    assignment = r.attach(as_process(worker))
    assert r.workers == [as_process(worker)] and r.least_busy() is assignment
    r.call_started(assignment)
    r.call_started(assignment)
    assert r.state is S.ACTIVE and assignment.busy == 2 and r.access_count == 2
    r.call_finished(assignment, 0.01, now=100.0)
    assert r.state is S.ACTIVE  # one call still running
    r.call_finished(assignment, 0.02, now=101.0)
    assert state_of(r) is S.IDLE and assignment.busy == 0 and assignment.used == 101.0
    assert r.last_used == 101.0 and r.latency.count == 2


def test_a_call_on_a_detached_worker_still_finishes_cleanly() -> None:
    r = record(state=S.IDLE)
    worker = FakeWorker()
    assignment = r.attach(as_process(worker))
    r.call_started(assignment)
    assert r.detach(as_process(worker)) is assignment
    assert r.detach(as_process(worker)) is None
    r.call_finished(assignment, 0.01, now=5.0)
    assert r.calls_in_flight == 0 and assignment.busy == 1 and r.state is S.IDLE


def test_least_busy_skips_dead_workers() -> None:
    r = record(state=S.IDLE)
    busy, idle, dead = FakeWorker(), FakeWorker(), FakeWorker()
    first = r.attach(as_process(busy))
    r.attach(as_process(idle))
    r.attach(as_process(dead))
    r.call_started(first)
    dead.exit_reason = "crashed"
    chosen = r.least_busy()
    assert chosen is not None and chosen.worker is as_process(idle)
    idle.exit_reason = busy.exit_reason = "crashed"
    assert r.least_busy() is None


def test_adopting_a_new_version_resets_recovery() -> None:
    r = record(state=S.FAILED)
    r.breaker.record_crash(0.0)
    r.consecutive_restarts = 4
    newer = plugin("alpha", description="v2")
    r.adopt(newer, b"fingerprint")
    assert r.plugin is newer and r.fingerprint == b"fingerprint"
    assert r.consecutive_restarts == 0 and not r.breaker.crashes


def test_registry_lookups() -> None:
    registry = Registry()
    alpha, beta = record("alpha"), record("beta")
    registry.add(alpha)
    registry.add(beta)
    assert list(registry) == ["alpha", "beta"] and len(registry) == 2
    assert registry.get_record("beta") is beta and registry["alpha"] is alpha
    with pytest.raises(UnknownPlugin, match="gamma"):
        registry.get_record("gamma")
    worker = FakeWorker()
    worker.plugin = "beta"
    assert registry.owner(as_process(worker)) is beta
    assert registry.by_folder() == {alpha.plugin.folder: alpha, beta.plugin.folder: beta}
    stale = record("alpha")
    registry.remove(stale)  # not the current record for its name: nothing happens
    assert registry.is_current(alpha) and not registry.is_current(stale)
    registry.remove(alpha)
    assert "alpha" not in registry and registry.folders() == [beta.plugin.folder]


def test_the_moves_every_call_makes_unchecked_are_allowed() -> None:
    """call_started/call_finished set IDLE <-> ACTIVE without move_to's check: on every call."""
    assert PluginState.ACTIVE in TRANSITIONS[PluginState.IDLE]
    assert PluginState.IDLE in TRANSITIONS[PluginState.ACTIVE]
