"""Save -> new version serving, through the real watcher, at debounce=0.05 s.

Run: .venv/bin/python bench/reload_bench.py   (prints JSON)

Each sample writes a new main.py (atomic rename, as editors save) and polls the plugin until
it answers with the new version. The floor is the debounce itself: the watcher waits that long
for the burst of writes to settle before reloading.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import emit

from autoweave_plugins import PluginManager

DEBOUNCE = 0.05
SAVES = 25
CODE = "VERSION = {version}\n\ndef version():\n    return VERSION\n"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hot"
        folder.mkdir()
        (folder / "autoweave.plugin.json").write_text(
            json.dumps(
                {
                    "name": "hot",
                    "version": "1.0.0",
                    "entry": "main.py",
                    "hooks": {"onVersion": "version"},
                }
            )
        )
        (folder / "main.py").write_text(CODE.format(version=0))
        samples = []
        async with PluginManager(
            tmp,
            worker_pool={"min_workers": 2},
            watcher={"debounce": DEBOUNCE, "manifest_only": False},
        ) as manager:
            await manager.call("hot", "onVersion")
            for version in range(1, SAVES + 1):
                await asyncio.sleep(0.3)  # let the previous swap retire its old worker
                while len(manager.pool.spares) < 2:
                    await asyncio.sleep(0.01)
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
