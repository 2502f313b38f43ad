"""Outbound HTTP on behalf of plugins, checked against their URL patterns (DESIGN §4).

For each hop: canonicalise and match the URL; resolve the name once; keep only addresses the
matching pattern permits (public ones, or the private IP the pattern names); connect to that
exact address with the original Host header and TLS server name, so a DNS answer that changes
between check and connect cannot redirect the request. Redirects are not followed by httpx:
each Location is matched and resolved again as a new hop. Response size and total time are
capped. Errors reach the plugin as PermissionDenied (refused) or FetchError (failed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

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


@dataclass(frozen=True, slots=True)
class FetchLimits:
    max_redirects: int = 5
    max_response_bytes: int = 10 << 20
    max_request_bytes: int = 10 << 20
    default_timeout: float = 10.0
    max_timeout: float = 60.0
    max_headers: int = 64


def _refuse(message: str) -> PermissionDenied:
    return PermissionDenied("network.outbound", message)


class FetchBroker:
    """One plugin's outbound HTTP. ``resolver`` is injectable so tests can pin DNS answers."""

    def __init__(
        self,
        policy: OutboundPolicy,
        client: httpx.AsyncClient,
        limits: FetchLimits | None = None,
        resolver: Any = None,
    ) -> None:
        self.policy = policy
        self.client = client
        self.limits = limits or FetchLimits()
        self._resolve = resolver or self._system_resolve

    @staticmethod
    async def _system_resolve(host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos]

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

    async def _pin(self, url: CanonicalURL, pattern: URLPattern) -> str:
        """The address to connect to: resolved once, and permitted by the pattern."""
        if url.address is not None:
            candidates = [url.address]
        else:
            try:
                answers = await self._resolve(url.host, url.port)
            except OSError as exc:
                raise FetchError(f"cannot resolve {url.host}: {exc}") from None
            candidates = [ipaddress.ip_address(a.split("%")[0]) for a in answers]
        for address in candidates:
            if pattern.permits_address(address):
                return f"[{address}]" if address.version == 6 else str(address)
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
            address = await self._pin(url, decision.pattern)
            response = await self._send(
                url, address, method, headers, body, max(0.001, deadline - time.monotonic())
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

    async def _send(
        self,
        url: CanonicalURL,
        address: str,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        timeout: float,
    ) -> dict[str, Any]:
        port = "" if url.port == {"http": 80, "https": 443}[url.scheme] else f":{url.port}"
        target = f"{url.scheme}://{address}:{url.port}{url.target}"
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
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():  # decoded: gzip is not the plugin's job
                    size += len(chunk)
                    if size > self.limits.max_response_bytes:
                        raise FetchError(
                            f"response larger than {self.limits.max_response_bytes} bytes"
                        )
                    chunks.append(chunk)
            finally:
                await response.aclose()
        except TimeoutError:
            raise FetchError(f"{url.url}: timed out after {timeout:.3g} s") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{url.url}: {type(exc).__name__}: {exc}") from None
        return {
            "status": response.status_code,
            "headers": {
                k: v
                for k, v in response.headers.items()
                if k.lower() not in ("set-cookie", "content-encoding", "content-length")
            },
            "body": b"".join(chunks),
            "url": url.url,
            "location": response.headers.get("location"),
        }
