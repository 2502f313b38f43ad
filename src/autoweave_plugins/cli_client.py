"""The client commands: driving a running host over its control socket.

``call``, ``load``, ``unload``, ``reload``, ``status``, ``events`` and ``usb attach|detach``.
Each finds its host with ``--host DIR_OR_NAME`` (else ``$AUTOWEAVE_PLUGINS_HOST``, else the only
one running; see ``hosts``), or takes a socket path with ``--control``.

Exit statuses: 0 done; 1 the host answered with an error (printed as ``Type: message`` on
stderr); 2 a usage error, or several hosts run and none was named (they are listed); 3 no host
could be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from autoweave_plugins.control import request, stream, to_json
from autoweave_plugins.hosts import AmbiguousHost, NoHost, select_host
from autoweave_plugins.liveview import render
from autoweave_plugins.status import HostStatus

__all__ = [
    "EXIT_AMBIGUOUS",
    "EXIT_ERROR",
    "EXIT_NO_HOST",
    "add_client_commands",
    "positive_seconds",
]

EXIT_ERROR = 1
EXIT_AMBIGUOUS = 2
EXIT_NO_HOST = 3
CALL_MARGIN = 60.0
"""Seconds a client waits beyond the call's own timeout (the host may load the plugin first)."""


class _Exit(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _socket(args: argparse.Namespace) -> str:
    if args.control:
        return str(args.control)
    try:
        return select_host(args.host)
    except AmbiguousHost as exc:
        raise _Exit(EXIT_AMBIGUOUS, str(exc)) from None
    except NoHost as exc:
        raise _Exit(EXIT_NO_HOST, str(exc)) from None


def _ask(args: argparse.Namespace, message: dict[str, Any], timeout: float) -> dict[str, Any]:
    path = _socket(args)
    try:
        return asyncio.run(request(path, message, timeout))
    except (OSError, EOFError) as exc:
        raise _Exit(EXIT_NO_HOST, f"cannot reach the host at {path}: {exc}") from None
    except TimeoutError:
        raise _Exit(EXIT_NO_HOST, f"the host at {path} did not answer in {timeout:g} s") from None


def _failed(reply: dict[str, Any]) -> int:
    error = reply.get("error") or {}
    if isinstance(error, dict):
        print(f"{error.get('type', 'Error')}: {error.get('message', '')}", file=sys.stderr)
        if error.get("traceback"):
            print(error["traceback"], file=sys.stderr, end="")
    else:  # an older host's plain message
        print(f"Error: {error}", file=sys.stderr)
    return EXIT_ERROR


def _run(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _Exit as exc:
            print(f"autoweave-plugins {args.command}: {exc}", file=sys.stderr)
            return exc.status
        except KeyboardInterrupt:
            return 130

    return wrapped


def _cmd_call(args: argparse.Namespace) -> int:
    try:
        value = json.loads(args.args_json) if args.args_json is not None else []
    except ValueError as exc:
        raise _Exit(2, f"ARGS_JSON is not JSON: {exc}") from None
    arguments = value if isinstance(value, list) else [value]
    message = {
        "command": "call",
        "plugin": args.name,
        "hook": args.hook,
        "args": arguments,
        "kwargs": {},
        "timeout": args.timeout,
    }
    wait = (args.timeout or 300.0) + CALL_MARGIN
    reply = _ask(args, message, wait)
    if not reply.get("ok"):
        return _failed(reply)
    print(to_json(reply.get("result")))
    return 0


def _cmd_lifecycle(args: argparse.Namespace) -> int:
    reply = _ask(args, {"command": args.command, "plugin": args.name}, 300.0)
    if not reply.get("ok"):
        return _failed(reply)
    print(f"{args.name}: {reply.get('state')} ({reply.get('version')})")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    reply = _ask(args, {"command": "status"}, 30.0)
    if not reply.get("ok"):
        return _failed(reply)
    status: HostStatus = reply["status"]
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
        return 0
    console = Console()
    rows = len(status["plugins"]) + len(status["rejected"])
    console.print(render(status, [], console.width, rows + 4))
    return 0


def _print_event(line: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(line, ensure_ascii=False), flush=True)
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(line.get("time", 0)))
    print(f"{stamp} {line.get('plugin') or '-'}: {line.get('text')}", flush=True)


def _cmd_events(args: argparse.Namespace) -> int:
    if not args.follow:
        reply = _ask(args, {"command": "events"}, 30.0)
        if not reply.get("ok"):
            return _failed(reply)
        for line in reply["events"]:
            _print_event(line, args.json)
        return 0
    path = _socket(args)

    async def follow() -> None:
        async for reply in stream(path, {"command": "events", "follow": True}):
            for line in reply.get("events", []):
                _print_event(line, args.json)
            if "event" in reply:
                _print_event(reply["event"], args.json)

    try:
        asyncio.run(follow())
    except OSError as exc:
        raise _Exit(EXIT_NO_HOST, f"cannot reach the host at {path}: {exc}") from None
    return 0


def _cmd_usb(args: argparse.Namespace) -> int:
    message: dict[str, Any] = {
        "command": "usb",
        "action": args.action,
        "vendor_id": args.vendor,
        "product_id": args.product,
    }
    if args.serial:
        message["serial"] = args.serial
    reply = _ask(args, message, 60.0)
    error = reply.get("error")
    if isinstance(error, dict):  # printed as one string: "Type: message"
        reply["error"] = f"{error.get('type')}: {error.get('message')}"
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else EXIT_ERROR


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0 (0 and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text}")
    return value


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        metavar="DIR_OR_NAME",
        help="the host: its plugin directory or its name (default: $AUTOWEAVE_PLUGINS_HOST, "
        "else the only one running)",
    )
    parser.add_argument("--control", metavar="SOCKET", help="a control socket path, instead")


def add_client_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
) -> None:
    """The client subcommands, on the main parser's ``commands``."""
    call = commands.add_parser(
        "call",
        parents=[common],
        help="call a hook of a plugin on the running host; prints its result as JSON",
        description="Call HOOK of plugin NAME. ARGS_JSON is a JSON array of arguments (any "
        "other JSON value is the one argument). Exit 0 with the result as JSON on stdout; 1 with "
        "the error's type and message on stderr; 3 if no host is reachable.",
    )
    call.add_argument("name", metavar="NAME")
    call.add_argument("hook", metavar="HOOK")
    call.add_argument("args_json", metavar="ARGS_JSON", nargs="?")
    call.add_argument(
        "--timeout", type=positive_seconds, metavar="S", help="seconds (default: host's)"
    )
    _target(call)
    call.set_defaults(handler=_run(_cmd_call))
    for verb, text in (
        ("load", "load a plugin into a worker now"),
        ("unload", "run onUnload and stop the plugin's workers"),
        ("reload", "load the plugin's current files; swap only if they start (blue/green)"),
    ):
        sub = commands.add_parser(verb, parents=[common], help=text, description=text)
        sub.add_argument("name", metavar="NAME")
        _target(sub)
        sub.set_defaults(handler=_run(_cmd_lifecycle))
    status = commands.add_parser(
        "status",
        parents=[common],
        help="what the live table shows, once (--json: the documented shape)",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    _target(status)
    status.set_defaults(handler=_run(_cmd_status))
    events = commands.add_parser(
        "events", parents=[common], help="the host's recent events (--follow: and new ones)"
    )
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    _target(events)
    events.set_defaults(handler=_run(_cmd_events))
    usb = commands.add_parser(
        "usb",
        parents=[common],
        help="send a simulated USB event to the running host",
        description="Send a simulated USB device event to the running host; it is delivered "
        "to every plugin whose manifest's usb permission matches the ids.",
    )
    actions = usb.add_subparsers(dest="action", required=True, metavar="{attach,detach}")
    for action, text in (
        ("attach", "a device was plugged in: calls onUSBAttach of matching plugins"),
        ("detach", "a device was removed: calls onUSBDetach of matching plugins"),
    ):
        sub = actions.add_parser(action, parents=[common], help=text, description=text)
        sub.add_argument("--vendor", required=True, help="vendor id, like 0x1234")
        sub.add_argument("--product", required=True, help="product id, like 0xabcd")
        sub.add_argument("--serial", help="serial number")
        _target(sub)
        sub.set_defaults(handler=_run(_cmd_usb))
