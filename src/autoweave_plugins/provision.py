"""What the host sets up for one assigned worker beyond its spec, and takes down after it.

At assignment a worker gets its private temp folder (``tmpdirs``) and the socket of its
chmod/utime broker (``broker.metadata``); the worker's end of that socket travels with the
ASSIGN frame, first among the descriptors. Both go when the worker has exited.
"""

from __future__ import annotations

import dataclasses
import functools
import socket

from autoweave_plugins.broker.metadata import MetadataService, private_tmp_device, writable_roots
from autoweave_plugins.errors import LoadError
from autoweave_plugins.rpc import WorkerSpec
from autoweave_plugins.tmpdirs import PrivateTmp, private_tmp

__all__ = ["Provisions"]


class Provisions:
    """One worker's private tmp and metadata broker, owned by its ``WorkerProcess``."""

    def __init__(self, tmp: PrivateTmp, broker: MetadataService, worker_end: socket.socket) -> None:
        self.tmp = tmp
        self.broker = broker
        self.worker_end: socket.socket | None = worker_end

    @classmethod
    def open(
        cls, spec: WorkerSpec, pid: int, tmp_base: str | None = None
    ) -> tuple[Provisions, WorkerSpec]:
        """Set everything up; returns the provisions and the spec that names them."""
        try:
            tmp = private_tmp(pid, tmp_base)
        except OSError as exc:
            raise LoadError(
                f"cannot make the worker's private temp folder: {exc}", spec.plugin
            ) from None
        host_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        spec = dataclasses.replace(spec, tmp_dir=tmp.path, metadata_broker=True)
        broker = MetadataService(
            host_end,
            writable_roots(spec.filesystem, tmp.path),
            own_tmp=functools.partial(private_tmp_device, pid),
        )
        broker.start()
        return cls(tmp, broker, worker_end), spec

    def fds(self) -> list[int]:
        """Descriptors to send with ASSIGN, in the order the worker expects them."""
        return [self.worker_end.fileno()] if self.worker_end is not None else []

    def sent(self) -> None:
        """ASSIGN has been written (the kernel holds the worker's end now): drop ours."""
        if self.worker_end is not None:
            self.worker_end.close()
            self.worker_end = None

    async def close(self) -> None:
        """The worker has exited: stop the broker and remove the temp folder."""
        self.sent()
        self.broker.close()
        await self.tmp.remove()
