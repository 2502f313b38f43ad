"""The ASSIGN payload survives the wire: what the host sends is what the worker builds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from autoweave_plugins.rpc import FrameDecoder, Kind, WorkerSpec, encode

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    config=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    grants=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12), st.sampled_from(["read", "write", "readwrite"])
        ),
        max_size=3,
    ),
    roots=st.lists(st.text(min_size=1, max_size=12), max_size=2),
)
def test_a_spec_round_trips_through_a_frame(
    config: dict[str, object], grants: list[tuple[str, str]], roots: list[str]
) -> None:
    spec = WorkerSpec(
        plugin="p",
        folder="/plugins/p",
        entry="main.py",
        hooks={"onEcho": "echo"},
        manifest={"name": "p", "permissions": {"filesystem": [{"path": "/d", "mode": "read"}]}},
        filesystem=grants,
        max_heap_mb=64,
        config=config,
        environment_paths=roots,
        environment_roots=roots,
    )
    (frame,) = FrameDecoder().feed(encode([Kind.ASSIGN, 1, spec.to_wire()]))
    assert WorkerSpec.from_wire(frame[2]) == spec
    assert spec.to_wire()["config"] is spec.config  # not a copy: encoded at once
