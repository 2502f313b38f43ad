"""The frame codec: round trips under any chunking, and garbage only ever raises ProtocolError."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from autoweave_plugins.errors import ProtocolError
from autoweave_plugins.rpc import FrameDecoder, Kind, check_worker_frame, encode

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
frames = st.lists(
    st.tuples(st.integers(0, 20), st.integers(0, 2**31), values).map(list), min_size=1, max_size=8
)


@given(frames, st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_frames_survive_any_chunking(sent: list[list[Any]], cuts: list[int]) -> None:
    wire = b"".join(encode(frame) for frame in sent)
    decoder = FrameDecoder()
    received: list[Any] = []
    position = 0
    for cut in cuts * (len(wire) // max(1, sum(cuts)) + 1):
        received += decoder.feed(wire[position : position + cut])
        position += cut
        if position >= len(wire):
            break
    received += decoder.feed(wire[position:])
    assert received == sent and decoder.buffered == 0


@given(frames, st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_frames_survive_chunking_through_one_reused_read_buffer(
    sent: list[list[Any]], cuts: list[int]
) -> None:
    """Channels read into one buffer that the next read overwrites: what the decoder keeps of
    a read must be its own copy."""
    wire = b"".join(encode(frame) for frame in sent)
    read = bytearray(64)
    view = memoryview(read)
    decoder = FrameDecoder()
    received: list[Any] = []
    position = 0
    for cut in cuts * (len(wire) // sum(cuts) + 1):
        chunk = wire[position : position + cut]
        view[: len(chunk)] = chunk
        received += decoder.feed(view[: len(chunk)])
        read[:] = b"\xc1" * len(read)  # never valid msgpack: a kept view would decode garbage
        position += cut
        if position >= len(wire):
            break
    assert received == sent and decoder.buffered == 0


def _spent(value: Any) -> tuple[int, int]:
    """The arrays and maps ``value`` decodes to, and the items they hold."""
    if isinstance(value, list | dict):
        containers, elements = 1, len(value)
        for item in value if isinstance(value, list) else value.values():
            inner = _spent(item)
            containers, elements = containers + inner[0], elements + inner[1]
        return containers, elements
    return 0, 0


@given(frames, st.integers(1, 40), st.integers(1, 40))
@example([[0, 0, [[]] * 8]], 9, 40)  # as dense as msgpack gets: 10 arrays in 12 bytes
@example([[0, 0, [0] * 12]], 40, 13)  # 15 items in 16 bytes
def test_the_budget_holds_whether_or_not_a_frame_is_counted(
    sent: list[list[Any]], max_containers: int, max_elements: int
) -> None:
    """Frames no longer than the budget are decoded without counting (they cannot exceed it):
    small limits put frames on both sides of that line."""
    decoder = FrameDecoder(max_containers=max_containers, max_elements=max_elements)
    for frame in sent:
        containers, elements = _spent(frame)
        if containers <= max_containers and elements <= max_elements:
            assert decoder.feed(encode(frame)) == [frame]
        else:
            with pytest.raises(ProtocolError):
                decoder.feed(encode(frame))
            decoder = FrameDecoder(max_containers=max_containers, max_elements=max_elements)


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_garbage_raises_only_protocol_error(data: bytes) -> None:
    decoder = FrameDecoder(max_frame=1 << 16)
    try:
        for frame in decoder.feed(data):
            check_worker_frame(frame)
    except ProtocolError:
        pass


def test_oversized_header_is_refused_before_buffering() -> None:
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed((1 << 30).to_bytes(4, "big") + b"x" * 10)


@pytest.mark.parametrize(
    "frame",
    [
        "not a list",
        [Kind.RESULT],
        [99, 1, None],
        [Kind.RESULT, -1, None],
        [Kind.RESULT, "1", None],
        [float(Kind.RESULT), 1, None],
        [Kind.RESULT, 1.0, None],
        [Kind.RESULT, True, None],
        [Kind.RESULT, 1],
        [Kind.ERROR, 1, "not a map"],
        [Kind.REQUEST, 1, 5, {}],
        [Kind.METRIC, 0, "m", 1.0],
        [Kind.CALL, 1, "onX", [], {}],  # a host-to-worker kind coming from a worker
    ],
)
def test_bad_shapes_are_protocol_errors(frame: Any) -> None:
    with pytest.raises(ProtocolError):
        check_worker_frame(frame)


def test_good_shapes_pass() -> None:
    assert check_worker_frame([Kind.RESULT, 7, {"any": "value"}]) == (Kind.RESULT, 7)
    assert check_worker_frame([Kind.METRIC, 0, "m", 1.0, {}]) == (Kind.METRIC, 0)


def test_container_bombs_are_refused_while_decoding() -> None:
    bomb = encode([Kind.LOG, 0, 20, [{}] * 200_000])
    decoder = FrameDecoder(max_containers=1000)
    with pytest.raises(ProtocolError, match="more than 1000 arrays and maps or"):
        decoder.feed(bomb)
    assert FrameDecoder(max_containers=1000).feed(
        encode([Kind.RESULT, 1, [[1], [2], {"a": [3]}]])
    ) == [[Kind.RESULT, 1, [[1], [2], {"a": [3]}]]]


def test_scalar_floods_are_refused_while_decoding() -> None:
    flood = encode([Kind.LOG, 0, 20, ["ab"] * 300_000])
    with pytest.raises(ProtocolError, match="items"):
        FrameDecoder(max_elements=100_000).feed(flood)
    nested = encode([Kind.LOG, 0, 20, [["ab"] * 50_000 for _ in range(4)]])
    with pytest.raises(ProtocolError, match="items"):
        FrameDecoder(max_elements=100_000).feed(nested)
