"""The ``autoweave-plugins`` command line. It configures logging; the library never does."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from autoweave_plugins.discovery import DiscoveryProblem, check_plugin_folder, discover
from autoweave_plugins.errors import ManifestIssue
from autoweave_plugins.manifest.cache import ManifestCache
from autoweave_plugins.manifest.model import MANIFEST_FILENAME
from autoweave_plugins.sandbox.probe import REQUIRED_LAYERS, probe

__all__ = ["main"]


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
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
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
    return 0 if not result.missing_required else 1


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Returns the exit status."""
    args = _parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
