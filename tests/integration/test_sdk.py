"""A benign plugin doing legitimate work under each permission type, in a real worker."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers.httpserver import local_server
from tests.helpers.workers import running, write_plugin
from tests.worlds import write_grant

CODE = """
import json
import autoweave

async def files(base):
    await autoweave.write_file(base + "/out/report.txt", "line 1\\n")
    await autoweave.write_file(base + "/out/report.txt", "line 2\\n", append=True)
    config = json.loads(await autoweave.read_file(base + "/in/config.json"))
    raw = await autoweave.read_file(base + "/in/config.json", encoding=None)
    return {"config": config, "raw_is_bytes": isinstance(raw, bytes), "listing": await autoweave.list_dir(base + "/in")}

async def denied(path):
    try:
        await autoweave.read_file(path)
    except autoweave.PermissionDenied as exc:
        return str(exc)
    return "read succeeded"

async def get(url):
    response = await autoweave.fetch(url, method="POST", headers={"X-Test": "1"}, body="hello")
    return {"status": response.status, "ok": response.ok, "json": response.json()}

def count(n):
    for i in range(n):
        autoweave.metric("jobs.done", 1, kind="test")
    autoweave.log.info("counted %d", n)
    return n

def about():
    return {"name": autoweave.manifest["name"], "config": dict(autoweave.config)}
"""
HOOKS = {
    "onFiles": "files",
    "onDenied": "denied",
    "onGet": "get",
    "onCount": "count",
    "onAbout": "about",
}


async def test_read_write_list_under_declared_paths(tmp_path: Path) -> None:
    (tmp_path / "data" / "in").mkdir(parents=True)
    write_grant(tmp_path / "data" / "out")
    (tmp_path / "data" / "in" / "config.json").write_text('{"threshold": 3}')
    base = str(tmp_path / "data")
    fs = [{"path": f"{base}/in", "mode": "read"}, {"path": f"{base}/out", "mode": "write"}]
    plugin = write_plugin(
        tmp_path / "plugins", "files", CODE, hooks=HOOKS, permissions={"filesystem": fs}
    )
    async with running(plugin) as worker:
        result = await worker.call("onFiles", base)
        assert result == {
            "config": {"threshold": 3},
            "raw_is_bytes": True,
            "listing": ["config.json"],
        }
        assert (tmp_path / "data" / "out" / "report.txt").read_text() == "line 1\nline 2\n"
        # write-only: reading it back is refused with a reason
        message = await worker.call("onDenied", f"{base}/out/report.txt")
        assert "read is not granted" in message
        assert "no filesystem permission" in await worker.call(
            "onDenied", str(tmp_path / "elsewhere")
        )


async def test_fetch_through_the_broker(tmp_path: Path) -> None:
    async with local_server() as server, httpx.AsyncClient() as http:
        pattern = f"http://127.0.0.1:{server.port}/allowed/*"
        plugin = write_plugin(
            tmp_path / "plugins",
            "fetcher",
            CODE,
            hooks=HOOKS,
            permissions={"network": {"outbound": [pattern]}},
        )
        async with running(plugin, http=http) as worker:
            result = await worker.call("onGet", f"http://127.0.0.1:{server.port}/allowed/echo")
        assert result["status"] == 200 and result["ok"]
        assert result["json"] == {
            "method": "POST",
            "path": "/allowed/echo",
            "host": f"127.0.0.1:{server.port}",
            "body": "hello",
        }
        assert server.seen[0].headers["x-test"] == "1"


async def test_metrics_logs_manifest_and_config(tmp_path: Path) -> None:
    plugin = write_plugin(tmp_path / "plugins", "counter", CODE, hooks=HOOKS)
    async with running(plugin, config={"mode": "fast"}) as worker:
        assert await worker.call("onCount", 5) == 5
        assert await worker.call("onAbout") == {"name": "counter", "config": {"mode": "fast"}}
        await (
            worker.ping()
        )  # the metric frames were sent before the reply; the ping orders us after them
        [series] = worker.metrics.snapshot()["series"]
        assert series == {
            "name": "jobs.done",
            "labels": {"kind": "test"},
            "last": 1.0,
            "total": 5.0,
            "count": 5,
        }
