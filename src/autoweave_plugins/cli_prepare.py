"""``autoweave-plugins prepare [DIR]``: build the environments of the plugins that have
``requirements``, ahead of ``run``, with a progress display.

It builds exactly what ``run`` would build in the background (same config, same cache), so a
host started afterwards finds every environment ready and needs no network: an offline machine
can be prepared once and then run. Exit status 0 when every environment is ready, 1 when any
failed (each failure names the requirement and gives uv's explanation), 2 on a usage or config
error. ``--prune`` then removes the environments no plugin in DIR uses; one that a running host
is using is never removed (see ``environments.leases``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from autoweave_plugins.discovery import discover
from autoweave_plugins.environments import (
    EnvironmentBuilder,
    Prepared,
    keys_in_use,
    prepare_all,
)
from autoweave_plugins.errors import AutoweaveError, ConfigError, DiscoveryError
from autoweave_plugins.manifest.cache import ManifestCache
from autoweave_plugins.roots import default_data_root
from autoweave_plugins.settings import ManagerConfig

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``prepare`` command to the CLI's subcommands."""
    prepare = commands.add_parser(
        "prepare", help="build the environments of plugins that have requirements"
    )
    prepare.add_argument(
        "directory",
        nargs="?",
        metavar="DIR",
        help="the plugin directory (default: the config's plugin_directory)",
    )
    prepare.add_argument(
        "--config", metavar="FILE", help="TOML config; [environments] says where packages come from"
    )
    prepare.add_argument(
        "--prune",
        action="store_true",
        help="then remove the environments no plugin in DIR uses (never one in use)",
    )
    prepare.add_argument("--json", action="store_true", help="print the outcome as JSON")
    prepare.set_defaults(handler=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    try:
        config = ManagerConfig.from_toml(args.config) if args.config else ManagerConfig()
        directory = Path(args.directory) if args.directory else config.plugin_directory
        watcher = config.watcher
        try:
            found = discover(
                directory,
                max_depth=watcher.max_depth,
                ignore=watcher.ignore_patterns,
                cache=ManifestCache(),
            )
        except DiscoveryError as exc:
            raise ConfigError("DIR", exc.reason) from None
        builder = EnvironmentBuilder(config.environments, data_root=Path(default_data_root()))
    except AutoweaveError as exc:
        print(f"autoweave-plugins prepare: {exc}", file=sys.stderr)
        return 2
    console = Console(stderr=args.json)
    for problem in found.problems:
        console.print(f"[yellow]skipped[/] {problem.folder}: invalid manifest (see 'validate')")
    wanted = {
        n: p.manifest.requirements for n, p in found.plugins.items() if p.manifest.requirements
    }
    results, removed = asyncio.run(_prepare(builder, wanted, console, args.prune))
    if args.json:
        print(json.dumps(_as_json(results, removed), indent=2))
    else:
        _report(console, results, removed, builder)
    return 1 if any(r.error is not None for r in results.values()) else 0


async def _prepare(
    builder: EnvironmentBuilder,
    wanted: dict[str, tuple[str, ...]],
    console: Console,
    prune: bool,
) -> tuple[dict[str, Prepared], tuple[str, ...] | None]:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        tasks: dict[str, TaskID] = {
            name: progress.add_task(f"{name}: {', '.join(requirements)}", total=1)
            for name, requirements in sorted(wanted.items())
        }

        def done(outcome: Prepared) -> None:
            progress.update(tasks[outcome.plugin], completed=1)
            mark = "[red]failed[/]" if outcome.error else "[green]ready[/]"
            console.print(f"{mark}  {outcome.plugin} ({outcome.seconds:.1f} s)")

        try:
            results = await prepare_all(builder, wanted, on_done=done)
        finally:
            await builder.aclose()
    removed = await builder.prune(keys_in_use(builder, wanted)) if prune else None
    return results, removed


def _report(
    console: Console,
    results: dict[str, Prepared],
    removed: tuple[str, ...] | None,
    builder: EnvironmentBuilder,
) -> None:
    if not results:
        console.print("no plugin here has requirements: nothing to build")
    for name in sorted(results):
        outcome = results[name]
        if outcome.environment is not None:
            how = "cached" if outcome.cached else f"built in {outcome.seconds:.1f} s"
            path = escape(str(outcome.environment.path))
            console.print(f"[green]ok[/]      {name}: {how}, {path}", soft_wrap=True)
            for source in outcome.environment.sources:
                origin = escape(str(source.source))
                console.print(
                    f"          {source.name} {source.version} from {origin}", soft_wrap=True
                )
        elif outcome.error is not None:
            console.print(f"[red]failed[/]  {name}: {escape(str(outcome.error))}", soft_wrap=True)
    if removed is not None:
        where = escape(str(builder.cache_dir))
        console.print(f"pruned {len(removed)} unused environments from {where}")


def _as_json(results: dict[str, Prepared], removed: tuple[str, ...] | None) -> dict[str, Any]:
    plugins: dict[str, Any] = {}
    for name, outcome in sorted(results.items()):
        entry: dict[str, Any] = {
            "ok": outcome.error is None,
            "cached": outcome.cached,
            "seconds": round(outcome.seconds, 3),
        }
        if outcome.environment is not None:
            entry["environment"] = outcome.environment.to_dict()
        if outcome.error is not None:
            entry["error"] = str(outcome.error)
            entry["requirements"] = list(outcome.error.requirements)
            entry["culprits"] = list(getattr(outcome.error, "culprits", ()))
        plugins[name] = entry
    return {"plugins": plugins, "pruned": list(removed) if removed is not None else None}
