"""Wire errors: built and read in one place, and bounded on read whatever the sender did."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins.rpc import (
    FrameDecoder,
    brief,
    clip,
    encode,
    exception_to_wire,
    read_wire_error,
    wire_error,
)
from autoweave_plugins.rpc.wire_errors import MAX_MESSAGE, MAX_TRACEBACK, MAX_TYPE

values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=30,
)


@given(text=st.text(), limit=st.integers(0, 300))
def test_clip_fits_the_limit_and_keeps_both_ends(text: str, limit: int) -> None:
    clipped = clip(text, limit)
    assert len(clipped) <= limit
    if len(text) <= limit:
        assert clipped == text
    elif limit >= 16:
        keep = (limit - 5) // 2
        assert clipped.startswith(text[:keep]) and clipped.endswith(text[len(text) - keep :])


@given(error=st.dictionaries(st.sampled_from(["type", "message", "traceback", "x"]), values))
def test_whatever_arrives_reads_within_the_bounds(error: dict[str, Any]) -> None:
    read = read_wire_error(error)
    assert len(read.type) <= MAX_TYPE
    assert len(read.message) <= MAX_MESSAGE
    assert len(read.traceback) <= MAX_TRACEBACK + 4


def test_oversized_fields_are_cut_where_it_matters() -> None:
    big = {"type": "T" * 10**6, "message": "head" + "m" * 10**6 + "tail", "traceback": "x" * 10**6}
    read = read_wire_error(big)
    assert read.message.startswith("head") and read.message.endswith("tail")
    assert read.traceback.startswith("...\n") and len(read.traceback) == MAX_TRACEBACK + 4
    assert MAX_TYPE - 2 <= len(read.type) <= MAX_TYPE


def test_fields_that_are_not_text_read_as_a_short_repr() -> None:
    nested = [[0] * 1000] * 1000  # str() of this would be ~3 MB
    read = read_wire_error({"type": 7, "message": nested, "traceback": None})
    assert read.type == "7" and len(read.message) < 200 and read.traceback == "None"
    assert len(brief("x" * 10**6)) < 100


def test_missing_fields_and_non_maps_read_as_defaults() -> None:
    assert read_wire_error("nope", default_message="request failed").message == "request failed"
    assert read_wire_error({}).type == "Exception"


def test_what_the_worker_sends_round_trips() -> None:
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        sent = exception_to_wire(exc)
    (frame,) = FrameDecoder().feed(encode([12, 1, sent]))
    read = read_wire_error(frame[2])
    assert (read.type, read.message) == ("ValueError", "bad input")
    assert read.traceback.endswith("ValueError: bad input\n")
    assert wire_error("PermissionDenied", "no") == {"type": "PermissionDenied", "message": "no"}
