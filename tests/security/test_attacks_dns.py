"""DNS starvation: one plugin's hanging lookups must not stall another plugin's fetch.

The attacker fires 16 fetches at a name whose nameserver never answers; the control plugin
then fetches its own allowed ``localhost`` URL. Two routes to a silent nameserver, both real
DNS over UDP on loopback (see ``_dns_scenario``):

- the host's resolver is pointed at it through ``FetchLimits.nameservers``, in this process;
- the host runs with its default, system-configured resolver in a private mount namespace whose
  /etc/resolv.conf names the silent server (needs root and ``unshare``), which is how the host
  is deployed, and the route that also shows the starvation of the old libc-in-threads lookup.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

import pytest

from autoweave_plugins.broker.fetch import FetchLimits
from tests.security._dns_scenario import CONTROL_TIMEOUT, Outcome, silent_dns, starve

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
MAX_CONTROL_SECONDS = 1.0


def _judge(outcome: Outcome) -> None:
    # The attack was real: queries reached the silent server and the attacker was still waiting.
    assert outcome.queries >= 4, outcome
    assert outcome.attack_pending, outcome
    # The sibling got its own page, quickly.
    assert outcome.control.get("outcome") == "fetched", outcome
    assert outcome.control["status"] == 200 and '"/allowed/control"' in outcome.control["body"]
    assert outcome.control_seconds < MAX_CONTROL_SECONDS, outcome


async def test_hanging_lookups_do_not_starve_a_sibling(tmp_path: Path) -> None:
    async with silent_dns("127.0.0.1", 0) as (dns, port):
        limits = FetchLimits(nameservers=(f"127.0.0.1:{port}",))
        outcome = await starve(dns, limits, tmp_path)
    print(outcome)
    _judge(outcome)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount over /etc/resolv.conf")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
async def test_system_resolver_hanging_lookups_do_not_starve_a_sibling(tmp_path: Path) -> None:
    # A loopback address of its own, so that concurrent runs never share port 53.
    address = "127.{}.{}.{}".format(*(1 + secrets.randbelow(250) for _ in range(3)))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {address}\n")
    script = (
        f'mount --bind "{resolv}" /etc/resolv.conf && '
        f'exec "{sys.executable}" -m tests.security._dns_scenario {address} "{tmp_path}"'
    )
    process = await asyncio.create_subprocess_exec(
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    if process.returncode != 0 and b"mount" in stderr and not stdout:
        pytest.skip(f"cannot mount a private resolv.conf here: {stderr.decode()[-300:]}")
    assert process.returncode == 0, stderr.decode()[-2000:]
    outcome = Outcome(**json.loads(stdout.decode().strip().splitlines()[-1]))
    print(outcome)
    _judge(outcome)
    assert CONTROL_TIMEOUT > MAX_CONTROL_SECONDS
