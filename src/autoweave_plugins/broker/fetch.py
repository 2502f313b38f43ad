"""Outbound HTTP on behalf of plugins, checked against their URL patterns (DESIGN §4).

For each hop: canonicalise and match the URL; resolve the name once (``resolve``: c-ares,
a few lookups in flight per plugin); keep only addresses the matching pattern permits (public
ones, or the private IP the pattern names); connect to one of those exact addresses with the
original Host header and TLS server name, so a DNS answer that changes between check and
connect cannot redirect the request. Redirects are not followed by httpx: each Location is
matched and resolved again as a new hop.

Everything a response's sender chooses is bounded: the body is read raw and decoded here
(``decode``) in steps of at most ``DECODE_STEP`` bytes, counted against the response cap and
against the plugin's total in flight, with the loop yielded between steps; total time is
capped. Errors reach the plugin as PermissionDenied (refused) or FetchError (failed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from autoweave_plugins.broker.decode import ACCEPT_ENCODING, BoundedDecoder, content_codings
from autoweave_plugins.broker.resolve import LookupLimiter, Resolve, shared_resolver
from autoweave_plugins.errors import FetchError, PermissionDenied
from autoweave_plugins.permissions.urls import CanonicalURL, OutboundPolicy, URLPattern

__all__ = ["FetchBroker", "FetchLimits"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "connection",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "proxy-authorization",
        "te",
        "trailer",
        "keep-alive",
    }
)


DECODE_STEP = 64 << 10
"""The most a response body grows on the loop between two checks of its caps (and yields)."""

MAX_ADDRESSES = 4
"""Resolved, permitted addresses tried in turn when a connection is refused (IPv6 then IPv4)."""


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """What one plugin's outbound HTTP may cost the host. Durations are in seconds."""

    max_redirects: int = 5
    """Redirect hops followed (each re-checked) before the fetch fails."""
    max_response_bytes: int = 10 << 20
    """Largest response body, counted after decoding gzip or deflate."""
    max_request_bytes: int = 10 << 20
    """Largest request body a plugin may send."""
    default_timeout: float = 10.0
    """Time for a whole fetch (every hop, lookup and body) when the plugin gives none."""
    max_timeout: float = 60.0
    """Longest time a plugin may ask for."""
    max_headers: int = 64
    """Request headers a plugin may set."""
    max_buffered_bytes: int = 32 << 20
    """All of one plugin's response bodies being read at once, together, after decoding."""
    max_lookups_in_flight: int = 4
    """DNS lookups one plugin may have unfinished at once; more wait for a free slot."""
    dns_timeout: float = 2.0
    """Seconds each nameserver gets to answer one try of a lookup."""
    dns_tries: int = 2
    """Tries per nameserver before a lookup fails."""
    nameservers: tuple[str, ...] = ()
    """DNS servers (``ip`` or ``ip:port``) to ask instead of /etc/resolv.conf's; empty: the system's."""


def _refuse(message: str) -> PermissionDenied:
    return PermissionDenied("network.outbound", message)


class FetchBroker:
    """One plugin's outbound HTTP.

    ``resolver`` is injectable so tests can pin DNS answers; by default the process's c-ares
    resolver for ``limits`` (its nameservers and timeouts) is shared by every plugin, each
    capped at ``limits.max_lookups_in_flight`` lookups.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        client: httpx.AsyncClient,
        limits: FetchLimits | None = None,
        resolver: Resolve | None = None,
    ) -> None:
        self.policy = policy
        self.client = client
        self.limits = limits = limits or FetchLimits()
        if resolver is None:
            resolver = shared_resolver(limits.nameservers, limits.dns_timeout, limits.dns_tries)
        self._resolve = LookupLimiter(resolver, limits.max_lookups_in_flight)
        self._buffered = 0  # decoded body bytes held by this plugin's fetches in flight

    def _check_request(
        self, payload: dict[str, Any]
    ) -> tuple[str, str, list[tuple[str, str]], bytes | None, float]:
        url, method = payload.get("url"), payload.get("method", "GET")
        if not isinstance(url, str):
            raise FetchError("url must be a string")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise FetchError(f"method {method!r} is not one of {', '.join(sorted(METHODS))}")
        raw_headers = payload.get("headers") or {}
        if not isinstance(raw_headers, dict) or len(raw_headers) > self.limits.max_headers:
            raise FetchError(
                f"headers must be a mapping of at most {self.limits.max_headers} entries"
            )
        headers = []
        for key, value in raw_headers.items():
            if (
                not isinstance(key, str)
                or not isinstance(value, str)
                or any(c in key + value for c in "\r\n\x00")
            ):
                raise FetchError(
                    f"header {key!r}: names and values must be strings without CR, LF or NUL"
                )
            if key.lower() in FORBIDDEN_HEADERS:
                raise FetchError(f"header {key!r} is set by the host and may not be given")
            headers.append((key, value))
        body = payload.get("body")
        if body is not None and (
            not isinstance(body, bytes) or len(body) > self.limits.max_request_bytes
        ):
            raise FetchError(f"body must be bytes of at most {self.limits.max_request_bytes} bytes")
        timeout = payload.get("timeout")
        if timeout is None:
            timeout = self.limits.default_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise FetchError("timeout must be a positive number of seconds")
        return url, method.upper(), headers, body, min(float(timeout), self.limits.max_timeout)

    async def _pin(self, url: CanonicalURL, pattern: URLPattern) -> list[str]:
        """The addresses to connect to, in order: resolved once, and permitted by the pattern."""
        if url.address is not None:
            candidates = [url.address]
        else:
            try:
                answers = await self._resolve(url.host, url.port)
            except OSError as exc:
                raise FetchError(f"cannot resolve {url.host}: {exc.strerror or exc}") from None
            candidates = [ipaddress.ip_address(a.split("%")[0]) for a in answers]
        permitted = [
            f"[{address}]" if address.version == 6 else str(address)
            for address in candidates
            if pattern.permits_address(address)
        ]
        if permitted:
            return permitted[:MAX_ADDRESSES]
        shown = ", ".join(map(str, candidates)) or "nothing"
        raise _refuse(
            f"{url.host} resolves to {shown}: private, loopback and link-local addresses are refused unless the pattern names the IP"
        )

    async def fetch(self, payload: dict[str, Any]) -> dict[str, Any]:
        url_text, method, headers, body, timeout = self._check_request(payload)
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + timeout):
                return await self._follow(url_text, method, headers, body, deadline)
        except TimeoutError:
            raise FetchError(f"{url_text}: no complete answer within {timeout:g} s") from None

    async def _follow(
        self,
        url_text: str,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        deadline: float,
    ) -> dict[str, Any]:
        origin: tuple[str, str, int] | None = None
        for _hop in range(self.limits.max_redirects + 1):
            decision = self.policy.match(url_text)
            if not decision.allowed or decision.url is None or decision.pattern is None:
                raise _refuse(f"{url_text}: {decision.reason}")
            url = decision.url
            if origin is not None and origin != (url.scheme, url.host, url.port):
                # Credentials are for the origin they were given to, as browsers and httpx do.
                headers = [(k, v) for k, v in headers if k.lower() not in CREDENTIAL_HEADERS]
            origin = (url.scheme, url.host, url.port)
            response = await self._connect_any(
                url, await self._pin(url, decision.pattern), method, headers, body, deadline
            )
            location = response.get("location")
            if response["status"] in REDIRECTS and location:
                url_text = urljoin(url.url, location)
                if response["status"] == 303 or (
                    response["status"] in (301, 302) and method == "POST"
                ):
                    method, body = "GET", None
                continue
            response.pop("location", None)
            return response
        raise FetchError(f"more than {self.limits.max_redirects} redirects")

    async def _connect_any(
        self,
        url: CanonicalURL,
        addresses: list[str],
        method: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        deadline: float,
    ) -> dict[str, Any]:
        """Send to the first address that accepts a connection (``localhost`` is often both
        ::1 and 127.0.0.1, and a server may listen on one). Nothing was sent to one refused."""
        failures = []
        for address in addresses:
            try:
                return await self._send(
                    url, address, method, headers, body, max(0.001, deadline - time.monotonic())
                )
            except httpx.ConnectError as exc:
                failures.append(f"{address}: {exc or type(exc).__name__}")
        raise FetchError(f"{url.url}: cannot connect ({'; '.join(failures)})")

    async def _send(
        self,
        url: CanonicalURL,
        address: str,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeout: float,
    ) -> dict[str, Any]:
        """One request to ``address``. Raises httpx.ConnectError if it refused the connection."""
        port = "" if url.port == {"http": 80, "https": 443}[url.scheme] else f":{url.port}"
        target = f"{url.scheme}://{address}:{url.port}{url.target}"
        if not any(k.lower() == "accept-encoding" for k, _ in headers):
            # Only what ``decode`` can inflate with a bound (httpx would add br and zstd when
            # their packages happen to be installed).
            headers = [*headers, ("Accept-Encoding", ACCEPT_ENCODING)]
        request = self.client.build_request(
            method,
            target,
            headers=[("Host", f"{url.host}{port}"), *headers],
            content=body,
            extensions={
                "sni_hostname": url.host,
                "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout},
            },
        )
        try:
            response = await asyncio.wait_for(self.client.send(request, stream=True), timeout)
            try:
                decoder = BoundedDecoder(
                    content_codings(response.headers.get_list("content-encoding")), DECODE_STEP
                )
                content = await self._read_body(response, decoder)
            finally:
                await response.aclose()
        except TimeoutError:
            raise FetchError(f"{url.url}: timed out after {timeout:.3g} s") from None
        except httpx.ConnectError:
            raise
        except httpx.HTTPError as exc:
            raise FetchError(f"{url.url}: {type(exc).__name__}: {exc}") from None
        except FetchError as exc:
            raise FetchError(f"{url.url}: {exc}") from None
        return {
            "status": response.status_code,
            "headers": {
                k: v
                for k, v in response.headers.items()
                if k.lower() not in ("set-cookie", "content-encoding", "content-length")
            },
            "body": content,
            "url": url.url,
            "location": response.headers.get("location"),
        }

    async def _read_body(self, response: httpx.Response, decoder: BoundedDecoder) -> bytes:
        """The decoded body, grown at most ``DECODE_STEP`` bytes between checks and yields."""
        limit, total = self.limits.max_response_bytes, self.limits.max_buffered_bytes
        pieces: list[bytes] = []
        held = 0

        def keep(piece: bytes) -> None:
            nonlocal held
            held += len(piece)
            self._buffered += len(piece)
            if held > limit:
                decoded = (
                    "" if decoder.coding == "identity" else f" once {decoder.coding} is decoded"
                )
                raise FetchError(f"response larger than {limit} bytes{decoded}")
            if self._buffered > total:
                raise FetchError(
                    f"this plugin's responses being read hold more than {total} bytes together; "
                    "fetch less at once"
                )
            pieces.append(piece)

        try:
            async for raw in response.aiter_raw():
                for piece in decoder.feed(raw):
                    keep(piece)
                    await asyncio.sleep(0)  # inflating is CPU work: let the loop breathe
            for piece in decoder.finish():
                keep(piece)
                await asyncio.sleep(0)
            return b"".join(pieces)
        finally:
            self._buffered -= held
