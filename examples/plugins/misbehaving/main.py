"""Everything here is refused by the sandbox; the host logs it and keeps serving."""

import autoweave


def attack(device):
    try:
        with open("/etc/shadow") as secrets:
            autoweave.log.error("read /etc/shadow: %s", secrets.read(20))
    except OSError as exc:  # the sandbox's note (exc.__notes__) says which layer, and the fix
        notes = " ".join(getattr(exc, "__notes__", []))
        autoweave.log.warning("reading /etc/shadow refused by the kernel: %s %s", exc, notes)
    try:
        import subprocess  # noqa: F401
    except ImportError as exc:
        autoweave.log.warning("import refused: %s", exc)
    try:
        import socket

        socket.create_connection(("example.com", 80), timeout=2)
    except OSError as exc:
        autoweave.log.warning("network refused: %s", exc)
    autoweave.log.warning("now spinning forever; the host will kill this worker at the hook timeout")
    while True:
        pass
