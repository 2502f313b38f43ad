"""Frame kinds and the shapes a worker's frames must have.

Every frame is a msgpack array ``[kind, id, *fields]``. ``kind`` is one of the small integers
below; ``id`` pairs a reply with its request (0 for one-way frames). Request ids are chosen by
the side that sends the request, so host and worker id spaces never collide: the host's
requests are CALL/PING/ASSIGN, the worker's are REQUEST.

The host checks every frame a worker sends against ``check_worker_frame`` before it looks at a
field, so that code past the check may index fields without guarding each one. An error names
what was wrong and quotes the worker's values only in brief: the host logs it and raises it to
callers who may keep it.
"""

from __future__ import annotations

from typing import Any, Final

from autoweave_plugins.errors import ProtocolError
from autoweave_plugins.rpc.wire_errors import brief

__all__ = ["REQUEST_OPS", "Kind", "check_worker_frame"]

REQUEST_OPS: Final = frozenset({"fetch"})
"""What a worker may ask the host to do (REQUEST frames); the SDK sends nothing else."""


class Kind:
    """Frame kinds. Host to worker below 10, worker to host from 10."""

    ASSIGN: Final = 1  # [1, id, spec]
    CALL: Final = 2  # [2, id, hook, args, kwargs]
    CANCEL: Final = 3  # [3, id]
    PING: Final = 4  # [4, id]
    REPLY: Final = 5  # [5, id, value]             answer to a worker REQUEST
    REPLY_ERROR: Final = 6  # [6, id, {type, message}]
    EXIT: Final = 7  # [7, 0]
    READY: Final = 10  # [10, 0, info]
    RESULT: Final = 11  # [11, id, value]
    ERROR: Final = 12  # [12, id, {type, message, traceback}]
    PONG: Final = 13  # [13, id, info]
    REQUEST: Final = 14  # [14, id, op, payload]
    METRIC: Final = 15  # [15, 0, name, value, labels]
    LOG: Final = 16  # [16, 0, level, message]


_WORKER_SHAPES: Final = {
    Kind.READY: (3, dict),
    Kind.RESULT: (3, None),
    Kind.ERROR: (3, dict),
    Kind.PONG: (3, dict),
    Kind.REQUEST: (4, str),
    Kind.METRIC: (5, str),
    Kind.LOG: (4, int),
}


_RESULT: Final = Kind.RESULT


def check_worker_frame(frame: Any) -> tuple[int, int]:
    """Check a frame from a worker has a known kind and shape; return (kind, id)."""
    if type(frame) is list and len(frame) == 3:  # a RESULT, the answer to every call: quickly
        kind, ident = frame[0], frame[1]
        if type(kind) is int and kind == _RESULT and type(ident) is int and ident >= 0:
            return _RESULT, ident
    if type(frame) is not list or len(frame) < 2:
        raise ProtocolError(f"frame must be an array [kind, id, ...], got {type(frame).__name__}")
    kind, ident = frame[0], frame[1]
    shape = _WORKER_SHAPES.get(kind) if type(kind) is int else None
    if shape is None:
        raise ProtocolError(f"unknown frame kind {brief(kind)}")
    if type(ident) is not int or ident < 0:
        raise ProtocolError(f"frame id must be a non-negative integer, got {brief(ident)}")
    length, third = shape
    if len(frame) != length:
        raise ProtocolError(f"frame kind {kind} must have {length} fields, got {len(frame)}")
    if third is not None and type(frame[2]) is not third:
        raise ProtocolError(f"frame kind {kind}: field 2 must be {third.__name__}")
    if kind == Kind.REQUEST and (frame[2] not in REQUEST_OPS or type(frame[3]) is not dict):
        # Never quoted back: the op is the worker's, and may be megabytes long.
        raise ProtocolError(f"a request must be one of {sorted(REQUEST_OPS)} with a map payload")
    return kind, ident
