"""Worker entry point: ``python -I -m autoweave_plugins.worker FD HOST_PID WORLD``.

A blank worker imports its runtime, reports READY, enters its namespaces (``WORLD``, see
``world_entry``), prepares what does not depend on the plugin, and waits (answering pings)
until it is assigned a plugin. Then it completes its view, applies the other sandbox layers
to itself, and only then imports plugin code. Everything the sandboxed runtime needs is
imported here, before the sandbox closes the files.

``serve_blank`` is that life from READY on, shared by both start methods: ``main`` below (a
spawned interpreter) and a child of the template (``worker/template.py``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import sys

from autoweave_plugins.errors import AutoweaveError, ProtocolError, SandboxUnavailable
from autoweave_plugins.rpc import FrameDecoder, Kind, WorkerSpec, encode, wire_error
from autoweave_plugins.sandbox import Prepared, apply_sandbox, native, prepare
from autoweave_plugins.sandbox.namespaces import Namespaces, WorldReport, outer_pid
from autoweave_plugins.sandbox.privileges import die_with_parent
from autoweave_plugins.sandbox.world import WorldOptions
from autoweave_plugins.worker import runtime
from autoweave_plugins.worker.loop import WorkerLoop
from autoweave_plugins.worker.world_entry import Opener, enter, open_world

EXIT_SANDBOX = 3
EXIT_PROTOCOL = 4


def _wait_for_assignment(
    sock: socket.socket, decoder: FrameDecoder, fds: list[int]
) -> tuple[int, WorkerSpec] | None:
    while True:
        data, received, _flags, _address = socket.recv_fds(sock, 1 << 16, 16)
        fds.extend(received)  # listening sockets for network.inbound, sent with ASSIGN
        if not data:
            return None
        for frame in decoder.feed(data):
            kind, ident = frame[0], frame[1]
            if kind == Kind.PING:
                sock.sendall(
                    encode(
                        [Kind.PONG, ident, {"rss": 0, "calls": 0, "tasks": 0, "metrics_dropped": 0}]
                    )
                )
            elif kind == Kind.EXIT:
                return None
            elif kind == Kind.ASSIGN:
                return ident, WorkerSpec.from_wire(frame[2])
            else:
                raise ProtocolError(f"unexpected frame kind {kind} before assignment")


def _refuse(sock: socket.socket, ident: int, exc: AutoweaveError) -> int:
    sock.sendall(encode([Kind.ERROR, ident, wire_error(type(exc).__name__, str(exc), "")]))
    return EXIT_SANDBOX


def ready_frame() -> bytes:
    """READY, with the pid of the host's child as the host knows it (by which it finds a
    child whose fork the template could not answer): in a PID namespace of its own, pid 1."""
    return encode([Kind.READY, 0, {"pid": outer_pid()}])


def serve_blank(
    sock: socket.socket,
    opener: Opener,
    prepared: Prepared | None = None,
    *,
    announced: bool = False,
) -> int:
    """READY, namespaces, preparation, wait for ASSIGN, sandbox, serve; returns the exit code.

    What follows READY happens while the host gets the assignment ready. ``opener`` enters
    the namespaces (``world_entry``); the preparation comes after it because the seccomp
    filter names the worker's own pid, which its PID namespace changes. ``prepared`` is the
    template's, used if it was made for the pid this worker has. ``announced``: READY was
    sent already (a template's child sends it before anything else).
    """
    decoder = FrameDecoder()
    inbound: list[int] = []
    if not announced:
        sock.sendall(ready_frame())
    namespaces = opener()
    if prepared is None or prepared.pid != os.getpid():
        prepared = prepare()
    try:
        assigned = _wait_for_assignment(sock, decoder, inbound)
    except ProtocolError:
        return EXIT_PROTOCOL
    if assigned is None:
        return 0
    ident, spec = assigned
    # The host's chmod/utime broker comes first among the descriptors (provision.py).
    broker = socket.socket(fileno=inbound.pop(0)) if spec.metadata_broker and inbound else None
    if isinstance(namespaces, AutoweaveError):
        return _refuse(sock, ident, namespaces)
    world: WorldReport | None = None
    try:
        if isinstance(namespaces, Namespaces):
            spec, world = enter(spec, namespaces)
        report = apply_sandbox(spec, prepared, world)
    except (SandboxUnavailable, AutoweaveError) as exc:
        return _refuse(sock, ident, exc)
    listeners = [socket.socket(fileno=fd) for fd in inbound]
    with asyncio.Runner(loop_factory=WorkerLoop) as runner:
        runner.run(runtime.serve(sock, spec, decoder, ident, report, listeners, broker))
    return 0


def main() -> int:
    native.forbid_programs()  # nothing below may run a program: see sandbox/native.py
    if not die_with_parent(int(sys.argv[2])):
        return 0
    sock = socket.socket(fileno=int(sys.argv[1]))
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    options = WorldOptions.from_arg(sys.argv[3]) if len(sys.argv) > 3 else WorldOptions(False)
    return serve_blank(sock, functools.partial(open_world, options, None))


if __name__ == "__main__":
    sys.exit(main())
