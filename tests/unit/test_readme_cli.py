"""The README's quick start and CLI sections name commands and options the CLI has."""

from __future__ import annotations

import re
import shlex

import pytest

from autoweave_plugins.cli import _parser
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def quick_start_commands() -> list[list[str]]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith(".venv/bin/autoweave-plugins "):
                argv = shlex.split(line, comments=True)
                commands.append(argv[1:])
    return commands


def test_the_quick_start_drives_a_host_with_call_and_status() -> None:
    names = [argv[0] for argv in quick_start_commands()]
    assert names == [
        "doctor",
        "validate",
        "prepare",
        "new",
        "run",
        "status",
        "call",
        "events",
        "usb",
    ]


@pytest.mark.parametrize("argv", quick_start_commands(), ids=" ".join)
def test_each_quick_start_command_parses_as_written(argv: list[str]) -> None:
    args = _parser().parse_args(argv)  # SystemExit(2) on anything the CLI does not have
    assert args.command == argv[0]


def test_every_client_command_in_the_table_exists() -> None:
    section = README.split("### Driving a running host", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)", section, re.M))
    assert documented == {"call", "load", "status", "events", "usb"}
    parser = _parser()
    for command in ("call a b", "load a", "unload a", "reload a", "status --json",
                    "events --follow --json", "usb detach --vendor 0x1 --product 0x2"):  # fmt: skip
        assert parser.parse_args(command.split()).command == command.split()[0]
