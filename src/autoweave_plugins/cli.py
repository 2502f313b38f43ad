"""The ``autoweave-plugins`` command line. It configures logging; the library never does."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from autoweave_plugins.control import default_control_path, request, serve_control
from autoweave_plugins.discovery import DiscoveryProblem, check_plugin_folder, discover
from autoweave_plugins.errors import AutoweaveError, ConfigError, ManifestIssue
from autoweave_plugins.manager import PluginManager
from autoweave_plugins.manifest.cache import ManifestCache
from autoweave_plugins.manifest.model import MANIFEST_FILENAME
from autoweave_plugins.manifest.validate import NAME_RE
from autoweave_plugins.metrics import serve_metrics
from autoweave_plugins.sandbox.probe import REQUIRED_LAYERS, probe
from autoweave_plugins.settings import ManagerConfig
from autoweave_plugins.startmethod import probe_start_method
from autoweave_plugins.status import EventLogger, live_status
from autoweave_plugins.usb.device import USBEvent
from autoweave_plugins.usb.dispatch import USBDispatcher
from autoweave_plugins.usb.simulated import SimulatedSource
from autoweave_plugins.usb.udev import UdevSource, udev_available

__all__ = ["main"]

log = logging.getLogger("autoweave_plugins.run")


@dataclass(frozen=True, slots=True)
class _Report:
    path: str
    issues: tuple[ManifestIssue, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "ok": not self.issues,
            "errors": [i.to_dict() for i in self.issues],
        }


def _reports_for(path: str, cache: ManifestCache) -> list[_Report]:
    """A manifest file, a plugin folder, or a directory of plugins: one report per manifest."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, MANIFEST_FILENAME)):
            found = check_plugin_folder(path, cache)
            issues = found.issues if isinstance(found, DiscoveryProblem) else ()
            return [_Report(os.path.join(path, MANIFEST_FILENAME), issues)]
        result = discover(path, cache=cache)
        reports = [_Report(p.manifest_path, ()) for p in result.plugins.values()]
        reports += [_Report(p.manifest_path or p.folder, p.issues) for p in result.problems]
        if not reports:
            return [
                _Report(path, (ManifestIssue("$", f"no {MANIFEST_FILENAME} found here or below"),))
            ]
        return sorted(reports, key=lambda r: r.path)
    return [_Report(path, cache.check(path).issues)]


def _cmd_validate(args: argparse.Namespace) -> int:
    cache = ManifestCache()
    reports = [report for path in args.paths for report in _reports_for(path, cache)]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2, ensure_ascii=False))
    else:
        for report in reports:
            if not report.issues:
                print(f"ok       {report.path}")
                continue
            print(f"invalid  {report.path}")
            for issue in report.issues:
                print(f"  {issue}")
    return 1 if any(r.issues for r in reports) else 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    result = probe()
    start = asyncio.run(probe_start_method())
    if args.json:
        print(json.dumps({**result.to_dict(), "start_method": start}, indent=2))
    else:
        for name, status in result.layers.items():
            mark = "yes" if status.available else "no "
            required = " (required in strict mode)" if name in REQUIRED_LAYERS else ""
            print(f"{mark}  {name:20s} {status.detail}{required}")
        missing = result.missing_required
        print(
            "strict mode: "
            + ("available" if not missing else f"unavailable, missing {', '.join(missing)}")
        )
        why = f"; template unavailable: {start['fallback_reason']}"
        print(
            f"start method: {start['active']} (a blank worker was ready in "
            f"{start['blank_worker_ready_ms']} ms{why if start['fallback_reason'] else ''})"
        )
    return 0 if not result.missing_required else 1


async def _serve(args: argparse.Namespace) -> int:
    config = ManagerConfig.from_toml(args.config) if args.config else ManagerConfig()
    if args.no_watch:
        config = dataclasses.replace(
            config, watcher=dataclasses.replace(config.watcher, enabled=False)
        )
    manager = PluginManager(args.directory, config=config)
    console = Console()
    live = console.is_terminal and not args.plain
    if not live:
        manager.on("*", EventLogger())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    background: list[asyncio.Task[Any]] = []
    servers: list[asyncio.Server] = []
    async with manager:
        dispatcher = USBDispatcher(manager, hook_timeout=args.hook_timeout)
        simulated = SimulatedSource()
        background.append(asyncio.ensure_future(dispatcher.run(simulated)))
        if args.usb in ("auto", "udev"):
            problem = udev_available()
            if problem is None:
                background.append(asyncio.ensure_future(dispatcher.run(UdevSource())))
                log.info("USB: listening to udev for device attach/detach")
            elif args.usb == "udev":
                raise ConfigError("--usb", f"udev is not usable here: {problem}")
            else:
                log.warning(
                    "USB: udev unavailable (%s); events come only from 'autoweave-plugins usb attach'",
                    problem,
                )
        if args.metrics_port:
            servers.append(
                await serve_metrics(manager.metrics, args.metrics_host, args.metrics_port)
            )
            log.info("metrics: http://%s:%d/metrics", args.metrics_host, args.metrics_port)
        servers.append(await serve_control(args.control, manager, dispatcher))
        log.info("control socket: %s", args.control)
        for text in args.simulate_usb:
            simulated.inject(_usb_event(text))
        if live:
            background.append(asyncio.ensure_future(live_status(manager, console)))
        await stop.wait()
        log.info("shutting down: onUnload everywhere, then every worker is stopped")
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for server in servers:
            server.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.control)
    return 0


def _usb_event(text: str) -> USBEvent:
    """'attach:0x1234:0xabcd' (or detach:...) from --simulate-usb."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ConfigError(
            "--simulate-usb",
            f"expected ACTION:VENDOR:PRODUCT, like attach:0x1234:0xabcd, got {text!r}",
        )
    try:
        return USBEvent.create(parts[0], parts[1], parts[2])
    except AutoweaveError as exc:
        raise ConfigError("--simulate-usb", str(exc)) from None


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_serve(args))
    except AutoweaveError as exc:
        print(f"autoweave-plugins run: {exc}", file=sys.stderr)
        return 2


def _cmd_new(args: argparse.Namespace) -> int:
    if not NAME_RE.match(args.name):
        print(
            f"invalid plugin name {args.name!r}: lowercase letters, digits and '-', at most 64",
            file=sys.stderr,
        )
        return 2
    folder = Path(args.directory) / args.name
    if folder.exists():
        print(f"{folder} already exists", file=sys.stderr)
        return 2
    folder.mkdir(parents=True)
    manifest = {
        "$schema": "https://autoweave.dev/schemas/autoweave.plugin.schema.json",
        "name": args.name,
        "version": "0.1.0",
        "description": "A new autoweave plugin",
        "entry": "main.py",
        "permissions": {"memory": {"max_heap_mb": 128}},
        "hooks": {"onLoad": "initialize", "onUnload": "cleanup", "onJobReceived": "handle_job"},
    }
    (folder / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=2) + "\n")
    (folder / "main.py").write_text(SCAFFOLD_CODE.format(name=args.name))
    print(f"created {folder}: edit main.py, then run 'autoweave-plugins validate {folder}'")
    return 0


SCAFFOLD_CODE = '''"""{name}: a plugin for autoweave-plugins. It runs inside a sandboxed worker."""

import autoweave


async def initialize():
    autoweave.log.info("{name} loaded")


async def handle_job(job):
    autoweave.metric("jobs.handled", 1)
    return {{"received": job}}


def cleanup():
    autoweave.log.info("{name} unloading")
'''


def _cmd_usb(args: argparse.Namespace) -> int:
    message: dict[str, Any] = {
        "command": "usb",
        "action": args.action,
        "vendor_id": args.vendor,
        "product_id": args.product,
    }
    if args.serial:
        message["serial"] = args.serial
    try:
        reply = asyncio.run(request(args.control, message))
    except (OSError, TimeoutError) as exc:
        print(f"cannot reach a running host at {args.control}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoweave-plugins", description="Sandboxed plugin host for Python."
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser(
        "validate", help="validate manifests, plugin folders or plugin directories"
    )
    validate.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a manifest, a plugin folder, or a folder of plugins",
    )
    validate.add_argument("--json", action="store_true", help="print a JSON list of results")
    validate.set_defaults(handler=_cmd_validate)
    doctor = commands.add_parser("doctor", help="report which sandbox layers this machine supports")
    doctor.add_argument("--json", action="store_true", help="print the probe as JSON")
    doctor.set_defaults(handler=_cmd_doctor)

    run = commands.add_parser("run", help="run the plugin host on a directory (Ctrl-C to stop)")
    run.add_argument("directory", metavar="DIR", help="the plugin directory")
    run.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config: [worker_pool], [loader], [watcher], [policy]...",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=9464,
        help="serve /metrics here; 0 turns it off (default 9464)",
    )
    run.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for /metrics (default 127.0.0.1)"
    )
    run.add_argument(
        "--usb",
        choices=("auto", "udev", "simulated"),
        default="auto",
        help="USB event source (default: udev if usable)",
    )
    run.add_argument(
        "--control", default=default_control_path(), help="control socket path (for 'usb attach')"
    )
    run.add_argument(
        "--simulate-usb",
        action="append",
        default=[],
        metavar="ACTION:VENDOR:PRODUCT",
        help="inject a USB event at start, e.g. attach:0x1234:0xabcd",
    )
    run.add_argument(
        "--hook-timeout",
        type=float,
        default=10.0,
        help="timeout of USB hook calls in seconds (default 10)",
    )
    run.add_argument("--no-watch", action="store_true", help="do not hot-reload changed plugins")
    run.add_argument(
        "--plain",
        action="store_true",
        help="log lines instead of the live table, even on a terminal",
    )
    run.set_defaults(handler=_cmd_run)

    new = commands.add_parser("new", help="create a plugin folder that validates and loads")
    new.add_argument("name", help="plugin name: lowercase letters, digits and '-'")
    new.add_argument("--directory", default=".", help="where to create it (default: here)")
    new.set_defaults(handler=_cmd_new)

    usb = commands.add_parser("usb", help="send a simulated USB event to a running host")
    usb.add_argument("action", choices=("attach", "detach"))
    usb.add_argument("--vendor", required=True, help="vendor id, like 0x1234")
    usb.add_argument("--product", required=True, help="product id, like 0xabcd")
    usb.add_argument("--serial", help="serial number")
    usb.add_argument("--control", default=default_control_path(), help="the host's control socket")
    usb.set_defaults(handler=_cmd_usb)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Returns the exit status."""
    args = _parser().parse_args(argv)
    base = logging.INFO if args.command == "run" else logging.WARNING
    level = max(logging.DEBUG, base - 10 * args.verbose)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(
        max(level, logging.WARNING)
    )  # one line per brokered request
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
