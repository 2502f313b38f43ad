"""Discovery of 1,000 generated plugins, cold (fresh cache and fresh process state).

Run: .venv/bin/python bench/discovery_bench.py   (prints JSON)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import emit

from autoweave_plugins.discovery import discover
from autoweave_plugins.manifest import ManifestCache

PLUGINS = 1000
REPEATS = 7


def generate(root: Path) -> None:
    for index in range(PLUGINS):
        folder = root / f"plugin-{index:04d}"
        folder.mkdir()
        manifest = {
            "name": f"plugin-{index:04d}",
            "version": f"1.{index % 10}.0",
            "entry": "main.py",
            "permissions": {
                "filesystem": [{"path": f"/tmp/plugin-data/{index}", "mode": "readwrite"}],
                "network": {"outbound": [f"https://api{index % 50}.example.com/*"]},
                "memory": {"max_heap_mb": 128},
            },
            "hooks": {"onLoad": "initialize", "onUnload": "cleanup"},
        }
        (folder / "autoweave.plugin.json").write_text(json.dumps(manifest, indent=2))
        (folder / "main.py").write_text("def initialize():\n    pass\n")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root)
        cold, warm = [], []
        for _ in range(REPEATS):
            cache = ManifestCache(maxsize=PLUGINS)
            start = time.perf_counter()
            result = discover(root, cache=cache)
            cold.append((time.perf_counter() - start) * 1000)
            assert len(result.plugins) == PLUGINS and not result.problems
            start = time.perf_counter()
            discover(root, cache=cache)
            warm.append((time.perf_counter() - start) * 1000)
    emit(
        "discovery",
        {
            "plugins": PLUGINS,
            "cold_ms": {"median": round(statistics.median(cold), 2), "min": round(min(cold), 2)},
            "rescan_with_cache_ms": {
                "median": round(statistics.median(warm), 2),
                "min": round(min(warm), 2),
            },
            "note": "cold = new ManifestCache each run; the OS page cache is warm (files just written)",
            "goals": {"cold_ms": 50},
        },
    )


if __name__ == "__main__":
    main()
