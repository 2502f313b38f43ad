"""Attack class: making a sandbox layer fail to apply, so the next worker runs without it.

A layer the machine lacks is reported and, unless ``strict``, the plugin runs under the
others: that is a host's choice about its kernel. It must never be the plugin's choice. The
route here: Landlock rules are made from the declared paths at every start, so a plugin that
can write above one of its own declared paths (a read-write data folder with a read-only
``inner/cfg`` declared beneath it) replaces ``inner`` with a folder nobody may search
(``mkdir`` with mode 0 needs no chmod). Its next worker cannot open ``inner/cfg`` (EACCES),
and if that error takes the whole ruleset with it, that worker has no Landlock at all.
Without the namespace layer (``FALLBACK``) Landlock is the filesystem boundary, and a root
host's worker keeps euid 0 without capabilities: every root-owned file whose owner bits
allow it is open to it. (In a world the view still hides the host; there the same route
cost only the layer underneath it.)

Evidence, outside the plugin: a secret file the test planted outside every grant never
reaches anything the plugin returns, and a marker it tries to write outside every grant does
not exist. The sabotaged grant itself is simply not granted; the plugin's other grant works.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.helpers.workers import FALLBACK, running, write_plugin
from tests.security._support import CALL_TIMEOUT, LOAD_TIMEOUT, PRELUDE

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = (
    PRELUDE
    + '''
def sabotage(data):
    """Replace the folder above a declared path with one nobody may search."""
    inner = os.path.join(data, "inner")
    return {
        "rmdir_cfg": attempt(os.rmdir, os.path.join(inner, "cfg")),
        "rmdir_inner": attempt(os.rmdir, inner),
        "mkdir": attempt(os.mkdir, inner, 0),
    }


def escape(secret, marker, data):
    def write(path):
        with open(path, "w") as handle:
            return handle.write("the plugin wrote here")

    return {
        "read": attempt(lambda: open(secret).read()),
        "write": attempt(write, marker),
        "own_grant": attempt(write, os.path.join(data, "still-mine")),
    }
'''
)
HOOKS = {"onSabotage": "sabotage", "onEscape": "escape"}


async def test_an_unsearchable_declared_path_does_not_switch_landlock_off(tmp_path: Path) -> None:
    data = tmp_path / "data"  # without a world, the host's user owns what it makes
    inner = data / "inner"
    (inner / "cfg").mkdir(parents=True)

    plugin = write_plugin(
        tmp_path / "plugins",
        "saboteur",
        CODE,
        hooks=HOOKS,
        permissions={
            "filesystem": [
                {"path": str(data), "mode": "readwrite"},
                {"path": str(inner / "cfg"), "mode": "read"},
            ]
        },
    )
    secret_text = "LANDLOCK-SECRET-" + secrets.token_hex(12)
    secret = tmp_path / "secret.txt"
    secret.write_text(secret_text)
    secret.chmod(0o600)
    marker = tmp_path / "marker.txt"
    async with running(plugin, load_timeout=LOAD_TIMEOUT, world=FALLBACK) as first:
        planted = await first.call("onSabotage", str(data), timeout=CALL_TIMEOUT)
    # The oracle works: the plugin did leave an unsearchable folder above its declared path.
    assert planted["mkdir"]["ok"] is True, planted
    assert (data / "inner").stat().st_mode & 0o777 == 0
    (data / "inner" / "cfg").mkdir()  # as the host's ensure_declared_paths makes it again
    async with running(plugin, load_timeout=LOAD_TIMEOUT, world=FALLBACK) as second:
        report = await second.call(
            "onEscape", str(secret), str(marker), str(data), timeout=CALL_TIMEOUT
        )
    # Evidence: nothing outside its grants was read or written ...
    assert secret_text not in repr(report), report
    assert not marker.exists(), report
    assert report["read"]["ok"] is False and report["write"]["ok"] is False, report
    # ... and losing one grant cost it only that grant.
    assert report["own_grant"]["ok"] is True, report
    assert (data / "still-mine").read_text() == "the plugin wrote here"
