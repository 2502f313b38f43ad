"""The ``autoweave-plugins`` command line. It configures logging; the library never does.

The offline commands live here (``validate``, ``doctor``, ``new``); ``run`` is in ``cli_run``
and the commands that drive a running host in ``cli_client``. Every subcommand accepts ``-v``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autoweave_plugins import __version__, cli_prepare
from autoweave_plugins.cli_client import add_client_commands
from autoweave_plugins.cli_run import add_run_command
from autoweave_plugins.discovery import (
    DiscoveredPlugin,
    DiscoveryProblem,
    check_plugin_folder,
    discover,
)
from autoweave_plugins.errors import ManifestIssue
from autoweave_plugins.jobs.commands import add_submit_command
from autoweave_plugins.manifest.cache import ManifestCache
from autoweave_plugins.manifest.entry import check_entry
from autoweave_plugins.manifest.issues import printable
from autoweave_plugins.manifest.model import MANIFEST_FILENAME
from autoweave_plugins.manifest.requirements import requirement_problem
from autoweave_plugins.manifest.validate import NAME_RE
from autoweave_plugins.sandbox.probe import REQUIRED_LAYERS, probe
from autoweave_plugins.startmethod import probe_start_method

__all__ = ["main", "program"]


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


def _issues(found: DiscoveredPlugin | DiscoveryProblem | None) -> tuple[ManifestIssue, ...]:
    """Every problem of a plugin folder: its manifest's, then its entry's (parsed, not run)."""
    if isinstance(found, DiscoveryProblem):
        return found.issues
    if found is None:
        return ()
    return check_entry(found.folder, found.manifest)


def _reports_for(path: str, cache: ManifestCache) -> list[_Report]:
    """A manifest file, a plugin folder, or a directory of plugins: one report per manifest."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, MANIFEST_FILENAME)):
            found = check_plugin_folder(path, cache)
            return [_Report(os.path.join(path, MANIFEST_FILENAME), _issues(found))]
        result = discover(path, cache=cache)
        reports = [_Report(p.manifest_path, _issues(p)) for p in result.plugins.values()]
        reports += [_Report(p.manifest_path or p.folder, p.issues) for p in result.problems]
        if not reports:
            return [
                _Report(path, (ManifestIssue("$", f"no {MANIFEST_FILENAME} found here or below"),))
            ]
        return sorted(reports, key=lambda r: r.path)
    return [_Report(path, cache.check(path).issues)]


def _cmd_validate(args: argparse.Namespace) -> int:
    missing = [path for path in args.paths if not os.path.exists(path)]
    for path in missing:
        print(f"autoweave-plugins validate: {path}: no such file or directory", file=sys.stderr)
    if missing:
        return 2
    cache = ManifestCache()
    reports = [report for path in args.paths for report in _reports_for(path, cache)]
    # File names may hold any bytes (surrogate escapes once decoded): ASCII JSON and escaped
    # text can be written to any stream, where a lone surrogate would end the command.
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2, ensure_ascii=True))
    else:
        for report in reports:
            if not report.issues:
                print(f"ok       {printable(report.path)}")
                continue
            print(f"invalid  {printable(report.path)}")
            for issue in report.issues:
                print(f"  {printable(str(issue))}")
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


def _cmd_new(args: argparse.Namespace) -> int:
    if not NAME_RE.match(args.name):
        print(
            f"invalid plugin name {args.name!r}: lowercase letters, digits and '-', at most 64",
            file=sys.stderr,
        )
        return 2
    for requirement in args.requirements:
        problem = requirement_problem(requirement)
        if problem is not None:
            print(f"invalid requirement {requirement!r}: {problem}", file=sys.stderr)
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
    if args.requirements:
        manifest["requirements"] = list(args.requirements)
    (folder / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=2) + "\n")
    code = SCAFFOLD_CODE.format(name=args.name)
    if args.requirements:  # installed into its own environment by `prepare` (or by `run`)
        note = f"# Requirements, from its own environment: {', '.join(args.requirements)}\n"
        code = code.replace("import autoweave\n", "import autoweave\n\n" + note, 1)
    (folder / "main.py").write_text(code)
    me, quoted = program(), shlex.quote(str(folder))
    next_steps = f"  {me} validate {quoted}\n"
    if args.requirements:
        next_steps += f"  {me} prepare {shlex.quote(str(folder.parent))}\n"
    print(
        f"created {folder}\nnext: edit {folder / 'main.py'} (a running host reloads it on save):"
        f"\n{next_steps}  {me} run {shlex.quote(str(folder.parent))}"
    )
    return 0


def program() -> str:
    """How this program was started, so that a command it prints works as typed."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or argv0.endswith("__main__.py"):
        return f"{shlex.quote(sys.executable)} -m autoweave_plugins"
    return shlex.quote(argv0)


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


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more log output (-vv for debug)",
    )
    parser = argparse.ArgumentParser(
        prog="autoweave-plugins", description="Sandboxed plugin host for Python."
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    parser.add_argument("--version", action="version", version=f"autoweave-plugins {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="validate manifests, plugin folders or plugin directories",
        description="Validate manifests, and check statically (without running it) that each "
        "hook names a function its entry module defines. Exit 0 if all is valid, 1 if not, 2 "
        "on a usage error (such as a path that does not exist).",
    )
    validate.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a manifest, a plugin folder, or a folder of plugins",
    )
    validate.add_argument("--json", action="store_true", help="print a JSON list of results")
    validate.set_defaults(handler=_cmd_validate)
    doctor = commands.add_parser(
        "doctor", parents=[common], help="report which sandbox layers this machine supports"
    )
    doctor.add_argument("--json", action="store_true", help="print the probe as JSON")
    doctor.set_defaults(handler=_cmd_doctor)
    add_run_command(commands, common)

    new = commands.add_parser(
        "new", parents=[common], help="create a plugin folder that validates and loads"
    )
    new.add_argument("name", help="plugin name: lowercase letters, digits and '-'")
    new.add_argument("--directory", default=".", help="where to create it (default: here)")
    new.add_argument(
        "--requirements",
        action="append",
        default=[],
        metavar="REQ",
        help="a PEP 508 requirement for its own environment, e.g. humanize>=4.9 (repeatable)",
    )
    new.set_defaults(handler=_cmd_new)
    cli_prepare.register(commands)  # prepare [DIR]: its own module

    add_client_commands(commands, common)
    add_submit_command(commands)  # submit: a job on a Redis queue
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Returns the exit status."""
    args = _parser().parse_args(argv)
    base = logging.INFO if args.command == "run" else logging.WARNING
    level = max(logging.DEBUG, base - 10 * args.verbose)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "watchfiles"):  # a line per brokered request, per batch of changes
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
