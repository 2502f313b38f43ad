"""Manifest parse + validate of the seed manifest, against bare orjson.loads; and a cache hit.

Run: .venv/bin/python bench/manifest_bench.py   (prints JSON)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import emit, per_call_us

from autoweave_plugins.manifest import ManifestCache, check_manifest_bytes

SEED = b"""{
  "name": "example-plugin",
  "version": "1.0.0",
  "description": "An example plugin",
  "entry": "main.py",
  "permissions": {
    "filesystem": [{"path": "/tmp/plugin-data", "mode": "readwrite"}],
    "network": {"outbound": ["https://api.example.com/*"]},
    "memory": {"max_heap_mb": 256}
  },
  "hooks": {"onLoad": "initialize", "onUnload": "cleanup", "onUSBAttach": "handleUSBDevice"}
}"""

CALLS = 10_000


def main() -> None:
    manifest, issues = check_manifest_bytes(SEED)
    assert manifest is not None, issues
    floor = per_call_us(lambda: orjson.loads(SEED), calls=CALLS)
    full = per_call_us(lambda: check_manifest_bytes(SEED), calls=CALLS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "autoweave.plugin.json"
        path.write_bytes(SEED)
        cache = ManifestCache()
        cache.check(path)
        cache.check(path)  # the file is fresh ("racily clean") on the first look
        hit = per_call_us(lambda: cache.check(path), calls=CALLS)
        assert cache.stats().hits >= CALLS
    emit(
        "manifest",
        {
            "calls_per_sample": CALLS,
            "orjson_loads_floor": floor,
            "parse_and_validate": full,
            "ratio_to_floor": round(full["median_us"] / floor["median_us"], 2),
            "cache_hit": hit,
            "goals": {"parse_and_validate_us": 15, "ratio_to_floor": 6, "cache_hit_us": 3},
        },
    )


if __name__ == "__main__":
    main()
