"""The RPC between host and worker, shared by both sides and importing neither.

``frames`` is the framing (length-prefixed msgpack, size cap, decode budget), ``shapes`` the
frame kinds and what a worker's frames must look like, ``wire_errors`` the error maps both
sides send, ``spec`` the ASSIGN payload, ``values`` the value model both sides check before sending, and ``serve_limits`` what it carries for ``autoweave.serve``; ``deadlines``
times out the host's requests (the host's channel imports it). The worker imports this
package inside its sandbox, so it must stay free of the host's stack.
"""

from __future__ import annotations

from autoweave_plugins.rpc.frames import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    encode,
    read_buffer,
)
from autoweave_plugins.rpc.serve_limits import ServeLimits
from autoweave_plugins.rpc.shapes import Kind, check_worker_frame
from autoweave_plugins.rpc.spec import WorkerSpec
from autoweave_plugins.rpc.values import PLAIN_TYPES, UNSENDABLE, ValueBudget, check_value
from autoweave_plugins.rpc.wire_errors import (
    MAX_REPLY_MESSAGE,
    WireError,
    brief,
    clip,
    exception_to_wire,
    read_wire_error,
    sandbox_unavailable,
    wire_error,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "MAX_REPLY_MESSAGE",
    "PLAIN_TYPES",
    "UNSENDABLE",
    "FrameDecoder",
    "Kind",
    "ServeLimits",
    "ValueBudget",
    "WireError",
    "WorkerSpec",
    "brief",
    "check_value",
    "check_worker_frame",
    "clip",
    "encode",
    "exception_to_wire",
    "read_buffer",
    "read_wire_error",
    "sandbox_unavailable",
    "wire_error",
]
