"""Prometheus exposition from stats callables: no manager, no workers."""

from __future__ import annotations

import pytest

from autoweave_plugins import metrics as metrics_module
from autoweave_plugins.metrics import ManagerMetrics
from autoweave_plugins.stats import ManagerStats, PluginSnapshot

STATS: ManagerStats = {
    "plugins": {"idle": 2, "failed": 1},
    "workers": {
        "live": 4,
        "spare": 1,
        "assigned": 3,
        "busy": 1,
        "created": 7,
        "spawn_failures": 0,
        "terminated": {"crashed": 2, "idle": 1},
        "start_method": {"requested": "template", "active": "template"},
    },
    "loader": {
        "queued": 0,
        "loading": 0,
        "loads_ok": 5,
        "loads_failed": 1,
        "load_time_p50_ms": 12.0,
        "load_time_p95_ms": 30.0,
    },
    "cache": {"hits": 9, "misses": 3, "size": 3, "evictions": 0},
    "environments": {
        "preparing": 1,
        "in_use": 2,
        "hits": 4,
        "resolutions": 1,
        "builds": 1,
        "failures": 1,
        "uv_runs": 2,
        "pruned": 3,
    },
}


def snapshot(name: str, series: int = 1) -> PluginSnapshot:
    return {
        "name": name,
        "restarts": 2,
        "calls": 11,
        "workers": [
            {
                "pid": 4242,
                "rss": 5 << 20,
                "plugin_metrics": {
                    "series": [
                        {"name": f"m{i}", "labels": {"k": "v"}, "last": 1.5, "total": 3.0}
                        for i in range(series)
                    ],
                    "dropped_rate": 0,
                    "dropped_series": 4,
                    "rejected": 0,
                },
            }
        ],
    }


def test_state_is_read_from_the_callables_at_scrape_time() -> None:
    plugins: list[PluginSnapshot] = []
    metrics = ManagerMetrics(lambda: STATS, lambda: plugins)
    assert 'autoweave_plugins_restarts_total{plugin="alpha"}' not in metrics.text()
    plugins.append(snapshot("alpha"))
    text = metrics.text()
    assert 'autoweave_plugins_plugins{state="failed"} 1.0' in text
    assert 'autoweave_plugins_workers{kind="busy"} 1.0' in text
    assert 'autoweave_plugins_workers_terminated_total{reason="crashed"} 2.0' in text
    assert 'autoweave_plugins_loads_total{outcome="failed"} 1.0' in text
    assert 'autoweave_plugins_restarts_total{plugin="alpha"} 2.0' in text
    assert 'autoweave_plugins_worker_rss_bytes{pid="4242",plugin="alpha"} 5.24288e+06' in text
    assert "autoweave_plugins_manifest_cache_hits_total 9.0" in text
    assert (
        'autoweave_plugins_plugin_metric_dropped_total{plugin="alpha",reason="series"} 4.0' in text
    )
    assert (
        'autoweave_plugins_plugin_metric{label_k="v",metric="m0",pid="4242",plugin="alpha"} 1.5'
        in text
    )
    assert "autoweave_plugins_environments_preparing 1.0" in text
    assert "autoweave_plugins_environments_in_use 2.0" in text
    assert "autoweave_plugins_environment_builds_total 1.0" in text
    assert "autoweave_plugins_environment_pruned_total 3.0" in text


def test_observed_durations() -> None:
    metrics = ManagerMetrics(lambda: STATS, list)
    metrics.observe_call("alpha", "onWork", 0.003)
    metrics.load_seconds.labels("alpha").observe(0.2)
    metrics.errors.labels("alpha", "HookError").inc()
    text = metrics.text()
    assert 'autoweave_plugins_hook_call_seconds_count{hook="onWork",plugin="alpha"} 1.0' in text
    assert 'autoweave_plugins_load_seconds_count{plugin="alpha"} 1.0' in text
    assert 'autoweave_plugins_errors_total{plugin="alpha",type="HookError"} 1.0' in text


def test_plugin_series_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_PLUGIN_SERIES", 3)
    metrics = ManagerMetrics(lambda: STATS, lambda: [snapshot("a", 2), snapshot("b", 2)])
    text = metrics.text()
    assert text.count("autoweave_plugins_plugin_metric{") == 3
    assert text.count("autoweave_plugins_plugin_metric_sum_total{") == 3


def test_call_durations_land_in_cumulative_buckets() -> None:
    metrics = ManagerMetrics(lambda: STATS, list)
    for seconds in (0.00005, 0.0001, 0.0002, 0.003, 60.0):  # a bound holds what equals it
        metrics.observe_call("alpha", "onWork", seconds)
    metrics.observe_call("alpha", "onOther", 0.2)
    lines = metrics.text().splitlines()

    def sample(name: str, hook: str, le: str | None = None) -> float:
        bucket = f',le="{le}"' if le is not None else ""
        head = (
            f'autoweave_plugins_hook_call_seconds_{name}{{hook="{hook}"{bucket},plugin="alpha"}} '
        )
        [line] = [line for line in lines if line.startswith(head)]
        return float(line.removeprefix(head))

    buckets = {le: sample("bucket", "onWork", le) for le in ("0.0001", "0.00025", "0.005", "30.0")}
    assert buckets == {"0.0001": 2, "0.00025": 3, "0.005": 4, "30.0": 4}
    assert sample("bucket", "onWork", "+Inf") == sample("count", "onWork") == 5
    assert sample("sum", "onWork") == pytest.approx(60.00335)
    assert sample("count", "onOther") == 1 and sample("bucket", "onOther", "0.1") == 0
    assert sample("created", "onWork") > 0
