"""System data that ordinary plugin code reads: time zones, CA certificates, MIME types, locales.

Without these, ``zoneinfo.ZoneInfo("Europe/Paris")`` and ``mimetypes.guess_type`` fail with a
bare ``[Errno 13]`` and ``ssl.create_default_context()`` silently loads no CA at all. They are
granted for reading only, and only where they lie in system locations (``/usr``, ``/etc``),
which no policy ever grants for writing (``roots.SYSTEM_LOCATIONS``): a worker may read them
before its sandbox is complete, and no plugin can change what another one reads there.

Symlinks are followed to find what must be readable: Landlock checks the file a path resolves
to, so ``/etc/localtime`` needs its target under ``/usr/share/zoneinfo``, and the hashed links
in ``/etc/ssl/certs`` need the folders they point into. Anything that resolves outside the
system locations, or into a folder named ``private`` (``/etc/ssl/private`` holds keys), is left
out. ``system_data_paths()`` is the one list: the namespace layer bind-mounts the same paths.
"""

from __future__ import annotations

import functools
import mimetypes
import os
import ssl

__all__ = ["SYSTEM_DATA_PREFIXES", "system_data_paths"]

SYSTEM_DATA_PREFIXES = ("/usr/", "/etc/")
"""Where system data may come from: system locations, never grantable for writing."""

TIME_ZONES = ("/usr/share/zoneinfo", "/etc/localtime", "/etc/timezone")
LOCALES = ("/usr/lib/locale", "/usr/share/locale", "/usr/share/i18n/locales")
CERTIFICATE_FOLDERS = (
    "/usr/share/ca-certificates",  # Debian: what /etc/ssl/certs links to
    "/usr/local/share/ca-certificates",  # ... and the administrator's own CAs
    "/etc/pki/ca-trust/extracted",  # Fedora, RHEL: what /etc/pki/tls/certs links to
)
OPENSSL_CONFIG = ("/etc/ssl/openssl.cnf", "/etc/pki/tls/openssl.cnf")
MAX_LINKS_FOLLOWED = 4096
"""Hashed certificate links examined in a CA folder (Debian has about 300)."""


def _safe(path: str) -> bool:
    parts = path.split("/")
    return path.startswith(SYSTEM_DATA_PREFIXES) and "private" not in parts and ".." not in parts


def _certificate_paths() -> set[str]:
    verify = ssl.get_default_verify_paths()
    found = {
        p for p in (verify.cafile, verify.capath, verify.openssl_cafile, verify.openssl_capath) if p
    }
    targets: set[str] = set()
    for folder in {verify.capath, verify.openssl_capath}:
        if not folder or not os.path.isdir(folder):
            continue
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_LINKS_FOLLOWED:
                    break
                if entry.is_symlink():  # one readlink each; realpath only per distinct folder
                    targets.add(os.path.dirname(os.path.join(folder, os.readlink(entry.path))))
    found.update(os.path.realpath(target) for target in targets)
    return found | set(CERTIFICATE_FOLDERS) | set(OPENSSL_CONFIG)


@functools.cache
def system_data_paths() -> tuple[str, ...]:
    """Existing system data paths to grant for reading, with the targets of their symlinks."""
    known = [os.fspath(path) for path in mimetypes.knownfiles]
    candidates = {*TIME_ZONES, *LOCALES, *known, *_certificate_paths()}
    granted: set[str] = set()
    for path in candidates:
        if not os.path.exists(path):
            continue
        resolved = os.path.realpath(path)
        if _safe(path) and _safe(resolved):
            granted.update((path, resolved))
    return tuple(sorted(granted))
