"""What the namespace layer adds to a worker's start, against a bare fork measured beside it.

Run: .venv/bin/python bench/namespace_bench.py   (prints JSON; as root it measures the root
host's path, as any other user the unprivileged one)

Every sample runs in a fresh fork of a process that has imported the worker's runtime
(``blank_worker``: the size of a blank worker, where today's entry point would call it), and
again of a fresh interpreter that has imported only the namespace layer (``early``: where the
worker could call it first thing). Measured per sample, in the same run:
- ``floor``: that process forks a child that exits at once and reaps it (a bare fork+exit);
- ``open``: ``open_namespaces()``, from the call to its return in the worker (G): unshare,
  the two forks (pid 1 and the worker), the plugin-independent part of the view. Paid when
  a worker starts, before READY, off the load path. ``plan_base()`` is made beforehand, as a
  template would make it once; its cost is reported apart (``plan_base``);
- ``world``: ``enter_world()`` for a plugin with a read and a write grant: its mounts, the
  old root detached, the final identity. Paid at assignment, on the load path;
- ``total``: both.
Also what the two extra processes cost: the private memory of W (the relay) and C (pid 1).

``template_workers``: the way workers really start by default, forked from the template, with
the layer on and off (two templates, interleaved one worker each per round): READY, and
READY -> a trivial plugin assigned, at the host; the layer's own phases as the worker reports
them (``open`` and ``base`` after READY, ``world`` at assignment); and what it adds, p50 on
minus p50 off.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import emit

from autoweave_plugins.sandbox.namespaces import enter_world, open_namespaces, worker_pid
from autoweave_plugins.sandbox.world import BasePlan, WorldSpec, plan_base
from autoweave_plugins.stats import percentile

SAMPLES = 40
WARMUP = 3
_TIMES = struct.Struct("=3d")


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = percentile(ordered, 0.99)
    assert p99 is not None
    return {"p50_ms": round(ordered[len(ordered) // 2], 3), "p99_ms": round(p99, 3)}


def floor_sample() -> float:
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        started = time.perf_counter()
        if os.fork() == 0:
            os._exit(0)
        os.wait()
        os.write(write_fd, struct.pack("=d", (time.perf_counter() - started) * 1e3))
        os._exit(0)
    os.close(write_fd)
    data = os.read(read_fd, 8)
    os.close(read_fd)
    os.waitpid(child, 0)
    return float(struct.unpack("=d", data)[0])


def private_kb(pid: int) -> int:
    """Memory only this process holds (what it costs beyond the pages it shares)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def world_sample(
    spec: WorldSpec, plan: BasePlan, memory: list[dict[str, int]]
) -> tuple[float, float, float]:
    read_fd, write_fd = os.pipe()
    hold_r, hold_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        os.close(hold_w)
        started = time.perf_counter()
        namespaces = open_namespaces(plan)
        opened = time.perf_counter()
        enter_world(spec, namespaces)
        done = time.perf_counter()
        os.write(write_fd, _TIMES.pack(started, opened, done))
        os.read(hold_r, 1)  # stay until the parent has measured memory
        os._exit(0)
    os.close(write_fd)
    os.close(hold_r)
    data = os.read(read_fd, _TIMES.size)
    os.close(read_fd)
    if len(memory) < 5:
        worker = worker_pid(child)
        with open(f"/proc/{child}/task/{child}/children") as children:
            holder = next(int(pid) for pid in children.read().split() if int(pid) != worker)
        memory.append({"W": private_kb(child), "C": private_kb(holder), "G": private_kb(worker)})
    os.close(hold_w)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    started, opened, done = _TIMES.unpack(data)
    return (opened - started) * 1e3, (done - opened) * 1e3, (done - started) * 1e3


def measure() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name in ("plugin", "in", "out"):
            (root / name).mkdir()
        (root / "plugin" / "main.py").write_text("def hook():\n    return 1\n")
        if os.geteuid() == 0:
            os.chown(root / "out", 65534, 65534)
        spec = WorldSpec(
            folder=str(root / "plugin"),
            grants=((str(root / "in"), "read"), (str(root / "out"), "readwrite")),
            max_threads=64,
        )
        floors: list[float] = []
        plans: list[float] = []
        phases: dict[str, list[float]] = {"open": [], "world": [], "total": []}
        memory: list[dict[str, int]] = []
        for index in range(WARMUP + SAMPLES):
            started = time.perf_counter()
            plan = plan_base()
            planned = (time.perf_counter() - started) * 1e3
            bare = floor_sample()
            sample = world_sample(spec, plan, memory)
            if index >= WARMUP:
                floors.append(bare)
                plans.append(planned)
                for name, value in zip(phases, sample, strict=True):
                    phases[name].append(value)
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    floor = summary(floors)
    return {
        "process_rss_kb": rss,
        "floor_fork_exit": floor,
        "plan_base": summary(plans),
        **{name: summary(values) for name, values in phases.items()},
        "ratios_p50": {
            f"{name}/floor": round(summary(values)["p50_ms"] / floor["p50_ms"], 2)
            for name, values in phases.items()
        },
        "private_kb_median": {
            name: sorted(sample[name] for sample in memory)[len(memory) // 2]
            for name in ("W", "C", "G")
        },
    }


async def _template_workers(rounds: int = 30) -> dict[str, object]:
    import functools

    from autoweave_plugins.discovery import DiscoveredPlugin, check_plugin_folder
    from autoweave_plugins.forked import fork_from
    from autoweave_plugins.loader import build_spec
    from autoweave_plugins.manifest import ManifestCache
    from autoweave_plugins.process import WorkerProcess
    from autoweave_plugins.sandbox.world import WorldOptions
    from autoweave_plugins.template import Template

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "trivial"
        folder.mkdir()
        manifest = {"name": "trivial", "version": "1.0.0", "entry": "main.py",
                    "hooks": {"onTrivial": "trivial"}}  # fmt: skip
        (folder / "autoweave.plugin.json").write_text(json.dumps(manifest))
        (folder / "main.py").write_text("def trivial():\n    return None\n")
        plugin = check_plugin_folder(str(folder), ManifestCache())
        assert isinstance(plugin, DiscoveredPlugin), plugin
        templates = {
            "on": Template(world=WorldOptions()),
            "off": Template(world=WorldOptions(False)),
        }
        for template in templates.values():
            await template.start()
        found: dict[str, dict[str, list[float]]] = {
            mode: {"ready": [], "assigned": []} for mode in templates
        }
        phases: dict[str, list[float]] = {"open": [], "base": [], "world": []}
        try:
            for index in range(WARMUP + rounds):
                for mode, template in templates.items():
                    started = time.perf_counter()
                    worker = await WorkerProcess.start(functools.partial(fork_from, template))
                    ready = time.perf_counter()
                    info = await worker.assign(build_spec(plugin))
                    assigned = time.perf_counter()
                    await worker.stop()
                    if index < WARMUP:
                        continue
                    found[mode]["ready"].append((ready - started) * 1e3)
                    found[mode]["assigned"].append((assigned - started) * 1e3)
                    if mode == "on":
                        timings = info["sandbox"]["world"]["timings_ms"]
                        for name, values in phases.items():
                            values.append(timings[name])
        finally:
            for template in templates.values():
                await template.close()
    result: dict[str, object] = {
        mode: {name: summary(values) for name, values in runs.items()}
        for mode, runs in found.items()
    }
    result["world_phases_in_the_worker"] = {name: summary(v) for name, v in phases.items()}
    result["added_p50_ms"] = {
        name: round(summary(found["on"][name])["p50_ms"] - summary(found["off"][name])["p50_ms"], 3)
        for name in ("ready", "assigned")
    }
    return result


def main() -> None:
    import asyncio

    if "--early" in sys.argv:  # a fresh interpreter with the namespace layer only
        json.dump(measure(), sys.stdout)
        return
    command = [sys.executable, "-I", str(Path(__file__).resolve()), "--early"]
    done = subprocess.run(command, capture_output=True, check=True, env={})
    import autoweave_plugins.worker.runtime  # noqa: F401  (the size of a blank worker)
    from autoweave_plugins.sandbox import seccomp  # noqa: F401

    emit(
        "namespace_bench",
        {
            "samples": SAMPLES,
            "host": "root" if os.geteuid() == 0 else "unprivileged",
            "goal": "open + world <= 3 ms",
            "blank_worker": measure(),
            "early": json.loads(done.stdout),
            "template_workers": asyncio.run(_template_workers()),
        },
    )


if __name__ == "__main__":
    main()
