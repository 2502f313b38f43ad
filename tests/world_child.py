"""A process that enters a world as a worker does, then runs a test's "plugin part".

Run: ``python -I tests/world_child.py CONFIG_JSON``. It calls ``open_namespaces`` at start and
``enter_world`` as if just assigned, exactly the calls a worker makes, then executes the
config's ``code`` with ``report``, ``result`` (a dict to fill), ``emit`` (print one JSON event
now) and ``config`` in scope. Every line on stdout is one JSON event; the last one is
``{"report": ..., "result": ...}`` or ``{"error": ..., "message": ...}`` (exit status 3).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> int:
    config = json.loads(sys.argv[1])
    from autoweave_plugins.sandbox import kernel

    parent = config.get("die_with_parent")
    if parent:  # as the real worker does first: the kernel kills it with its host
        kernel.set_pdeathsig()
        if os.getppid() != parent:
            return 0
    from autoweave_plugins.errors import AutoweaveError
    from autoweave_plugins.sandbox.namespaces import enter_world, open_namespaces
    from autoweave_plugins.sandbox.world import BaseSpec, WorldSpec, plan_base

    base = BaseSpec(disabled=frozenset(config.get("disabled", ())), **config.get("base", {}))
    world = dict(config["world"])
    world["grants"] = tuple((path, mode) for path, mode in world.get("grants", ()))
    world["extra_read"] = tuple(world.get("extra_read", ()))
    if config.get("thread_first"):  # a library that started a thread at import, say
        import threading
        import time

        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    try:
        namespaces = open_namespaces(plan_base(base))
        if config.get("announce"):
            emit({"started": os.getpid()})
            sys.stdin.readline()  # the test looks at the world's processes, then assigns
        report = enter_world(WorldSpec(**world), namespaces)
    except AutoweaveError as exc:
        emit({"error": type(exc).__name__, "message": str(exc)})
        return 3
    result: dict[str, Any] = {}
    scope = {"report": report, "result": result, "emit": emit, "config": config}
    exec(compile(config.get("code", ""), "<plugin>", "exec"), scope)
    emit({"report": report.to_dict(), "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
