"""Attack class 12: brokered fetch to refused URLs, through redirects, with userinfo.

The manifest grants exactly ``http://127.0.0.1:{port}/allowed/*`` on a server the test runs.
That server records every request target it receives, so "refused" is judged by what the
server saw (nothing under /secret, often nothing at all), not only by the plugin's report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from autoweave_plugins.process import WorkerProcess
from tests.helpers.workers import running, write_plugin
from tests.security._support import (
    CALL_TIMEOUT,
    LOAD_TIMEOUT,
    HTTPRecorder,
    assert_responsive,
    http_recorder,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

FETCH_CODE = """
import autoweave


async def fetch(url):
    try:
        response = await autoweave.fetch(url, timeout=5)
    except autoweave.PermissionDenied as exc:
        return {"outcome": "denied", "detail": str(exc)[:500]}
    except autoweave.FetchError as exc:
        return {"outcome": "failed", "detail": str(exc)[:500]}
    except BaseException as exc:
        return {"outcome": "error", "type": type(exc).__name__, "detail": str(exc)[:500]}
    return {"outcome": "fetched", "status": response.status, "body": response.body, "url": response.url}
"""


@dataclass
class Fetcher:
    worker: WorkerProcess
    server: HTTPRecorder

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def fetch(self, url: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.worker.call("onFetch", url, timeout=CALL_TIMEOUT)
        return result


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def _module_fetcher(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fetcher]:
    """One recording server and one fetching worker for the module (spawning is the cost)."""
    async with http_recorder() as server:
        plugin = write_plugin(
            tmp_path_factory.mktemp("plugins"),
            "fetch-attacker",
            FETCH_CODE,
            hooks={"onFetch": "fetch"},
            permissions={"network": {"outbound": [f"http://127.0.0.1:{server.port}/allowed/*"]}},
        )
        async with (
            httpx.AsyncClient(trust_env=False, timeout=5) as client,
            running(plugin, http=client, load_timeout=LOAD_TIMEOUT) as worker,
        ):
            yield Fetcher(worker, server)


@pytest.fixture
def fetcher(_module_fetcher: Fetcher) -> Fetcher:
    """The module's fetcher with a clean slate: no recorded requests, no redirects."""
    assert _module_fetcher.worker.alive, _module_fetcher.worker.exit_reason
    _module_fetcher.server.targets.clear()
    _module_fetcher.server.redirects.clear()
    return _module_fetcher


async def test_allowed_fetch_works(fetcher: Fetcher, sibling: WorkerProcess) -> None:
    """Benign control: the pattern, the server and the broker really work together."""
    result = await fetcher.fetch(f"{fetcher.base}/allowed/x")
    assert result["outcome"] == "fetched", result
    assert result["status"] == 200 and result["body"] == b"allowed:/allowed/x"
    assert fetcher.server.targets == ["/allowed/x"]
    await assert_responsive(sibling)


@pytest.mark.parametrize(
    "url",
    [
        "{base}/secret/x",
        "{base}/allowed/../secret/x",
        "{base}/allowed/%2e%2e/secret/x",
        "{base}/allowed/%2E%2E/%2e%2e/secret/x",
        "http://user:pw@127.0.0.1:{port}/allowed/x",
        "http://user@127.0.0.1:{port}/allowed/x",
        "http://localhost:{port}/allowed/x",
        "http://127.0.0.1.nip.io:{port}/allowed/x",
        "http://[::ffff:127.0.0.1]:{port}/allowed/x",
        "http://2130706433:{port}/secret/x",
        "https://127.0.0.1:{port}/allowed/x",
        "http://127.0.0.1:{port}/allowed\\..\\secret\\x",
        "http://127.0.0.1:{port}/allowed/x\r\nHost: evil",
        "http://127.0.0.1:{other}/allowed/x",
        "file:///etc/passwd",
    ],
)
async def test_refused_urls_never_reach_the_server(fetcher: Fetcher, url: str) -> None:
    port = fetcher.server.port
    other = port + 1 if port < 65535 else port - 1
    target = url.format(base=fetcher.base, port=port, other=other)
    result = await fetcher.fetch(target)
    assert result["outcome"] == "denied", result
    # Evidence at the server: no request at all reached it.
    assert fetcher.server.targets == [], fetcher.server.targets
    assert fetcher.server.secret_body not in repr(result).encode()


@pytest.mark.parametrize(
    "location",
    [
        "{base}/secret/x",
        "/secret/relative",
        "../../secret/dots",
        "{base}/allowed/../secret/z",
        "http://user:pw@127.0.0.1:{port}/allowed/x",
        "http://localhost:{port}/allowed/x",
        "//localhost:{port}/allowed/x",
    ],
)
async def test_redirects_are_checked_again(fetcher: Fetcher, location: str) -> None:
    port = fetcher.server.port
    fetcher.server.redirects["/allowed/redirect"] = location.format(base=fetcher.base, port=port)
    result = await fetcher.fetch(f"{fetcher.base}/allowed/redirect")
    assert result["outcome"] == "denied", result
    # Evidence at the server: only the first, allowed hop arrived; /secret was never hit.
    assert fetcher.server.targets == ["/allowed/redirect"], fetcher.server.targets
    assert fetcher.server.hits("secret") == []
    assert fetcher.server.secret_body not in repr(result).encode()


async def test_allowed_redirect_is_followed(fetcher: Fetcher) -> None:
    """Control for the redirect tests: an allowed Location is followed (re-checked, not blocked)."""
    fetcher.server.redirects["/allowed/redirect"] = "/allowed/landed"
    result = await fetcher.fetch(f"{fetcher.base}/allowed/redirect")
    assert result["outcome"] == "fetched", result
    assert result["body"] == b"allowed:/allowed/landed"
    assert fetcher.server.targets == ["/allowed/redirect", "/allowed/landed"]
