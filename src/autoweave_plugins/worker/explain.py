"""What a refusal means, said in the error the plugin sees: the layer, and the fix.

The kernel layers answer with bare errnos (``[Errno 13] Permission denied``, ``[Errno 1]``) and
glibc turns a refused ``system()`` into a silent 32512. ``Explainer`` turns each into a note
(``BaseException.add_note``, so the type and errno a library tests for stay the same) that
names the sandbox layer that refused and what would allow it: the manifest permission, the
host setting, or the sandbox's own way (``autoweave.fetch``, the private temp folder).

Notes are added where the error is raised, by the wrappers of ``refusals.py``, so plugin code
that catches the error sees them; and again, for whatever no wrapper saw, by ``annotate`` at the
hook boundary, before the error travels to the host. Every note starts with ``NOTE_PREFIX``, so
none is added twice.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass

from autoweave_plugins.rpc import WorkerSpec
from autoweave_plugins.sandbox.imports import PROCESS_REFUSAL
from autoweave_plugins.sandbox.rlimits import THREAD_STACK_BYTES
from autoweave_plugins.sandbox.world import SYSTEM_DATA, runtime_paths

__all__ = ["NOTE_PREFIX", "Explainer", "add_note_once"]

NOTE_PREFIX = "autoweave sandbox"
REFUSED = frozenset((errno.EACCES, errno.EPERM))
LANDLOCK = "filesystem layer, Landlock"
MOUNTS = "filesystem layer, mount namespace"
MAX_CHAIN = 32
GERUNDS = {"write": "writing", "read": "reading", "use": "reading and writing"}
PROCESS_MODULES = (os.sep + "multiprocessing" + os.sep, os.sep + "concurrent" + os.sep + "futures")


def add_note_once(exc: BaseException, note: str) -> None:
    """Add ``note`` unless the exception already carries a sandbox note (or plugin code made
    its ``__notes__`` something other than a list, which ``add_note`` would refuse)."""
    notes = getattr(exc, "__notes__", [])
    if isinstance(notes, list) and not any(
        isinstance(n, str) and n.startswith(NOTE_PREFIX) for n in notes
    ):
        exc.add_note(note)


def _contains(parent: str, child: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def _shown(path: object) -> str | None:
    if isinstance(path, bytes):
        return os.fsdecode(path)
    return path if isinstance(path, str) else None


@dataclass(frozen=True, slots=True)
class Explainer:
    """The messages for one plugin's worker, built from its spec."""

    plugin: str
    folder: str
    grants: tuple[tuple[str, str], ...]
    tmp_dir: str
    max_heap_mb: int
    max_threads: int
    view: tuple[str, ...] = ()
    """What exists in the worker's own view (its mount namespace); empty without one."""

    @classmethod
    def for_spec(cls, spec: WorkerSpec) -> Explainer:
        grants = tuple((os.path.realpath(p), m) for p, m in spec.filesystem)
        view: tuple[str, ...] = ()
        if spec.own_view:
            shown = [spec.folder, spec.tmp_dir, *spec.environment_roots, *runtime_paths()]
            shown += [path for path, _mode in grants] + list(SYSTEM_DATA) + ["/dev", "/proc"]
            view = tuple(path for path in shown if path)
        return cls(
            spec.plugin,
            os.path.realpath(spec.folder),
            grants,
            spec.tmp_dir,
            spec.max_heap_mb,
            spec.max_threads,
            view,
        )

    # --- the messages ------------------------------------------------------------------------

    def filesystem(self, path: str, write: bool | None, layer: str = LANDLOCK) -> str:
        """Why the filesystem layer refused write (True), read (False) or some access (None)
        to ``path``."""
        head = f"{NOTE_PREFIX} ({layer}): "
        wanted = {True: "write", False: "read", None: "use"}[write]
        resolved = os.path.realpath(path)
        containing = [(p, m) for p, m in self.grants if _contains(p, resolved)]
        if containing:
            root, mode = max(containing, key=lambda grant: len(grant[0]))
            if mode == "readwrite" or mode == wanted:  # the sandbox allows this access
                return head + (
                    f"{path!r} is inside the grant {root!r} ({mode}); the refusal comes from "
                    "the file's own permissions, not the sandbox"
                )
            return head + (
                f"{path!r} is inside {root!r}, which this plugin may only {mode}; "
                f'"mode": "readwrite" for it in permissions.filesystem would allow {GERUNDS[wanted]}'
            )
        if _contains(self.folder, resolved):
            return head + (
                f"{path!r} is in the plugin's own folder, which is read-only; write to a "
                f"declared path (permissions.filesystem) or to the private temp folder "
                f"({self.tmp_dir or 'tempfile.gettempdir()'})"
            )
        if self.tmp_dir and _contains(self.tmp_dir, resolved):
            return head + (
                f"{path!r} is in the private temp folder, which is granted readwrite; "
                "the refusal comes from the file's own permissions, not the sandbox"
            )
        return (
            head
            + f"{path!r} is outside this plugin's filesystem grants; "
            + self._grant(path, write)
        )

    @staticmethod
    def _grant(path: str, write: bool | None) -> str:
        wanted = {True: "write", False: "read", None: "use"}[write]
        suggested = path if os.path.isdir(path) or not write else os.path.dirname(path) or path
        mode = {True: "readwrite", False: "read", None: "read or readwrite"}[write]
        return (
            f'to {wanted} it, declare "permissions": {{"filesystem": [{{"path": "{suggested}", '
            f'"mode": "{mode}"}}]}} in the manifest (the host grants paths only under its '
            "policy.allowed_roots)"
        )

    def in_view(self, path: str) -> bool:
        """``path`` lies in the worker's own view (always true without one)."""
        if not self.view:
            return True
        resolved = os.path.normpath(os.path.join(os.getcwd(), path))
        return any(_contains(root, resolved) for root in self.view)

    def absent(self, path: str, write: bool | None) -> str:
        """Why ``path`` does not exist for the plugin: it is outside its view."""
        return (
            f"{NOTE_PREFIX} ({MOUNTS}): "
            + (
                f"{path!r} does not exist in this plugin's view of the filesystem, which holds only "
                "its own folder, its grants, the Python runtime, system data and a private /tmp; "
            )
            + self._grant(path, write)
        )

    def file_note(self, error: OSError, write: bool | None) -> str | None:
        """The note for a failed file call, if the sandbox is why: ``write`` says whether it
        wrote (None: unknown)."""
        source, target = _shown(error.filename), _shown(error.filename2)
        if error.errno == errno.EXDEV and source and target:
            return self.moved(source, target)
        if error.errno in REFUSED or error.errno == errno.EROFS:
            layer = MOUNTS if error.errno == errno.EROFS else LANDLOCK
            if source and target:  # a move or a link: explain the end the sandbox refuses
                culprit = source if not self.writable(source) else target
                return self.filesystem(culprit, True, layer)
            if source:
                return self.filesystem(source, True if error.errno == errno.EROFS else write, layer)
        if error.errno == errno.ENOENT:
            outside = [path for path in (source, target) if path and not self.in_view(path)]
            if outside:
                return self.absent(outside[0], write if len(outside) == 1 else True)
        return None

    @staticmethod
    def special_file(path: str) -> str:
        return (
            f"{NOTE_PREFIX} (filesystem layer, Landlock): {path!r}: a plugin may not make "
            "symlinks, FIFOs, sockets or device nodes, even inside its grants; plain files and "
            "folders only (a symlink could lead the host or another program out of the grant)"
        )

    def writable(self, path: str) -> bool:
        """The sandbox lets this plugin write ``path`` (its temp folder or a writable grant)."""
        resolved = os.path.realpath(path)
        modes = [(len(p), m) for p, m in self.grants if _contains(p, resolved)]
        if self.tmp_dir and _contains(self.tmp_dir, resolved):
            modes.append((len(self.tmp_dir), "readwrite"))  # a grant inside it is more specific
        return bool(modes) and max(modes)[1] in ("write", "readwrite")

    def moved(self, source: str, target: str) -> str:
        return (
            f"{NOTE_PREFIX} (filesystem layer, Landlock): moving {source!r} to {target!r} is "
            "refused because the file would leave its grant or gain rights there; renaming "
            "inside one writable grant works, and shutil.move copies instead"
        )

    @staticmethod
    def processes(what: str) -> str:
        return f"{NOTE_PREFIX} (process layer, seccomp): {what}: {PROCESS_REFUSAL}"

    @staticmethod
    def semaphores() -> str:
        return (
            f"{NOTE_PREFIX} (filesystem layer, Landlock): multiprocessing's locks, queues and "
            "pools (multiprocessing.dummy.Pool too) need POSIX semaphores shared between "
            "processes, in /dev/shm, which a plugin cannot have; use threading, queue and "
            "concurrent.futures.ThreadPoolExecutor"
        )

    @staticmethod
    def network(host: object = None, port: object = None) -> str:
        head = f"{NOTE_PREFIX} (network layer): network access goes through autoweave.fetch"
        if not isinstance(host, str | bytes) or not host:
            return head + (
                "; a plugin cannot open sockets of its own. Call `await autoweave.fetch(url)` "
                "and declare the URL's pattern in permissions.network.outbound"
            )
        name = host.decode("ascii", "replace") if isinstance(host, bytes) else host
        name = f"[{name}]" if ":" in name else name
        scheme = "http" if port in (80, "80", "http") else "https"
        default = {"http": (80, "80", "http"), "https": (443, "443", "https", None)}[scheme]
        authority = name if port in default else f"{name}:{port}"
        return head + (
            f": a plugin cannot open sockets of its own. To reach {authority}, call "
            f"`await autoweave.fetch('{scheme}://{authority}/...')` and declare the outbound "
            f"pattern '{scheme}://{authority}/*' in permissions.network.outbound"
        )

    def memory(self) -> str:
        return (
            f"{NOTE_PREFIX} (memory layer, RLIMIT_DATA): this plugin's heap is capped at "
            f"memory.max_heap_mb = {self.max_heap_mb} MB (each thread's stack takes "
            f"{THREAD_STACK_BYTES >> 20} MiB of it); ask for more with "
            '"permissions": {"memory": {"max_heap_mb": ...}} in the manifest, up to the '
            "host's policy.max_heap_mb"
        )

    def threads(self) -> str:
        return (
            f"{NOTE_PREFIX} (thread cap, RLIMIT_NPROC): this plugin may start "
            f"memory.max_threads = {self.max_threads} threads, and each one's stack takes "
            f"{THREAD_STACK_BYTES >> 20} MiB of memory.max_heap_mb = {self.max_heap_mb} MB; "
            "raise either in the manifest's permissions.memory"
        )

    # --- the boundary ------------------------------------------------------------------------

    def annotate(self, exc: BaseException) -> BaseException:
        """Add notes to ``exc`` and the errors it carries, as far as they can be explained."""
        for error in _chain(exc):
            note = self._explain(error)
            if note is not None:
                add_note_once(error, note)
        return exc

    def _explain(self, error: BaseException) -> str | None:
        if isinstance(error, MemoryError):
            return self.memory()
        if isinstance(error, RuntimeError) and "can't start new thread" in str(error):
            return self.threads()
        if not isinstance(error, OSError):
            return None
        if _raised_in(error, PROCESS_MODULES):
            return self.processes("multiprocessing and ProcessPoolExecutor")
        return self.file_note(error, None)


def _raised_in(error: BaseException, fragments: tuple[str, ...]) -> bool:
    frame = error.__traceback__
    while frame is not None:
        if any(part in frame.tb_frame.f_code.co_filename for part in fragments):
            return True
        frame = frame.tb_next
    return False


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the members of exception groups: each once."""
    seen: set[int] = set()
    pending = [exc]
    while pending and len(seen) < MAX_CHAIN:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
