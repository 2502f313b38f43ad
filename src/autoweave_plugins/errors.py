"""Every exception the library raises, in one tree.

Catch ``AutoweaveError`` to handle anything autoweave-plugins raises on purpose. The tree::

    AutoweaveError
    ├── ConfigError                 a host config key is unknown, mistyped or out of range
    ├── ManifestError               a manifest failed to parse or validate (carries every issue)
    ├── DiscoveryError              a plugin folder could not be used (duplicate name, escape)
    ├── InvalidPath                 a filesystem path given at runtime is malformed
    ├── InvalidURL                  a URL or URL pattern is malformed or refused before matching
    ├── PermissionDenied            a plugin asked for something its manifest does not grant
    ├── PolicyRefused               a manifest asks for more than the host's grant policy allows
    ├── SandboxUnavailable          strict mode, and this machine lacks a required sandbox layer
    ├── WorldError                  a worker's namespaces or filesystem view could not be built
    ├── UnknownPlugin               no plugin of that name was discovered (or its folder was
    │                               rejected: the message says why)
    ├── UnsendableValue             a value cannot cross to or from a worker (see "values" below)
    ├── UnknownEvent                ``on``/``off`` with an event name that does not exist
    ├── InvalidUSBEvent             a USB event (from udev or the control socket) is malformed
    ├── FetchError                  a brokered HTTP request failed (after its URL was allowed)
    └── WorkerError                 something went wrong with a plugin's worker process
        ├── ProtocolError           the worker sent a malformed, oversized or unexpected frame
        ├── LoadError               assigning the plugin failed: sandbox, import or onLoad
        │   ├── LoadTimeout         ... and it took longer than the load timeout
        │   ├── DependencyError     a plugin it depends on is missing, out of range, or a cycle
        │   └── EntryError          ... because the plugin's own code failed: importing its entry
        │                               raised, a hook names no function, or onLoad raised
        ├── UnknownHook             the plugin does not declare or define that hook
        ├── HookError               the hook raised, or returned a value that cannot be sent
        ├── HookTimeout             the hook overran its timeout; its worker was killed
        ├── PluginCrashed           the worker died while the call was in flight
        └── PluginFailed            the plugin's circuit breaker is open (too many crashes)

The Redis job queue's errors (``JobError`` and its subclasses: ``InvalidJob``,
``JobDeadLettered``, ``JobQueueFull``, ``JobResultTimeout``, ``JobsUnavailable``) live in
``autoweave_plugins.jobs.errors``, also under ``AutoweaveError``.

Building a plugin's own environment fails with ``EnvironmentBuildError`` and its subclasses,
which live beside the builder (``autoweave_plugins.environments``), also under ``AutoweaveError``.

``LoadError``, ``EntryError`` and ``HookError`` carry ``.traceback``: the plugin's traceback as
text (empty when there is none). ``ConfigError.problems`` lists every ``(key, message)`` found,
not only the first.

Values (the one model both sides apply): ``None``, ``bool``, ``int`` (64-bit), ``float``,
``str``, ``bytes``, lists and tuples (which arrive as lists), and dicts whose keys are ``str``
(or ``bytes``). Anything else, a non-string key, or more than a frame holds, is refused before
it is sent: by the host as ``UnsendableValue`` (never counted against the plugin), by the
worker as a ``HookError`` saying the hook "returned an unsendable value".

``ManifestError.issues`` holds ``ManifestIssue`` records, each with a JSON path in the form
``$.permissions.filesystem[0].mode``; parse errors add a line and a column.

Errors that are also a built-in category derive from it too (``InvalidURL`` is a
``ValueError``, ``PermissionDenied`` a ``PermissionError``), so callers that only know the
built-ins still catch them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AutoweaveError",
    "ConfigError",
    "DependencyError",
    "DiscoveryError",
    "EntryError",
    "FetchError",
    "HookError",
    "HookTimeout",
    "InvalidPath",
    "InvalidURL",
    "InvalidUSBEvent",
    "LoadError",
    "LoadTimeout",
    "ManifestError",
    "ManifestIssue",
    "PermissionDenied",
    "PluginCrashed",
    "PluginFailed",
    "PolicyRefused",
    "ProtocolError",
    "SandboxUnavailable",
    "UnknownEvent",
    "UnknownHook",
    "UnknownPlugin",
    "UnsendableValue",
    "WorkerError",
    "WorldError",
]


class AutoweaveError(Exception):
    """Root of every error raised by autoweave-plugins."""


class ConfigError(AutoweaveError, ValueError):
    """Host configuration values are wrong. ``key`` names the first, dotted
    (``worker_pool.min_workers``); ``problems`` holds every ``(key, message)`` found."""

    def __init__(self, key: str, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        self.problems = problems or ((key, message),)
        self.key, self.message = self.problems[0]
        super().__init__("\n".join(f"config {k}: {m}" for k, m in self.problems))

    @classmethod
    def combine(cls, errors: list[ConfigError]) -> ConfigError:
        """One error holding every problem of ``errors`` (at least one)."""
        problems = tuple(p for error in errors for p in error.problems)
        return cls(problems[0][0], problems[0][1], problems)

    def prefixed(self, prefix: str) -> ConfigError:
        """The same problems, each key under ``prefix`` (``host.toml: worker_pool.x``)."""
        problems = tuple((f"{prefix}{k}", m) for k, m in self.problems)
        return ConfigError(problems[0][0], problems[0][1], problems)


@dataclass(frozen=True, slots=True)
class ManifestIssue:
    """One problem in a manifest: where it is (a JSON path) and what to do about it."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line}, column {self.column})" if self.line is not None else ""
        return f"{self.path}: {self.message}{where}"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
            out["column"] = self.column
        return out


class ManifestError(AutoweaveError):
    """A manifest is not valid. ``issues`` lists every problem found, not only the first."""

    def __init__(self, source: str | Path | None, issues: tuple[ManifestIssue, ...]) -> None:
        self.source = str(source) if source is not None else None
        self.issues = issues
        head = f"invalid manifest {self.source}" if self.source else "invalid manifest"
        super().__init__(head + "".join(f"\n  {issue}" for issue in issues))


class DiscoveryError(AutoweaveError):
    """A plugin folder could not be used: ``path`` is the folder, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class InvalidPath(AutoweaveError, ValueError):
    """A filesystem path is malformed: relative, not normalised, NUL, ``..`` or ``/proc``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"invalid path {path!r}: {reason}")
        self.path = path
        self.reason = reason


class InvalidURL(AutoweaveError, ValueError):
    """A URL or URL pattern is malformed, or is refused before any matching is tried."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"invalid URL {url!r}: {reason}")
        self.url = url
        self.reason = reason


class PermissionDenied(AutoweaveError, PermissionError):
    """A plugin tried something its manifest does not grant. ``permission`` names which."""

    def __init__(self, permission: str, message: str) -> None:
        super().__init__(f"{permission}: {message}")
        self.permission = permission
        self.message = message


class PolicyRefused(AutoweaveError):
    """A manifest asks for more than the host's grant policy allows.

    ``permission`` is the JSON path of the refused request (``$.permissions.memory.max_heap_mb``).
    """

    def __init__(self, plugin: str, permission: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r}: {permission}: {message}")
        self.plugin = plugin
        self.permission = permission
        self.message = message


class SandboxUnavailable(AutoweaveError):
    """``strict`` is on and this machine lacks sandbox layers: ``missing`` names them."""

    def __init__(self, missing: tuple[str, ...], detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(f"strict mode: missing sandbox layers: {', '.join(missing)}{extra}")
        self.missing = missing


class WorldError(AutoweaveError):
    """A worker's namespaces or filesystem view could not be built.

    ``step`` is the phase (plan, namespaces, build, identity), ``path`` what it was working
    on. Raised in the worker before any plugin code runs; the worker must then exit.
    """

    def __init__(self, step: str, path: str, reason: str) -> None:
        super().__init__(f"world {step}: {path}: {reason}")
        self.step = step
        self.path = path
        self.reason = reason


class FetchError(AutoweaveError):
    """A brokered HTTP request failed after its URL was allowed: DNS, connect, size, time."""


class WorkerError(AutoweaveError):
    """Base of errors about a plugin's worker process. ``plugin`` names it when known."""

    def __init__(self, message: str, plugin: str | None = None) -> None:
        super().__init__(f"plugin {plugin!r}: {message}" if plugin else message)
        self.plugin = plugin


class ProtocolError(WorkerError):
    """A frame broke the RPC protocol. The worker that sent it is ended."""


class LoadError(WorkerError):
    """The plugin could not be started: sandbox, import of its entry, or its onLoad hook."""

    def __init__(
        self, message: str, plugin: str | None = None, traceback: str | None = None
    ) -> None:
        super().__init__(message, plugin)
        self.traceback = traceback


class LoadTimeout(LoadError):
    """Loading the plugin took longer than its timeout; the worker was killed."""


class DependencyError(LoadError):
    """A plugin named in ``dependencies`` is missing, has a version out of range, or cannot
    load itself; or the dependencies form a cycle. ``dependency`` names the plugin at fault,
    ``cycle`` lists the cycle when there is one. Permanent until the plugins change."""

    def __init__(
        self, message: str, plugin: str, dependency: str, cycle: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, plugin)
        self.dependency = dependency
        self.cycle = cycle


class EntryError(LoadError):
    """The plugin's own code failed to load: importing its entry raised (a ``SyntaxError``, an
    ``ImportError``), a hook names a function the entry does not define, or ``onLoad`` raised.

    Retrying cannot help, so the load is not retried, and its worker ends as ``load_failed``
    (not ``crashed``). ``traceback`` is the plugin's."""


class UnknownHook(WorkerError):
    """The hook is not declared in the manifest, or the entry module lacks its function."""


class HookError(WorkerError):
    """A hook raised, or returned a value that cannot be sent (``returned`` is then True, and
    ``error_type`` is ``UnsendableValue``). ``error_type`` and ``traceback`` are the plugin's."""

    def __init__(
        self,
        plugin: str | None,
        hook: str,
        error_type: str,
        message: str,
        traceback: str,
        *,
        returned: bool = False,
    ) -> None:
        text = (
            f"{hook} returned an unsendable value: {message}"
            if returned
            else f"{hook} raised {error_type}: {message}"
        )
        super().__init__(text, plugin)
        self.returned = returned
        self.hook = hook
        self.error_type = error_type
        self.error_message = message
        self.traceback = traceback


class HookTimeout(WorkerError):
    """A hook overran its timeout. Its worker was killed, since Python code cannot be interrupted."""


class PluginCrashed(WorkerError):
    """The worker process died while this call was in flight. The call is never retried."""


class PluginFailed(WorkerError):
    """The plugin crashed too often: its breaker is open until ``reload`` or a file change."""


class UnknownPlugin(AutoweaveError, KeyError):
    """No plugin of this name is known to the manager. When a folder declaring that name was
    found but rejected, ``rejected_folder`` names it and the message says why."""

    def __init__(
        self,
        name: str,
        known: tuple[str, ...] = (),
        *,
        rejected_folder: str | None = None,
        reason: str = "",
    ) -> None:
        if rejected_folder is not None:
            text = (
                f"folder {rejected_folder} has a plugin named {name!r} but was rejected: {reason}"
            )
        else:
            hint = f"; known: {', '.join(known[:10])}" if known else ""
            text = f"unknown plugin {name!r}{hint}"
        super().__init__(text)
        self.name = name
        self.rejected_folder = rejected_folder

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0])


class UnsendableValue(AutoweaveError, ValueError):
    """A value cannot cross the boundary to a worker: a type outside the value model, a map key
    that is not a string, or more than one frame holds (``limits.max_frame``). Refused by the
    host before anything is sent; the plugin is not blamed. ``where`` names the value
    (``args[0]['k']``)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class UnknownEvent(AutoweaveError, ValueError):
    """An event name that the manager never emits."""


class InvalidUSBEvent(AutoweaveError, ValueError):
    """A USB event has a malformed field; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"USB event {field}: {message}")
        self.field = field
