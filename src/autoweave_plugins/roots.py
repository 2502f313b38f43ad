"""Where filesystem grants may point, and where they never may: the map the grant policy reads.

A plugin's write grant is a way to leave a file behind for someone else to run or trust. So the
map has three parts:

- **data roots**: the folders the host configures for plugin data (``policy.allowed_roots``).
  The default is one data root with a folder per plugin: ``$XDG_DATA_HOME/autoweave-plugins``
  when that is set (and absolute, as the XDG spec requires), else ``/var/lib/autoweave-plugins``
  for root and ``~/.local/share/autoweave-plugins`` for anyone else, each followed by
  ``{plugin}``, which stands for the plugin's own name, so no plugin is ever granted another's.
- **system locations**: programs, libraries, configuration, boot files, kernel interfaces, other
  programs' state and spools, and the dot-files of every home directory. Nothing there is ever
  granted, and a config that lists one as a data root is refused. The one exception is the
  project's own data home (``/var/lib/autoweave-plugins``, ``~/.local/share/autoweave-plugins``,
  ``$XDG_DATA_HOME/autoweave-plugins``), which may lie under ``/var/lib`` or a home's dot-folder
  without opening either of them.
- **host paths**: code that runs outside any sandbox (the interpreter, site-packages, this
  package), the plugin directory (every plugin's code and shipped files), the host's config file
  (every plugin's ``plugin_config``), the control socket's folder and the folder of the
  workers' private temp folders (``worker_tmp_base``). Never granted, not even for reading.

Shared temp folders (``/tmp``, ``/var/tmp``) may hold data roots, but only as subfolders listed
explicitly: the folder itself holds every other user's and plugin's files.

Comparisons are by path component, on normalised absolute paths.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
import tempfile

from autoweave_plugins.hosts import runtime_path

__all__ = [
    "DATA_DIR_NAME",
    "PLUGIN_PLACEHOLDER",
    "SHARED_TEMP",
    "SYSTEM_LOCATIONS",
    "contains",
    "data_homes",
    "default_allowed_roots",
    "default_data_root",
    "host_private_paths",
    "overlaps",
    "runtime_code_paths",
    "system_location",
    "worker_tmp_base",
]

DATA_DIR_NAME = "autoweave-plugins"
PLUGIN_PLACEHOLDER = "{plugin}"

SYSTEM_LOCATIONS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/proc",
    "/root", "/run", "/sbin", "/snap", "/sys", "/usr",
    "/var/cache", "/var/db", "/var/lib", "/var/run", "/var/spool",
)  # fmt: skip
"""Never granted, whatever the config says: what runs as root (binaries, libraries, cron,
package scripts under /var/lib/dpkg), what configures it, and the kernel's own interfaces."""

SHARED_TEMP = ("/tmp", "/var/tmp")
"""World-writable folders: a data root may be a subfolder, never the folder itself."""

_HOMES = "/home"


def contains(parent: str, child: str) -> bool:
    """``child`` is ``parent`` or lies under it, compared by component."""
    return parent == "/" or child == parent or child.startswith(parent.rstrip("/") + "/")


def overlaps(a: str, b: str) -> bool:
    """One of the two paths contains the other."""
    return contains(a, b) or contains(b, a)


def _host_home() -> str | None:
    home = os.path.expanduser("~")
    return home if home.startswith("/") and home != "/" else None


def default_data_root() -> str:
    """The project's data home for this host user (see the module docstring)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if xdg.startswith("/"):
        return os.path.join(os.path.normpath(xdg), DATA_DIR_NAME)
    home = _host_home()
    if os.geteuid() == 0 or home is None:
        return f"/var/lib/{DATA_DIR_NAME}"
    return os.path.join(home, ".local", "share", DATA_DIR_NAME)


def default_allowed_roots() -> tuple[str, ...]:
    """One data root, partitioned by plugin name."""
    return (f"{default_data_root()}/{PLUGIN_PLACEHOLDER}",)


def data_homes() -> tuple[str, ...]:
    """The project's own data folders: the only places under /var/lib or a home's dot-folders
    where grants may lie."""
    homes = {f"/var/lib/{DATA_DIR_NAME}", default_data_root()}
    home = _host_home()
    if home is not None:
        homes.add(os.path.join(home, ".local", "share", DATA_DIR_NAME))
    return tuple(sorted(homes))


def _in_dot_entry_of_home(path: str, home: str) -> bool:
    """``path`` is a dot-file or lies in a dot-folder directly inside ``home``."""
    if not contains(home, path) or path == home:
        return False
    return path[len(home.rstrip("/")) + 1 :].startswith(".")


def system_location(path: str) -> str | None:
    """The system location ``path`` overlaps (contains, is, or lies under), or None.

    A path inside one of the project's data homes is exempt from the ``/var/lib`` and home
    dot-file rules (``/root`` is root's home), never from the others.
    """
    own_data = any(contains(home, path) for home in data_homes())
    for location in SYSTEM_LOCATIONS:
        if own_data and location in ("/var/lib", "/root"):  # root's home is /root
            continue
        if overlaps(location, path):
            return location
    if contains(path, _HOMES):  # "/" or "/home": every home, dot-files included
        return _HOMES
    host_home = _host_home()
    if host_home is not None and contains(path, host_home):
        return host_home
    if own_data:
        return None
    parts = path.split("/")
    if contains(_HOMES, path) and (len(parts) == 3 or parts[3].startswith(".")):
        return "/".join(parts[:4])  # a whole home directory, or a dot-file in one
    if host_home is not None and _in_dot_entry_of_home(path, host_home):
        return path
    return None


@functools.cache
def runtime_code_paths() -> tuple[str, ...]:
    """Where the interpreter, installed packages and this package live (symlinks resolved)."""
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update((sys.prefix, sys.base_prefix, sys.exec_prefix))
    paths.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return tuple(sorted({os.path.realpath(p) for p in paths}))


def worker_tmp_base() -> str:
    """Where the host makes each worker's private temp folder (``tmpdirs``)."""
    return os.path.join(default_data_root(), ".tmp")


def host_private_paths() -> tuple[str, ...]:
    """Folders of the host's own that are never granted: where the control sockets and host
    locks live (``hosts.runtime_path``), the fallback folder in the temp dir, and the workers'
    private temp folders."""
    fallback = os.path.join(tempfile.gettempdir(), f"{DATA_DIR_NAME}-{os.getuid()}")
    return tuple(sorted({fallback, str(runtime_path()), worker_tmp_base()}))
