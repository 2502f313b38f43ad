"""Framing: 4-byte length-prefixed msgpack, with a size cap and a decode budget.

Written here rather than taken from a library: the framing is eight lines, and what matters is
the checking, which is ours: a size cap enforced before a frame is buffered, and a budget on
what one frame may decode to, so that a hostile worker's bytes can only ever become a clean
``ProtocolError``. What a frame must look like is ``shapes``' business.
"""

from __future__ import annotations

import mmap
import struct
import threading
from typing import Any, Final

import msgpack

from autoweave_plugins.errors import ProtocolError
from autoweave_plugins.rpc.wire_errors import clip

__all__ = ["DEFAULT_MAX_FRAME", "READ_CHUNK", "Buffer", "FrameDecoder", "encode", "read_buffer"]

Buffer = bytes | bytearray | memoryview

DEFAULT_MAX_FRAME: Final = 8 << 20
DEFAULT_MAX_CONTAINERS: Final = 100_000
DEFAULT_MAX_ELEMENTS: Final = 262_144
"""Arrays and maps one frame may decode to, and the items they may hold in all. Bytes on the
wire bound memory only for long strings: an empty map or a 2-character string is 1-3 bytes of
msgpack and 50-70 bytes of Python, so 8 MiB of them would cost the host 150-600 MB. Counting
as containers are built stops that at a few tens of MB. Bulk data belongs in bytes values."""
_HEADER = 4
_SIZE = struct.Struct(">I")
READ_CHUNK: Final = 64 << 10
"""Bytes read from a channel at once into a buffer kept for reuse (``asyncio.BufferedProtocol``).
asyncio's plain protocols ``recv(256 KiB)`` into a new bytes object each time, which glibc serves
with mmap and munmap: on a trivial call's round trip that costs more than the hook. Below the
mmap threshold (128 KiB), and large frames are only a few more reads."""


_reads = threading.local()


def read_buffer() -> memoryview:
    """This thread's read buffer (``READ_CHUNK`` bytes), shared by the channels its event loop
    reads: a read is decoded, and what is left of it copied, before the next can overwrite it.
    One per channel would cost the host of a thousand workers 64 MiB. Anonymous memory (not a
    zero-filled bytearray) so that only the pages reads reach are ever resident: a worker
    whose frames are small keeps one page of it, not sixteen."""
    view: memoryview | None = getattr(_reads, "view", None)
    if view is None:
        private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS  # shared anonymous memory: seccomp says no
        view = _reads.view = memoryview(mmap.mmap(-1, READ_CHUNK, flags=private))
    return view


_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def encode(frame: list[Any] | tuple[Any, ...]) -> bytes:
    """One frame, ready to write. Raises TypeError for values msgpack cannot carry."""
    body: bytes = _packer.pack(frame)
    return _SIZE.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes as they arrive, get back whole frames."""

    __slots__ = ("_buffer", "max_containers", "max_elements", "max_frame")

    def __init__(
        self,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_containers: int = DEFAULT_MAX_CONTAINERS,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
    ) -> None:
        self.max_frame = max_frame
        self.max_containers = max_containers
        self.max_elements = max_elements
        self._buffer = bytearray()

    def _decode(self, body: Buffer) -> Any:
        """One frame's body. Raises ProtocolError, whatever msgpack makes of garbage."""
        size = len(body)
        try:
            if size <= self.max_containers and size <= self.max_elements:
                # Every array, map and item takes at least one byte of msgpack: a frame this
                # small cannot exceed the budget, so it is decoded without counting (most are).
                return msgpack.unpackb(body, raw=False, strict_map_key=True)
            return self._decode_counted(body)
        except ProtocolError:
            raise
        except ValueError as exc:
            if "exceeds max_" in str(exc):  # one container over the per-type limit
                raise ProtocolError(
                    f"frame holds a container of more than {self.max_elements} items; send bulk data as bytes"
                ) from None
            raise ProtocolError(f"malformed frame: ValueError: {clip(str(exc), 200)}") from None
        except Exception as exc:  # msgpack raises several unrelated types for garbage
            detail = clip(str(exc), 200)  # msgpack may quote what it decoded
            raise ProtocolError(f"malformed frame: {type(exc).__name__}: {detail}") from None

    def _decode_counted(self, body: Buffer) -> Any:
        containers, elements = self.max_containers, self.max_elements

        def count(container: Any) -> Any:
            nonlocal containers, elements
            containers -= 1
            elements -= len(container)
            if containers < 0 or elements < 0:
                raise ProtocolError(
                    f"frame decodes to more than {self.max_containers} arrays and maps or "
                    f"{self.max_elements} items in all; send bulk data as bytes"
                )
            return container

        # A single container is bounded by the per-type limits before ``count`` sees it.
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            list_hook=count,
            object_hook=count,
            max_array_len=self.max_elements,
            max_map_len=self.max_elements,
        )

    def feed(self, data: Buffer) -> list[Any]:
        """Decode every complete frame in ``data`` plus what was buffered. Raises ProtocolError.

        ``data`` may be a view of a reused read buffer: what is kept of it is copied.
        """
        buffer = self._buffer
        end = len(data)
        if not buffer and end >= _HEADER:
            (size,) = _SIZE.unpack_from(data)
            if size + _HEADER == end and size <= self.max_frame:
                return [self._decode(data[_HEADER:])]  # one whole frame: most reads, on calls
        source: Buffer
        if buffer:
            buffer += data
            source = buffer
            end = len(buffer)
        else:  # whole frames in one read: decoded in place, not copied first
            source = data
        frames = []
        offset = 0
        while end - offset >= _HEADER:
            (size,) = _SIZE.unpack_from(source, offset)
            if size > self.max_frame:
                raise ProtocolError(
                    f"frame of {size} bytes exceeds the {self.max_frame}-byte limit"
                )
            if end - offset - _HEADER < size:
                break
            start = offset + _HEADER
            frames.append(self._decode(source[start : start + size]))
            offset = start + size
        if source is buffer:
            if offset:
                del buffer[:offset]
        elif offset < end:
            buffer += source[offset:]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buffer)
