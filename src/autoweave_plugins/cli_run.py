"""``autoweave-plugins run``: the host, with its control socket, metrics and USB sources.

Before anything starts, the host takes its name's lock (``hosts.HostLock``): a second host on
the same directory (or name) stops there with "already running (pid N)" and never touches the
first one's socket. On a terminal the live view (``liveview``) shows the plugins and recent
events, with logs scrolling above it; elsewhere (or with ``--plain``) each event is a log line.
SIGINT or SIGTERM runs onUnload everywhere and stops every worker.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import logging
import os
import signal
import sys
from typing import Any

from rich.console import Console

from autoweave_plugins.cli_client import positive_seconds
from autoweave_plugins.config import load_toml
from autoweave_plugins.control import ControlServer
from autoweave_plugins.errors import AutoweaveError, ConfigError
from autoweave_plugins.eventlog import RecentEvents
from autoweave_plugins.hosts import HostError, HostLock, check_name, host_name_for
from autoweave_plugins.jobs.commands import RedisServices, add_run_options, usb_source
from autoweave_plugins.liveview import live_view, log_above
from autoweave_plugins.manager import PluginManager
from autoweave_plugins.metrics import serve_metrics
from autoweave_plugins.settings import ManagerConfig
from autoweave_plugins.status import EventLogger, HostStatus, host_status
from autoweave_plugins.usb.device import USBEvent
from autoweave_plugins.usb.dispatch import USBDispatcher
from autoweave_plugins.usb.simulated import SimulatedSource
from autoweave_plugins.usb.udev import UdevSource, udev_available

__all__ = ["add_run_command"]

log = logging.getLogger("autoweave_plugins.run")


def _config(args: argparse.Namespace) -> tuple[ManagerConfig, str]:
    """The config and the plugin directory: DIR, else the config file's plugin_directory."""
    config = ManagerConfig.from_toml(args.config) if args.config else ManagerConfig()
    if args.directory is not None:
        directory = args.directory
    elif args.config and "plugin_directory" in load_toml(args.config):
        directory = str(config.plugin_directory)
    else:
        raise HostError("give the plugin directory DIR, or plugin_directory in --config")
    if not os.path.isdir(directory):
        raise HostError(f"{directory}: no such directory (the plugin directory)")
    if args.no_watch:
        watcher = dataclasses.replace(config.watcher, enabled=False)
        config = dataclasses.replace(config, watcher=watcher)
    return config, directory


async def _metrics(manager: PluginManager, host: str, port: int) -> asyncio.Server:
    try:
        return await serve_metrics(manager.metrics, host, port)
    except OSError as exc:
        taken = exc.errno == errno.EADDRINUSE
        reason = "is already in use" if taken else f"cannot be used ({exc.strerror})"
        raise ConfigError(
            "--metrics-port",
            f"{host}:{port} {reason}; pick another port, or 0 to turn /metrics off",
        ) from None


def _usb_sources(args: argparse.Namespace, dispatcher: USBDispatcher) -> list[asyncio.Future[Any]]:
    if args.usb not in ("auto", "udev"):
        return []
    problem = udev_available()
    if problem is None:
        log.info("USB: listening to udev for device attach/detach")
        return [asyncio.ensure_future(dispatcher.run(UdevSource()))]
    if args.usb == "udev":
        raise ConfigError("--usb", f"udev is not usable here: {problem}")
    log.warning(
        "USB: udev is not usable here (%s); devices come only from "
        "'autoweave-plugins usb attach' and --simulate-usb",
        problem,
    )
    return []


async def _serve(args: argparse.Namespace, lock: HostLock, config: ManagerConfig) -> int:
    manager = PluginManager(lock.directory, config=config)
    console = Console()
    live = console.is_terminal and not args.plain
    recent = RecentEvents()
    manager.on("*", recent)
    if live:
        log_above(console, logging.getLogger().level)
    else:
        manager.on("*", EventLogger())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    background: list[asyncio.Future[Any]] = []
    servers: list[asyncio.Server] = []
    async with manager:
        dispatcher = USBDispatcher(manager, hook_timeout=args.hook_timeout)
        simulated = SimulatedSource()
        background.append(asyncio.ensure_future(dispatcher.run(simulated)))
        try:
            background += _usb_sources(args, dispatcher)
            redis = RedisServices()  # --jobs / [jobs] url, --usb redis://
            await redis.start(args, config, manager, dispatcher)

            def status() -> HostStatus:
                snapshot = host_status(manager)
                links = redis.status()
                if "jobs" in links:
                    snapshot["jobs"] = links["jobs"]
                if "hotplug" in links:
                    snapshot["hotplug"] = links["hotplug"]
                return snapshot

            if args.metrics_port:
                servers.append(await _metrics(manager, args.metrics_host, args.metrics_port))
                log.info("metrics: http://%s:%d/metrics", args.metrics_host, args.metrics_port)
            control = ControlServer(manager, dispatcher, status, lambda: recent.last(200))
            servers.append(await control.start(lock.socket))
            lock.publish()
            log.info("host %r: control socket %s", lock.name, lock.socket)
            for text in args.simulate_usb:
                simulated.inject(_usb_event(text))
            if live:
                view = live_view(console, status, lambda: recent.last(50))
                background.append(asyncio.ensure_future(view))
            await stop.wait()
            log.info("shutting down: onUnload everywhere, then every worker is stopped")
            await redis.stop()  # first: the jobs in flight finish and are answered
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for server in servers:
                server.close()
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
        config, directory = _config(args)
        name = check_name(args.name) if args.name else host_name_for(directory)
        lock = HostLock(name, directory, control=args.control)
        lock.acquire()
    except AutoweaveError as exc:
        print(f"autoweave-plugins run: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(args, lock, config))
    except AutoweaveError as exc:
        print(f"autoweave-plugins run: {exc}", file=sys.stderr)
        return 2
    finally:
        lock.release()


def add_run_command(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
) -> None:
    run = commands.add_parser(
        "run", parents=[common], help="run the plugin host on a directory (Ctrl-C to stop)"
    )
    run.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        help="the plugin directory (default: plugin_directory from --config)",
    )
    run.add_argument(
        "--config", metavar="FILE", help="TOML config: [worker_pool], [loader], [watcher]..."
    )
    run.add_argument(
        "--name",
        help="the host's name, for --host in client commands (default: from DIR), and its "
        "consumer name in a Redis job queue (default there: hostname:pid)",
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
        type=usb_source,
        default="auto",
        metavar="{auto,udev,simulated,redis://HOST:PORT/DB}",
        help="USB event source (default: udev if usable); a Redis URL reads aw:hotplug",
    )
    add_run_options(run)  # --jobs
    run.add_argument(
        "--control",
        metavar="SOCKET",
        help="control socket path (default: from the host's name, in a private runtime dir)",
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
        type=positive_seconds,
        default=10.0,
        help="timeout of USB hook calls in seconds, > 0 (default 10)",
    )
    run.add_argument("--no-watch", action="store_true", help="do not hot-reload changed plugins")
    run.add_argument(
        "--plain",
        action="store_true",
        help="log lines instead of the live view, even on a terminal",
    )
    run.set_defaults(handler=_cmd_run)
