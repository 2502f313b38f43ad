"""The fetch broker's bounded Content-Encoding decoder: same bytes out, never a big step."""

from __future__ import annotations

import gzip
import itertools
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoweave_plugins.broker.decode import BoundedDecoder, content_codings
from autoweave_plugins.errors import FetchError


def _deflate(data: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": lambda data: _deflate(data, zlib.MAX_WBITS),  # zlib-wrapped, as RFC 9110 says
    "raw-deflate": lambda data: _deflate(data, -zlib.MAX_WBITS),  # what some servers send
    "identity": lambda data: data,
}


def _decode(coding: str, wire: bytes, cuts: list[int], step: int) -> list[bytes]:
    decoder = BoundedDecoder([] if coding == "identity" else [coding], step)
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    pieces = []
    for start, end in itertools.pairwise(bounds):
        pieces += list(decoder.feed(wire[start:end]))
    return pieces + list(decoder.finish())


@settings(max_examples=200, deadline=None)
@given(
    coding=st.sampled_from(sorted(ENCODERS)),
    content=st.one_of(st.binary(max_size=5000), st.integers(0, 300_000).map(bytes)),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=8),
    step=st.integers(1, 1 << 16),
)
def test_any_chunking_decodes_to_the_content_in_bounded_steps(
    coding: str, content: bytes, cuts: list[int], step: int
) -> None:
    wire = ENCODERS[coding](content)
    name = "deflate" if coding == "raw-deflate" else coding
    pieces = _decode(name, wire, cuts, step)
    assert b"".join(pieces) == content
    assert all(0 < len(piece) <= step for piece in pieces)


def test_concatenated_gzip_members_are_one_body() -> None:
    wire = gzip.compress(b"first ") + gzip.compress(b"second")
    assert b"".join(_decode("gzip", wire, [3, 25], 4)) == b"first second"


def test_a_bomb_comes_out_one_step_at_a_time() -> None:
    """The decoder never inflates more than a step per item, whatever the ratio."""
    wire = _deflate(bytes(64 << 20), zlib.MAX_WBITS)  # ~64 KiB on the wire
    decoder = BoundedDecoder(["deflate"], 1 << 16)
    pieces = decoder.feed(wire)
    for _ in range(10):  # a consumer that stops early never pays for the rest
        assert len(next(pieces)) == 1 << 16


@pytest.mark.parametrize(
    ("header", "codings"),
    [
        (["gzip"], ["gzip"]),
        (["GZip , identity"], ["gzip"]),
        (["gzip, gzip"], ["gzip", "gzip"]),
        (["deflate", "gzip"], ["deflate", "gzip"]),
        (["identity", ""], []),
        ([], []),
    ],
)
def test_content_codings_reads_every_header_line(header: list[str], codings: list[str]) -> None:
    assert content_codings(header) == codings


@pytest.mark.parametrize(
    ("codings", "message"),
    [
        (["gzip", "gzip"], r"stacked content encodings \(gzip, gzip\) are refused"),
        (["deflate", "gzip"], r"stacked content encodings \(deflate, gzip\)"),
        (["br"], "content encoding 'br' is not supported"),
        (["zstd"], "content encoding 'zstd' is not supported"),
        (["compress"], "'compress' is not supported"),
    ],
)
def test_stacked_and_unknown_encodings_are_refused(codings: list[str], message: str) -> None:
    with pytest.raises(FetchError, match=message):
        BoundedDecoder(codings)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_truncated_stream_is_an_error_not_a_short_body(coding: str) -> None:
    wire = ENCODERS[coding](b"x" * 10_000)[:-12]
    with pytest.raises(FetchError, match=f"the {coding} body ends before"):
        _decode(coding, wire, [], 1024)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_garbage_is_a_clear_error(coding: str) -> None:
    with pytest.raises(FetchError, match=f"the {coding} body is corrupt"):
        _decode(coding, b"\x1f\x8b\x08\x00 this is not a compressed stream" * 4, [], 1024)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_an_empty_body_needs_no_stream(coding: str) -> None:
    """HEAD, 204 and 304 answers carry the header but no body."""
    assert _decode(coding, b"", [], 1024) == []
