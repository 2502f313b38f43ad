"""Save -> new version serving, through the real watcher, at debounce=0.05 s.

Run: .venv/bin/python bench/reload_bench.py   (prints JSON)

Each sample writes a new main.py (atomic rename, as editors save) and polls the plugin until
it answers with the new version. The floor is the debounce itself: the watcher waits that long
for the burst of writes to settle before reloading.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # for tests.helpers
from _stats import emit
from tests.helpers.plugins import write_plugin_folder
from tests.helpers.waiting import wait_until

from autoweave_plugins import PluginManager

DEBOUNCE = 0.05
SAVES = 25
CODE = "VERSION = {version}\n\ndef version():\n    return VERSION\n"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hooks = {"onVersion": "version"}
        folder = write_plugin_folder(Path(tmp), "hot", CODE.format(version=0), hooks=hooks)
        samples = []
        async with PluginManager(
            tmp,
            worker_pool={"min_workers": 2},
            watcher={"debounce": DEBOUNCE, "manifest_only": False},
        ) as manager:
            await manager.call("hot", "onVersion")
            pool = manager.pool
            for version in range(1, SAVES + 1):
                await wait_until(  # the previous swap retired its old worker; the pool is warm
                    lambda: len(pool.spares) >= 2 and len(pool.live) == 1 + len(pool.spares),
                    "the old worker has exited and two spares are ready",
                    timeout=60,
                )
                temporary = folder / "main.py.tmp"
                temporary.write_text(CODE.format(version=version))
                start = time.perf_counter()
                os.replace(temporary, folder / "main.py")
                while await manager.call("hot", "onVersion") != version:
                    await asyncio.sleep(0.001)
                samples.append(time.perf_counter() - start)
    emit(
        "reload",
        {
            "debounce_ms": DEBOUNCE * 1000,
            "save_to_serving_ms": {
                "p50": round(statistics.median(samples) * 1000, 1),
                "min": round(min(samples) * 1000, 1),
                "max": round(max(samples) * 1000, 1),
            },
            "over_debounce_p50_ms": round(statistics.median(samples) * 1000 - DEBOUNCE * 1000, 1),
            "goals": {"over_debounce_p50_ms": 30},
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
