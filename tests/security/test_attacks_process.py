"""Attack classes 4 to 7: exec, fork bombs, signalling other processes, reading host memory.

The plugin is granted ``subprocess``, ``ctypes``, ``fcntl`` and ``socket`` imports, so the
import allow-list is out of the way and only the kernel layers (seccomp, Landlock) stop it.
Evidence: a marker file that ``touch`` would create in a folder the plugin may write, the
process table, signals counted by a handler in this (host) process, a sibling worker that must
stay alive, and a secret in host memory that must never come back.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from autoweave_plugins.process import WorkerProcess
from autoweave_plugins.roots import worker_tmp_base
from autoweave_plugins.worker.environment import BLAS_VARIABLES
from tests.helpers.processes import descendants, process_exists
from tests.helpers.waiting import plugin_logged, stays_true, wait_until
from tests.helpers.workers import grant_folder, in_world, running, write_plugin
from tests.security._support import (
    CALL_TIMEOUT,
    LOAD_TIMEOUT,
    PRELUDE,
    SIBLING_CODE,
    SIBLING_HOOKS,
    ReusableWorker,
    assert_responsive,
    read_proc,
    restore_scheduling,
    scheduling_of,
    sysv_keys,
    sysv_random_key,
    sysv_remove,
    sysv_segment,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRANTS = ("subprocess", "ctypes", "fcntl", "socket")

PROCESS_CODE = (
    PRELUDE
    + '''
import ctypes
import fcntl
import socket
import subprocess
import threading
import time

import autoweave

libc = ctypes.CDLL(None, use_errno=True)
SYS_CLONE, SYS_EXECVEAT, SYS_TKILL, SYS_TGKILL = 56, 322, 200, 234
SYS_RT_SIGQUEUEINFO, SYS_PIDFD_SEND_SIGNAL, SYS_PIDFD_OPEN = 129, 424, 434
SYS_PROCESS_VM_READV = 310
SIGCHLD = 17
TOUCH = "/usr/bin/touch"


def checked(result):
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result


# --- exec -------------------------------------------------------------------------------

def c_argv(*items):
    return (ctypes.c_char_p * (len(items) + 1))(*[i.encode() for i in items], None)


def ctypes_execve(marker):
    return checked(libc.execve(TOUCH.encode(), c_argv("touch", marker), c_argv()))


def ctypes_execveat(marker):
    return checked(libc.syscall(SYS_EXECVEAT, -100, TOUCH.encode(), c_argv("touch", marker), c_argv(), 0))


def touch_in_child(pid, marker):
    """After a fork: the child (pid 0) becomes touch or exits; the parent gets the pid."""
    if pid == 0:
        try:
            os.execv(TOUCH, ["touch", marker])
        finally:
            os._exit(1)
    return pid


def raw_clone_then_exec(marker):
    return touch_in_child(checked(libc.syscall(SYS_CLONE, SIGCHLD, 0, 0, 0, 0)), marker)


def fork_then_exec(marker):
    return touch_in_child(os.fork(), marker)


def thread_then_exec(marker):
    outcome = {}

    def body():
        outcome.update(attempt(os.execv, TOUCH, ["touch", marker]))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(5)
    if outcome.get("ok") is False:
        raise OSError(outcome.get("errno"), outcome.get("detail"))
    return outcome


def system(marker):
    status = os.system(f"touch {marker}")
    if status != 0:
        raise OSError(f"os.system returned status {status}")
    return status


EXEC_ROUTES = {
    "os_system": system,
    "subprocess_run": lambda m: subprocess.run(["touch", m], check=True, timeout=5),
    "subprocess_shell": lambda m: subprocess.run(f"touch {m}", shell=True, check=True, timeout=5),
    "os_posix_spawn": lambda m: os.posix_spawn(TOUCH, ["touch", m], {}),
    "os_posix_spawnp": lambda m: os.posix_spawnp("touch", ["touch", m], {"PATH": "/usr/bin:/bin"}),
    "os_execv": lambda m: os.execv(TOUCH, ["touch", m]),
    "os_execv_via_ld_so": lambda m: os.execv("/lib64/ld-linux-x86-64.so.2", ["ld.so", TOUCH, m]),
    "ctypes_execve": ctypes_execve,
    "ctypes_execveat": ctypes_execveat,
    "fork_then_exec": fork_then_exec,
    "raw_clone_then_exec": raw_clone_then_exec,
    "thread_then_exec": thread_then_exec,
}


def exec_attack(route, marker):
    return attempt(EXEC_ROUTES[route], marker)


# --- fork bomb --------------------------------------------------------------------------

def fork_bomb(seconds, limit):
    autoweave.log.warning("fork bomb going off")  # leaves at once: the host knows it started
    made = refused = 0
    last_error = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and made + refused < limit:
        try:
            pid = os.fork()
        except OSError as exc:
            refused += 1
            last_error = f"{type(exc).__name__}: {exc}"
            continue
        if pid == 0:
            os._exit(0)  # a contained bomb: children never fork further
        made += 1
    forkpty = attempt(os.forkpty)
    if forkpty["ok"] and forkpty["value"] and "(0," in str(forkpty["value"]):
        os._exit(0)
    return {"made": made, "refused": refused, "last_error": last_error, "forkpty": forkpty}


# --- signals ----------------------------------------------------------------------------

def setown_signal(pid, signum):
    """Make the kernel deliver SIGIO-style signals to ``pid`` when a socket becomes readable."""
    a, b = socket.socketpair()
    fcntl.fcntl(a.fileno(), fcntl.F_SETOWN, pid)
    fcntl.fcntl(a.fileno(), 10, signum)  # F_SETSIG
    flags = fcntl.fcntl(a.fileno(), fcntl.F_GETFL)
    fcntl.fcntl(a.fileno(), fcntl.F_SETFL, flags | os.O_ASYNC)
    b.send(b"wake up")
    time.sleep(0.1)
    KEEP.append((a, b))
    return fcntl.fcntl(a.fileno(), fcntl.F_GETOWN)


def rt_sigqueueinfo(pid, signum):
    info = (ctypes.c_int * 32)()
    info[0], info[2] = signum, -1  # si_signo, si_code = SI_QUEUE
    return checked(libc.syscall(SYS_RT_SIGQUEUEINFO, pid, signum, ctypes.byref(info)))


def pidfd_signal(pid, signum):
    pidfd = checked(libc.syscall(SYS_PIDFD_OPEN, pid, 0))
    return checked(libc.syscall(SYS_PIDFD_SEND_SIGNAL, pidfd, signum, None, 0))


SYS_IOPRIO_SET, IOPRIO_WHO_PROCESS, IOPRIO_CLASS_IDLE = 251, 1, 3


def renice(pid, strong):
    return os.setpriority(os.PRIO_PROCESS, pid, 19 if strong else os.getpriority(os.PRIO_PROCESS, pid) + 1)


SCHED_ROUTES = {
    "setpriority": renice,
    "sched_setaffinity": lambda pid, strong: os.sched_setaffinity(pid, {min(os.sched_getaffinity(pid))}),
    "sched_setscheduler": lambda pid, strong: os.sched_setscheduler(pid, os.SCHED_IDLE if strong else os.SCHED_BATCH, os.sched_param(0)),
    # 'who' 0 means the caller's own uid: every process of the user, siblings included.
    "setpriority_user": lambda pid, strong: os.setpriority(os.PRIO_USER, 0, 1),
    "ioprio_set": lambda pid, strong: checked(libc.syscall(SYS_IOPRIO_SET, IOPRIO_WHO_PROCESS, pid, IOPRIO_CLASS_IDLE << 13)),
}


def sched_attack(route, pid, strong):
    return attempt(SCHED_ROUTES[route], pid, strong)


KEEP = []
SIGNAL_ROUTES = {
    "os_kill": lambda pid, sig: os.kill(pid, sig),
    "os_killpg": lambda pid, sig: os.killpg(os.getpgid(pid), sig),
    "tgkill": lambda pid, sig: checked(libc.syscall(SYS_TGKILL, pid, pid, sig)),
    "tkill": lambda pid, sig: checked(libc.syscall(SYS_TKILL, pid, sig)),
    "rt_sigqueueinfo": rt_sigqueueinfo,
    "pidfd_send_signal": pidfd_signal,
    "fcntl_setown_sigio": setown_signal,
}


def signal_attack(route, pid, signum):
    return attempt(SIGNAL_ROUTES[route], pid, signum)


# --- host memory and environment --------------------------------------------------------

def read(path, offset=0, size=65536):
    with open(path, "rb") as handle:
        if offset:
            handle.seek(offset)
        return handle.read(size)


def vm_readv(pid, address, size):
    class IOVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    buffer = ctypes.create_string_buffer(size)
    local = IOVec(ctypes.cast(buffer, ctypes.c_void_p), size)
    remote = IOVec(address, size)
    checked(libc.syscall(SYS_PROCESS_VM_READV, pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
    return buffer.raw


libc.shmat.restype = ctypes.c_void_p
IPC_CREAT = 0o1000


def shm_attack(key):
    return attempt(shm_read_write, key)


def shm_read_write(key):
    """Attach another process's System V shared memory segment by key, read it, write it."""
    shmid = checked(libc.shmget(key, 0, 0))
    address = libc.shmat(shmid, None, 0)
    if address is None or address == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "shmat refused")
    seen = ctypes.string_at(address, 64)
    ctypes.memmove(address, b"PWNED", 5)
    return seen


def sysv_create(shm_key, msg_key, sem_key, megabytes):
    """Kernel objects that are not files and outlive their creator."""

    def shm():
        size = ctypes.c_size_t(megabytes << 20)
        shmid = checked(libc.shmget(shm_key, size, IPC_CREAT | 0o600))
        address = libc.shmat(shmid, None, 0)
        if address is None or address == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), "shmat refused")
        ctypes.memset(address, 1, megabytes << 20)
        return shmid

    return {
        "shm": attempt(shm),
        "msg": attempt(lambda: checked(libc.msgget(msg_key, IPC_CREAT | 0o600))),
        "sem": attempt(lambda: checked(libc.semget(sem_key, 1, IPC_CREAT | 0o600))),
    }


async def snoop(host_pid, address, size):
    import autoweave

    report = {
        "environ": attempt(read, f"/proc/{host_pid}/environ"),
        "mem": attempt(read, f"/proc/{host_pid}/mem", address, size),
        "cmdline": attempt(read, f"/proc/{host_pid}/cmdline"),
        "process_vm_readv": attempt(vm_readv, host_pid, address, size),
        "own_environ_file": attempt(read, "/proc/self/environ"),
        "os_environ": {"ok": True, "value": dict(os.environ)},
    }
    try:
        await autoweave.read_file(f"/proc/{host_pid}/environ")
        report["sdk_environ"] = {"ok": True}
    except BaseException as exc:
        report["sdk_environ"] = {"ok": False, "error": type(exc).__name__, "detail": str(exc)}
    return report
'''
)
HOOKS = {
    "onExec": "exec_attack",
    "onForkBomb": "fork_bomb",
    "onSignal": "signal_attack",
    "onSnoop": "snoop",
    "onShm": "shm_attack",
    "onSched": "sched_attack",
    "onSysV": "sysv_create",
}
EXEC_ROUTES = [
    "os_system",
    "subprocess_run",
    "subprocess_shell",
    "os_posix_spawn",
    "os_posix_spawnp",
    "os_execv",
    "os_execv_via_ld_so",
    "ctypes_execve",
    "ctypes_execveat",
    "fork_then_exec",
    "raw_clone_then_exec",
    "thread_then_exec",
]
SIGNAL_ROUTES = [
    "os_kill",
    "os_killpg",
    "tgkill",
    "tkill",
    "rt_sigqueueinfo",
    "pidfd_send_signal",
    "fcntl_setown_sigio",
]


@dataclass
class Attacker:
    worker: WorkerProcess
    granted: Path


def _namespace_pid(pid: int) -> int | None:
    """``pid``'s number in its innermost PID namespace, as the host's /proc shows it."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except OSError:
        pass
    return None


def started_by(worker: WorkerProcess) -> set[int]:
    """Processes the plugin started, live or exited, as the host's process table shows them.

    In its own world a worker's tree on the host holds, besides the process the host
    started, the namespace's pid 1 (which runs no plugin code and adopts orphans) and the
    plugin's own process. Anything else below was started by the plugin, even one its parent
    left to pid 1; a plugin can never make a process pid 1 of its namespace.
    """
    assert worker.pid is not None
    own = {worker.plugin_pid}
    tree = descendants(worker.pid, zombies=True)
    if in_world(worker):
        own |= {pid for pid in tree if _namespace_pid(pid) == 1}
    return tree - own


def refusals(worker: WorkerProcess) -> set[str]:
    """How a signal to another worker's or the host's pid fails: seccomp and Landlock refuse
    it (EPERM); in its own world a route that looks the pid up first (``getpgid``) finds no
    such process in its PID namespace (ESRCH)."""
    return {"PermissionError", "ProcessLookupError"} if in_world(worker) else {"PermissionError"}


def _worker_pids(worker: WorkerProcess) -> list[int]:
    """The pids a sibling's life depends on: the process the host started and the plugin's."""
    assert worker.pid is not None and worker.plugin_pid is not None
    return sorted({worker.pid, worker.plugin_pid})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def _attacker_holder(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[ReusableWorker, Path]]:
    base = tmp_path_factory.mktemp("process-attacks")
    granted = grant_folder(base / "granted")
    plugin = write_plugin(
        base / "plugins",
        "process-attacker",
        PROCESS_CODE,
        hooks=HOOKS,
        permissions={"filesystem": [{"path": str(granted), "mode": "readwrite"}]},
    )
    holder = ReusableWorker(plugin, GRANTS)
    try:
        yield holder, granted
    finally:
        await holder.close()


@pytest_asyncio.fixture(loop_scope="module")
async def attacker(_attacker_holder: tuple[ReusableWorker, Path]) -> Attacker:
    """The module's attacker worker (stateless routes), replaced if an attack ended it."""
    holder, granted = _attacker_holder
    return Attacker(await holder.ensure(), granted)


@pytest.mark.parametrize("route", EXEC_ROUTES)
async def test_no_exec(attacker: Attacker, sibling: WorkerProcess, route: str) -> None:
    assert os.access("/usr/bin/touch", os.X_OK), "the exec tests need /usr/bin/touch"
    # The marker goes where the plugin (and so anything it starts) may write: if a program ran,
    # nothing but the exec ban would have stopped it from creating the file.
    worker = attacker.worker
    marker = attacker.granted / f"touched-{route}"
    assert worker.pid is not None
    report = await worker.call("onExec", route, str(marker), timeout=CALL_TIMEOUT)
    started = started_by(worker)
    # A program the attack did start writes its marker before it exits: look once all are gone.
    await wait_until(
        lambda: not any(process_exists(p) for p in started), "what the attack started exits"
    )
    assert not marker.exists(), report
    assert started == set(), report
    assert worker.alive and all(process_exists(p) for p in _worker_pids(worker)), report
    assert report["ok"] is False, report
    # The exec itself is refused (seccomp), not the path: in its own world no program exists
    # to run (ENOENT, FileNotFoundError), so a PermissionError here is still seccomp's.
    assert report["error"] in ("PermissionError", "OSError"), report
    await assert_responsive(sibling)


async def test_fork_bomb_is_contained(
    attacker: Attacker, sibling: WorkerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    worker = attacker.worker
    assert worker.pid is not None
    bomb = asyncio.ensure_future(worker.call("onForkBomb", 1.0, 20000, timeout=CALL_TIMEOUT))
    await plugin_logged(caplog, "process-attacker", "fork bomb going off")
    await assert_responsive(sibling)  # the host stays responsive while the bomb goes off
    report = await bomb
    assert started_by(worker) == set(), report
    assert report["made"] == 0, report
    assert report["refused"] > 0 and "PermissionError" in report["last_error"], report
    assert report["forkpty"]["ok"] is False, report
    # The bomber itself is still a healthy worker, and the host is fine.
    assert (await worker.ping(timeout=2))["tasks"] == 0
    await assert_responsive(sibling)


@pytest.mark.parametrize("route", SIGNAL_ROUTES)
async def test_cannot_signal_the_host(
    attacker: Attacker, sibling: WorkerProcess, host_sigusr1: list[int], route: str
) -> None:
    report = await attacker.worker.call(
        "onSignal", route, os.getpid(), int(signal.SIGUSR1), timeout=CALL_TIMEOUT
    )
    # A signal in flight would be handled within this window (the control test shows how
    # soon). Signals carry no sender and coalesce, so no sentinel could close it sooner.
    await stays_true(
        lambda: host_sigusr1 == [], f"no SIGUSR1 reached the host: {report}", seconds=0.1
    )
    await assert_responsive(sibling)
    if route != "fcntl_setown_sigio":  # F_SETOWN itself is accepted; no signal ever arrives
        assert report["ok"] is False and report["error"] in refusals(attacker.worker), report


@pytest.mark.parametrize("route", SIGNAL_ROUTES)
async def test_cannot_kill_a_sibling_worker(
    attacker: Attacker, sibling: WorkerProcess, route: str
) -> None:
    # Both processes a sibling lives by: the one the host started and the one running its
    # plugin (the same process without a world). In its own world the attacker cannot even
    # name them (ESRCH: another PID namespace); without one seccomp and Landlock refuse.
    reports = {}
    for target in _worker_pids(sibling):
        reports[target] = await attacker.worker.call(
            "onSignal", route, target, int(signal.SIGKILL), timeout=CALL_TIMEOUT
        )
    # Evidence: the sibling answers after the attacks returned. A SIGKILL sent before then
    # would have ended it before it could run another instruction.
    await assert_responsive(sibling)
    assert all(process_exists(target) for target in reports), reports
    assert sibling.alive, (sibling.exit_reason, reports)
    if route != "fcntl_setown_sigio":
        assert all(report["ok"] is False for report in reports.values()), reports
        errors = {report["error"] for report in reports.values()}
        assert errors <= refusals(attacker.worker), reports


async def test_cannot_read_host_memory_or_environment(
    attacker: Attacker, sibling: WorkerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "HOST-SECRET-" + secrets.token_hex(16)
    monkeypatch.setenv("AUTOWEAVE_SECURITY_SECRET", secret)
    # Where the secret's characters live in this process, proved readable here (control).
    address = id(secret) + sys.getsizeof("") - 1
    assert ctypes.string_at(address, len(secret)) == secret.encode()
    own_environ = read_proc(f"/proc/{os.getpid()}/environ")
    assert own_environ is not None
    host_environ = [entry for entry in own_environ.split(b"\0") if len(entry) >= 12]
    worker = attacker.worker
    assert worker.pid is not None
    report = await worker.call("onSnoop", os.getpid(), address, 4096, timeout=CALL_TIMEOUT)
    # The worker's own initial environment, read from outside (None if not permitted).
    assert worker.plugin_pid is not None
    worker_environ = read_proc(f"/proc/{worker.plugin_pid}/environ")
    text = repr(report)
    assert secret not in text, report
    leaked = [entry for entry in host_environ if entry.decode("utf-8", "replace") in text]
    assert leaked == [], leaked
    for route in ("environ", "mem", "cmdline", "process_vm_readv", "sdk_environ"):
        assert report[route]["ok"] is False, (route, report[route])
    assert report["sdk_environ"]["error"] == "PermissionDenied"
    # The worker runs with an empty environment: nothing of the host's, not even PATH. It sets
    # only its own temp folder and the BLAS thread counts (worker/environment.py), to exactly
    # the values of its spec. In its own world the temp folder is the private tmpfs at /tmp.
    environ = dict(report["os_environ"]["value"])
    tmp_dir = environ.pop("TMPDIR", "")
    if in_world(worker):
        assert tmp_dir == "/tmp", environ
    else:
        assert tmp_dir.startswith(worker_tmp_base() + "/"), environ
    assert {environ.pop(name, "1") for name in BLAS_VARIABLES} == {"1"}, environ
    assert set(environ) <= {"LC_CTYPE"}, report["os_environ"]
    assert "AUTOWEAVE_SECURITY_SECRET" not in report["os_environ"]["value"]
    if worker_environ is not None:
        assert worker_environ == b"", worker_environ
    await assert_responsive(sibling)


async def test_signal_oracle_sees_a_benign_self_signal(host_sigusr1: list[int]) -> None:
    """Control for the signal tests: the handler counts a real SIGUSR1 within the wait used."""
    os.kill(os.getpid(), signal.SIGUSR1)
    await wait_until(lambda: bool(host_sigusr1), "the SIGUSR1 is handled", timeout=0.2)
    assert host_sigusr1 == [signal.SIGUSR1]


async def test_cannot_touch_host_sysv_shared_memory(
    attacker: Attacker, sibling: WorkerProcess
) -> None:
    """System V IPC is not a path, so Landlock does not see it; only seccomp can refuse it."""
    secret = ("SHM-SECRET-" + secrets.token_hex(8)).encode()
    with sysv_segment(secret) as (key, read_back):
        report = await attacker.worker.call("onShm", key, timeout=CALL_TIMEOUT)
        # Evidence in the host's own segment: untouched, and its bytes never came back.
        assert read_back() == secret, read_back()
    assert secret.decode() not in repr(report), report
    assert report["ok"] is False, report
    await assert_responsive(sibling)


async def test_no_kernel_objects_outlive_the_worker(
    plugin_root: Path, sibling: WorkerProcess
) -> None:
    """Segments, queues and semaphores would escape RLIMIT_DATA and outlive the worker."""
    keys = {kind: sysv_random_key() for kind in ("shm", "msg", "sem")}
    plugin = write_plugin(plugin_root, "ipc-squatter", PROCESS_CODE, hooks=HOOKS)
    try:
        async with running(plugin, extra_imports=GRANTS, load_timeout=LOAD_TIMEOUT) as worker:
            report = await worker.call(
                "onSysV", keys["shm"], keys["msg"], keys["sem"], 64, timeout=CALL_TIMEOUT
            )
        # Evidence after the worker is gone: the kernel lists nothing it created.
        left = {kind: key for kind, key in keys.items() if key in sysv_keys(kind)}
    finally:
        for kind, key in keys.items():
            sysv_remove(kind, key)
    await assert_responsive(sibling)
    assert left == {}, (left, report)
    assert all(outcome["ok"] is False for outcome in report.values()), report


SCHED_ROUTES = ["setpriority", "sched_setaffinity", "sched_setscheduler", "ioprio_set"]


@pytest_asyncio.fixture(loop_scope="module")
async def victim(plugin_root: Path) -> AsyncIterator[WorkerProcess]:
    """A benign worker of its own, since a successful attack would leave it crippled."""
    plugin = write_plugin(plugin_root, "victim", SIBLING_CODE, hooks=SIBLING_HOOKS)
    async with running(plugin, load_timeout=LOAD_TIMEOUT) as worker:
        yield worker


@pytest.mark.parametrize("route", SCHED_ROUTES)
async def test_cannot_reschedule_the_host(
    attacker: Attacker, sibling: WorkerProcess, route: str
) -> None:
    saved = scheduling_of(os.getpid())
    try:
        report = await attacker.worker.call(
            "onSched", route, os.getpid(), False, timeout=CALL_TIMEOUT
        )
        after = scheduling_of(os.getpid())
    finally:
        restore_scheduling(saved)
    assert after == saved, (after, saved, report)
    assert report["ok"] is False, report
    await assert_responsive(sibling)


@pytest.mark.parametrize("route", SCHED_ROUTES)
async def test_cannot_reschedule_a_sibling_worker(
    attacker: Attacker, victim: WorkerProcess, route: str
) -> None:
    """The kernel allows these between processes of the same uid when the target has no more
    capabilities than the caller, which every sibling worker (and any non-root host) meets."""
    targets = _worker_pids(victim)
    before = {pid: scheduling_of(pid) for pid in targets}
    reports = {}
    for pid in targets:
        reports[pid] = await attacker.worker.call("onSched", route, pid, True, timeout=CALL_TIMEOUT)
    # Evidence read by the host from the kernel: the victim is scheduled as before.
    after = {pid: scheduling_of(pid) for pid in targets}
    assert after == before, (after, before, reports)
    assert all(report["ok"] is False for report in reports.values()), reports


@pytest.mark.skipif(
    os.geteuid() != 0, reason="as a non-root user this would renice every process of the user"
)
async def test_cannot_renice_every_process_of_the_user(
    attacker: Attacker, victim: WorkerProcess
) -> None:
    # The plugin's process is the one that shares the attacker's uid on the host (65534 in
    # a world, whatever uid 0 it has inside), so it is the one PRIO_USER would reach.
    targets = _worker_pids(victim)
    before = {pid: scheduling_of(pid) for pid in targets}
    report = await attacker.worker.call(
        "onSched", "setpriority_user", 0, False, timeout=CALL_TIMEOUT
    )
    # Evidence read by the host from the kernel, whatever the plugin's call returned.
    after = {pid: scheduling_of(pid) for pid in targets}
    assert after == before, (after, before, report)
