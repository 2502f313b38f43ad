"""DNS starvation, as one host sees it: a plugin's lookups hang while a sibling fetches.

A nameserver on loopback that never answers (it only counts the queries it receives) stands in
for a hostile domain's servers. The attacker plugin may fetch ``http://hang.example.org/*``
and fires 16 fetches there at once; the control plugin may fetch its own ``localhost`` URL on
a server the scenario runs. Once the attacker's queries have reached the silent server, the
control fetches and the host times it. Everything measured is outside the plugins.

Run in-process with the resolver pointed at the silent server (``FetchLimits.nameservers``),
or as ``python -m tests.security._dns_scenario ADDRESS ROOT`` inside a mount namespace whose
/etc/resolv.conf names ADDRESS, to test the host's default, system-configured resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from autoweave_plugins.broker.fetch import FetchLimits
from autoweave_plugins.loader import build_spec
from autoweave_plugins.process import WorkerProcess
from tests.helpers.httpserver import local_server
from tests.helpers.workers import start_worker, write_plugin

FLOOD = 16
ATTACK_TIMEOUT = 8.0
CONTROL_TIMEOUT = 3.0

FETCH_CODE = """
import asyncio
import autoweave


async def one(url, timeout):
    try:
        response = await autoweave.fetch(url, timeout=timeout)
    except (autoweave.FetchError, autoweave.PermissionDenied) as exc:
        return {"outcome": type(exc).__name__, "detail": str(exc)[:300]}
    return {"outcome": "fetched", "status": response.status, "body": response.body.decode()}


async def flood(url, count, timeout):
    return await asyncio.gather(*(one(url, timeout) for _ in range(count)))
"""


class SilentDNS(asyncio.DatagramProtocol):
    """A UDP 'nameserver' that never answers; ``seen`` is set once ``enough`` queries came."""

    def __init__(self, enough: int) -> None:
        self.queries = 0
        self.enough = enough
        self.seen = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queries += 1
        if self.queries >= self.enough:
            self.seen.set()


@contextlib.asynccontextmanager
async def silent_dns(
    address: str, port: int, enough: int = 4
) -> AsyncIterator[tuple[SilentDNS, int]]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: SilentDNS(enough), local_addr=(address, port)
    )
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@dataclass
class Outcome:
    """What the host saw: the control's answer and latency, and the attack still hanging."""

    control: dict[str, Any] = field(default_factory=dict)
    control_seconds: float = 0.0
    attack_pending: bool = False
    queries: int = 0


@contextlib.asynccontextmanager
async def _worker(
    root: Path, name: str, outbound: str, http: httpx.AsyncClient, limits: FetchLimits
) -> AsyncIterator[WorkerProcess]:
    plugin = write_plugin(
        root,
        name,
        FETCH_CODE,
        hooks={"onFlood": "flood"},
        permissions={"network": {"outbound": [outbound]}},
    )
    worker = await start_worker()
    try:
        await worker.assign(build_spec(plugin), timeout=15.0, http=http, fetch_limits=limits)
        yield worker
    finally:
        await worker.stop()


async def starve(dns: SilentDNS, limits: FetchLimits, root: Path) -> Outcome:
    """Run the attack against a host whose resolver asks ``dns``; return what the host saw."""
    outcome = Outcome()
    async with (
        local_server() as server,
        httpx.AsyncClient(trust_env=False) as http,
        _worker(root, "dns-attacker", "http://hang.example.org/*", http, limits) as attacker,
        _worker(
            root, "dns-control", f"http://localhost:{server.port}/allowed/*", http, limits
        ) as control,
    ):
        attack = asyncio.ensure_future(
            attacker.call(
                "onFlood", "http://hang.example.org/x", FLOOD, ATTACK_TIMEOUT, timeout=30.0
            )
        )
        try:
            await asyncio.wait_for(dns.seen.wait(), 10.0)  # the attacker's lookups are out
            started = time.perf_counter()
            [outcome.control] = await control.call(
                "onFlood",
                f"http://localhost:{server.port}/allowed/control",
                1,
                CONTROL_TIMEOUT,
                timeout=CONTROL_TIMEOUT + 5.0,
            )
            outcome.control_seconds = time.perf_counter() - started
            outcome.attack_pending = not attack.done()
            outcome.queries = dns.queries
        finally:
            attack.cancel()
            with contextlib.suppress(BaseException):
                await attack
    return outcome


async def _main(address: str, root: Path) -> None:
    async with silent_dns(address, 53) as (dns, _port):
        outcome = await starve(dns, FetchLimits(), root)
    print(json.dumps(asdict(outcome)))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(dir=sys.argv[2]) as scratch:
        asyncio.run(_main(sys.argv[1], Path(scratch)))
