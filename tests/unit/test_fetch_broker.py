"""The fetch broker on its own: pinning, private ranges, redirects, limits. Local server only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from autoweave_plugins.broker.fetch import FetchBroker, FetchLimits
from autoweave_plugins.errors import FetchError, PermissionDenied
from autoweave_plugins.permissions.urls import OutboundPolicy
from tests.helpers.httpserver import local_server


class Resolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers[host]


def request(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, "method": "GET", "headers": {}, "body": None, "timeout": 5, **extra}


async def test_named_ip_pattern_reaches_loopback_and_redirects_are_rechecked() -> None:
    async with local_server() as server, httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{server.port}"
        broker = FetchBroker(OutboundPolicy([f"{base}/allowed/*"]), http)
        ok = await broker.fetch(request(f"{base}/allowed/a"))
        assert ok["status"] == 200
        followed = await broker.fetch(request(f"{base}/allowed/redirect-to/allowed/b"))
        assert followed["url"].endswith("/allowed/b")
        with pytest.raises(PermissionDenied, match="matches none"):
            await broker.fetch(request(f"{base}/allowed/redirect-abs/x"))
        assert server.paths() == [
            "/allowed/a",
            "/allowed/redirect-to/allowed/b",
            "/allowed/b",
            "/allowed/redirect-abs/x",
        ]


async def test_names_resolving_to_private_addresses_are_refused() -> None:
    async with httpx.AsyncClient() as http:
        resolver = Resolver({"api.example.com": ["10.1.2.3", "192.168.1.1", "fe80::1"]})
        broker = FetchBroker(OutboundPolicy(["https://api.example.com/*"]), http, resolver=resolver)
        with pytest.raises(PermissionDenied, match="private, loopback and link-local"):
            await broker.fetch(request("https://api.example.com/x"))


async def test_connection_is_pinned_to_the_single_resolution() -> None:
    async with local_server() as server, httpx.AsyncClient() as http:
        resolver = Resolver({"localhost": ["127.0.0.1"]})
        broker = FetchBroker(
            OutboundPolicy([f"http://localhost:{server.port}/*"]), http, resolver=resolver
        )
        response = await broker.fetch(request(f"http://localhost:{server.port}/allowed/pinned"))
        assert response["status"] == 200
        assert resolver.calls == ["localhost"]  # resolved once, connected to that address
        assert server.seen[0].headers["host"] == f"localhost:{server.port}"  # the name, not the IP


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"method": "TRACE"}, "method"),
        ({"headers": {"Host": "evil"}}, "set by the host"),
        ({"headers": {"X": "a\r\nInjected: 1"}}, "CR, LF"),
        ({"body": "text, not bytes"}, "body must be bytes"),
        ({"timeout": -1}, "timeout"),
        ({"url": 42}, "url must be a string"),
    ],
)
async def test_malformed_requests_are_refused(payload: dict[str, Any], message: str) -> None:
    async with httpx.AsyncClient() as http:
        broker = FetchBroker(OutboundPolicy(["https://api.example.com/*"]), http)
        with pytest.raises(FetchError, match=message):
            await broker.fetch({**request("https://api.example.com/x"), **payload})


async def test_response_size_is_capped() -> None:
    async with local_server() as server, httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{server.port}"
        broker = FetchBroker(
            OutboundPolicy([f"{base}/allowed/*"]), http, FetchLimits(max_response_bytes=1 << 20)
        )
        with pytest.raises(FetchError, match="larger than"):
            await broker.fetch(request(f"{base}/allowed/big"))


async def test_redirect_loops_are_bounded() -> None:
    async with local_server() as server, httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{server.port}"
        broker = FetchBroker(
            OutboundPolicy([f"{base}/allowed/*"]), http, FetchLimits(max_redirects=2)
        )
        loop = "/allowed/redirect-to" * 4 + "/allowed/end"
        with pytest.raises(FetchError, match="more than 2 redirects"):
            await broker.fetch(request(f"{base}{loop}"))


async def test_compressed_bodies_are_decoded_for_the_plugin() -> None:
    async with local_server() as server, httpx.AsyncClient() as http:
        broker = FetchBroker(OutboundPolicy([f"http://127.0.0.1:{server.port}/allowed/*"]), http)
        response = await broker.fetch(request(f"http://127.0.0.1:{server.port}/allowed/gzip"))
        assert response["body"] == b'{"zipped": true}'
        assert "content-encoding" not in {k.lower() for k in response["headers"]}


async def test_credentials_do_not_follow_a_cross_origin_redirect() -> None:
    async with local_server() as first, local_server() as second, httpx.AsyncClient() as http:
        patterns = [
            f"http://127.0.0.1:{first.port}/allowed/*",
            f"http://127.0.0.1:{second.port}/allowed/*",
        ]
        broker = FetchBroker(OutboundPolicy(patterns), http)
        secret = {"Authorization": "Bearer SECRET", "Cookie": "session=1", "X-Trace": "keep"}
        await broker.fetch(
            request(f"http://127.0.0.1:{first.port}/allowed/to-port/{second.port}", headers=secret)
        )
        assert first.seen[0].headers["authorization"] == "Bearer SECRET"
        landed = second.seen[0].headers
        assert (
            "authorization" not in landed and "cookie" not in landed and landed["x-trace"] == "keep"
        )


async def test_only_encodings_the_host_can_bound_are_asked_for() -> None:
    # What httpx's own default becomes once the brotli and zstandard packages are installed.
    wide = {"Accept-Encoding": "gzip, deflate, br, zstd"}
    async with local_server() as server, httpx.AsyncClient(headers=wide) as http:
        base = f"http://127.0.0.1:{server.port}"
        broker = FetchBroker(OutboundPolicy([f"{base}/allowed/*"]), http)
        await broker.fetch(request(f"{base}/allowed/a"))
        await broker.fetch(request(f"{base}/allowed/b", headers={"Accept-Encoding": "identity"}))
        assert [s.headers["accept-encoding"] for s in server.seen] == ["gzip, deflate", "identity"]


async def test_a_plugins_bodies_in_flight_share_one_budget() -> None:
    async with local_server() as server, httpx.AsyncClient() as http:
        base = f"http://127.0.0.1:{server.port}"
        limits = FetchLimits(max_buffered_bytes=1 << 20)
        broker = FetchBroker(OutboundPolicy([f"{base}/allowed/*"]), http, limits)
        with pytest.raises(FetchError, match="hold more than 1048576 bytes together"):
            await broker.fetch(request(f"{base}/allowed/big"))
        assert broker._buffered == 0  # a failed read gives its share back
        assert (await broker.fetch(request(f"{base}/allowed/gzip")))["status"] == 200
        assert broker._buffered == 0


async def test_each_permitted_address_is_tried_until_one_accepts() -> None:
    async with local_server() as server, httpx.AsyncClient() as http:
        # c-ares answers localhost with ::1 first; this server listens on 127.0.0.1 only.
        resolver = Resolver({"localhost": ["::1", "127.0.0.1"]})
        broker = FetchBroker(
            OutboundPolicy([f"http://localhost:{server.port}/*"]), http, resolver=resolver
        )
        response = await broker.fetch(request(f"http://localhost:{server.port}/allowed/x"))
        assert response["status"] == 200 and len(server.seen) == 1
    closed = local_server()
    async with closed as gone:
        port = gone.port
    async with httpx.AsyncClient() as http:
        broker = FetchBroker(
            OutboundPolicy([f"http://localhost:{port}/*"]),
            http,
            resolver=Resolver({"localhost": ["::1", "127.0.0.1"]}),
        )
        with pytest.raises(FetchError, match=r"cannot connect \(\[::1\]: .*; 127\.0\.0\.1: "):
            await broker.fetch(request(f"http://localhost:{port}/allowed/x"))
