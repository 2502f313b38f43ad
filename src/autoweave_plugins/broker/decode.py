"""Content-Encoding for the fetch broker, decoded with a bound on every step.

Why not httpx's decoders: they inflate a whole network chunk in one call, so a few KiB on the
wire can become gigabytes on the host before any size cap is looked at (gzip inside gzip:
1,827 bytes gave 2 GiB and a 6 s loop stall). Here every decompress call produces at most
``step`` bytes, so the caller can count, refuse and yield to the loop between steps.

Only what zlib can bound is accepted: ``gzip`` (and its alias ``x-gzip``) and ``deflate``,
one layer at most. A second layer has no honest use and multiplies the ratio, so stacked
encodings are refused, as are encodings the host does not decode (``br``, ``zstd``, ...); the
broker only advertises gzip and deflate, so an honest server does not send them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from autoweave_plugins.errors import FetchError

__all__ = ["ACCEPT_ENCODING", "BoundedDecoder", "content_codings"]

ACCEPT_ENCODING = "gzip, deflate"
_GZIP = frozenset({"gzip", "x-gzip"})
_SUPPORTED = (*sorted(_GZIP), "deflate")


def content_codings(values: list[str]) -> list[str]:
    """The codings in the Content-Encoding header lines ``values``, in order, without identity."""
    codings = [part.strip().lower() for value in values for part in value.split(",")]
    return [coding for coding in codings if coding and coding != "identity"]


class BoundedDecoder:
    """Turns a body's raw bytes into its content, ``step`` bytes of output at a time at most.

    ``feed`` and ``finish`` are generators: each item is one decompress call's output, so a
    caller that checks a cap (and yields to its loop) per item never holds more than ``step``
    bytes it has not yet checked. Errors are ``FetchError`` naming the coding.
    """

    def __init__(self, codings: list[str], step: int = 64 << 10) -> None:
        if len(codings) > 1:
            raise FetchError(
                f"stacked content encodings ({', '.join(codings)}) are refused: "
                "one layer of gzip or deflate at most"
            )
        self.coding = codings[0] if codings else "identity"
        if self.coding != "identity" and self.coding not in _SUPPORTED:
            raise FetchError(
                f"content encoding {self.coding!r} is not supported "
                f"(the host decodes {', '.join(_SUPPORTED)})"
            )
        self.step = step
        self._inflater: zlib._Decompress | None = None
        self._pending = b""  # the first bytes of a deflate body, until its wrapper is known
        self._seen_input = False

    def _start(self, head: bytes) -> zlib._Decompress:
        if self.coding in _GZIP:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # "deflate" is meant to be zlib-wrapped (RFC 9110), but some servers send raw deflate;
        # a zlib header is two bytes whose big-endian value is a multiple of 31, method 8.
        wrapped = (
            len(head) >= 2 and head[0] & 0x0F == 8 and int.from_bytes(head[:2], "big") % 31 == 0
        )
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The content for the next raw bytes ``data``, in pieces of at most ``step`` bytes."""
        if self.coding == "identity":
            for start in range(0, len(data), self.step):
                yield data[start : start + self.step]
            return
        if not data:
            return
        self._seen_input = True
        if self._inflater is None:
            self._pending += data
            if self.coding == "deflate" and len(self._pending) < 2:
                return
            data, self._pending = self._pending, b""
            self._inflater = self._start(data)
        yield from self._inflate(data)

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        inflater = self._inflater
        assert inflater is not None
        while data:
            try:
                piece = inflater.decompress(data, self.step)
            except zlib.error as exc:
                raise FetchError(f"the {self.coding} body is corrupt: {exc}") from None
            if piece:
                yield piece
            if not inflater.eof:
                # Input zlib held back for lack of output room. Output it holds once all input
                # is in (at most its 32 KiB window) comes out with the next call or ``finish``.
                data = inflater.unconsumed_tail
                continue
            data = inflater.unused_data
            if data and self.coding in _GZIP:
                # Concatenated gzip members are one body (RFC 1952 §2.2): start the next one.
                inflater = self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                return  # trailing bytes after a deflate stream are ignored, as zlib does

    def _drain(self, inflater: zlib._Decompress) -> Iterator[bytes]:
        """Output zlib still holds after consuming all input, in bounded pieces."""
        while not inflater.eof:
            try:
                piece = inflater.decompress(b"", self.step)
            except zlib.error as exc:
                raise FetchError(f"the {self.coding} body is corrupt: {exc}") from None
            if not piece:
                return
            yield piece
            if len(piece) < self.step:
                return

    def finish(self) -> Iterator[bytes]:
        """The end of the body: anything still held, or an error if the stream was cut short."""
        if self.coding == "identity" or not self._seen_input:
            return  # an empty body (HEAD, 204, 304) has nothing to decode
        if self._inflater is None:
            self._inflater = self._start(self._pending)
            yield from self._inflate(self._pending)
        yield from self._drain(self._inflater)
        if not self._inflater.eof:
            raise FetchError(f"the {self.coding} body ends before its compressed stream does")
