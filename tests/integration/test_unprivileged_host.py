"""A host that is not root: its workers still get every namespace, through a user namespace.

The host runs as uid 65534 with no capability (``tests.worlds.as_unprivileged``), as an
application embedding the manager would on an ordinary account. Its workers, spawned or forked
from the template, must then create their user namespace first (mapping 0 to the host's uid,
the only mapping allowed without privilege) and build their world inside it. Evidence from
the host's side: the plugin process's namespaces differ from the host's, its network holds
only ``lo``, and what it writes in its grant is the host user's file.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from tests.worlds import NOBODY, as_unprivileged, shared_dir

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0,
    reason="runs a host as another uid: needs root to set it up",
)

HOST = """
import asyncio, json, os, sys
from autoweave_plugins import PluginManager

async def main():
    root, method = sys.argv[1], sys.argv[2]
    pool = {"min_workers": 0, "start_method": method}
    async with PluginManager(root + "/plugins", worker_pool=pool) as m:
        seen = await m.call("looker", "onLook", root + sys.argv[3])
        worker = m.records["looker"].assignments[0].worker
        print(json.dumps({"seen": seen, "pid": worker.plugin_pid, "host": os.getpid(),
                          "method": worker.method}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

asyncio.run(main())
"""
GRANT = "/data/autoweave-plugins/looker/out"  # under the host user's data root: made by the host
LOOKER = """
import os, socket
def look(grant):
    with open(os.path.join(grant, "written.txt"), "w") as out:
        out.write("from the worker")
    return {"pid": os.getpid(), "host": socket.gethostname(), "uid": os.getuid()}
"""


def _layout(root: Path) -> None:
    folder = root / "plugins" / "looker"
    folder.mkdir(parents=True)
    grant = str(root) + GRANT
    doc = {
        "name": "looker",
        "version": "1.0.0",
        "entry": "main.py",
        "hooks": {"onLook": "look"},
        "permissions": {"filesystem": [{"path": grant, "mode": "readwrite"}]},
    }
    (folder / "autoweave.plugin.json").write_text(json.dumps(doc))
    (folder / "main.py").write_text(LOOKER)
    for path in (root, root / "plugins", folder):
        os.chown(path, NOBODY, NOBODY)
    os.chown(folder / "main.py", NOBODY, NOBODY)


@pytest.mark.parametrize("method", ["template", "spawn"])
async def test_an_unprivileged_hosts_workers_get_their_world(method: str) -> None:
    with shared_dir() as root, as_unprivileged() as prefix:
        _layout(root)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "XDG_DATA_HOME": str(root / "data"),  # the host user's data root
            "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
        }
        host = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-c", HOST, str(root), method, GRANT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert host.stdout is not None and host.stdin is not None
        line = await asyncio.wait_for(host.stdout.readline(), 60)
        if not line:
            _, err = await host.communicate()
            pytest.fail(err.decode()[-3000:])
        found = json.loads(line)
        pid, host_pid = found["pid"], found["host"]
        # Read by this (root) process while the worker runs: the host cannot, as the worker
        # is not dumpable.
        for name in ("user", "pid", "net", "ipc", "mnt", "uts"):
            assert os.readlink(f"/proc/{pid}/ns/{name}") != os.readlink(
                f"/proc/{host_pid}/ns/{name}"
            ), name
        devices = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
        assert [line.split(":")[0].strip() for line in devices] == ["lo"]
        host.stdin.write(b"done\n")
        _, err = await asyncio.wait_for(host.communicate(), 30)
        assert host.returncode == 0, err.decode()[-3000:]
        assert found["method"] == method
        # Spawned, pid 1 is the holder; a template's worker is pid 1 itself.
        assert found["seen"]["pid"] == (2 if method == "spawn" else 1)
        assert found["seen"]["host"] == "autoweave"
        written = Path(str(root) + GRANT) / "written.txt"
        assert written.read_text() == "from the worker"
        assert written.stat().st_uid == NOBODY  # the host user's file, as the worker is
