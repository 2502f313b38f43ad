"""The worker's seccomp filter: a deny list on top of an allow-by-default policy.

Denied with EPERM: every way to run a program or create a process (execve, execveat, fork,
vfork, clone without CLONE_THREAD), debugging and cross-process memory access, namespaces and
mounts, kernel keyrings, BPF, perf, userfaultfd, io_uring (which would bypass this filter),
module and kexec loading, raising rlimits, handle-based opens, and signals to any process but
itself. ``clone3`` gets ENOSYS: its flags live in memory a filter cannot read, and glibc then
falls back to ``clone``, which is filtered on CLONE_THREAD so threads keep working.

``socket()`` is denied for every family, AF_UNIX included, a deliberate step beyond DESIGN §3:
on Landlock ABI < 9 connecting to a *pathname* unix socket (``/run/docker.sock``) is not
restricted, and the worker never needs a new socket: its RPC channel and any inbound listener
are handed over by the host as file descriptors. For the same reason ``connect``, ``bind``,
``sendto`` with an address and non-stream ``socketpair`` are denied.

Also denied, for what Landlock (ABI <= 7) and rlimits do not cover: inode metadata changes
(chmod, chown, utimes, xattrs) anywhere, and memory that RLIMIT_DATA does not count (shared
anonymous mappings, memfd) and System V / POSIX IPC objects, which outlive the worker and are
shared with its siblings; and changing the priority, CPU affinity, scheduler or I/O priority of
any process but itself, which the kernel allows between processes of the same uid; and
inotify/fanotify, which would let it watch directories it may not open.

Closed after the red team's pass (issue 9):

- ``prctl`` answers only an allow-list of options (names, and reading state); everything else
  gets EPERM. ``PR_SET_PDEATHSIG`` above all: clearing it let a worker outlive a host killed
  with SIGKILL. The option is compared as the full 64-bit register, as the filter sees it, so
  high bits the kernel truncates away cannot smuggle a denied option past an equality test.
- Memory that is not "data" to the kernel, so RLIMIT_DATA never sees it: ``MAP_GROWSDOWN``
  mappings, and ``mremap`` of the main thread's stack, which splits a page off the stack and
  grows it to any size with the stack's accounting. The filter cannot see which mapping an
  address belongs to, but it can compare the address: the stack lives in a zone of its own at
  the top of the address space (it can grow down at most RLIMIT_STACK, capped in rlimits.py),
  far above every ordinary mapping, so mremap is denied from that zone up and allowed below,
  where glibc's realloc uses it (denying it outright made growing a 256 MiB bytearray 9x
  slower). Without a readable stack address, mremap is denied everywhere.
- Kernel AIO (``io_setup`` and friends) gets ENOSYS, as io_uring: contexts count against the
  machine-wide ``aio-nr`` and one plugin could fill it. Libraries fall back to threads.
- ``listmount``/``statmount`` (the whole mount table), ``open_tree_attr``, the LSM self-attribute
  calls, ``file_setattr`` and the ``*xattrat`` calls, ``quotactl_fd``, ``uselib`` and
  ``modify_ldt``: nothing a plugin needs. Calls newer than the system libseccomp are denied by
  number where the number is known for this architecture.
- Every set*id call and ``setgroups``: the worker's real uid is what RLIMIT_NPROC counts
  (threads.py), so it must not change it back.

The filter is built with libseccomp, then compiled once to its classic BPF program
(``Program``, libseccomp's own output) and installed with one ``seccomp(2)`` call:
``seccomp_load`` regenerates the program from the rule set at every load, which cost each
worker forked from the template 0.85 ms and ~260 KB of copied pages. libseccomp offers no
call that installs an exported program, so that one syscall is made here.
"""

from __future__ import annotations

import ctypes
import errno
import os

from autoweave_plugins.sandbox import kernel
from autoweave_plugins.sandbox.native import sonames_only
from autoweave_plugins.sandbox.rlimits import MAX_STACK_BYTES

with sonames_only():  # pyseccomp looks up its libraries at import: by soname, running nothing
    import pyseccomp as sc

__all__ = [
    "DENIED_SYSCALLS",
    "NOSYS_SYSCALLS",
    "PRCTL_ALLOWED",
    "Program",
    "build_filter",
]

DENIED_SYSCALLS = (
    "execve", "execveat", "fork", "vfork",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "pidfd_open",
    "pidfd_send_signal", "process_madvise",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr",
    "bpf", "keyctl", "add_key", "request_key", "perf_event_open", "userfaultfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at", "setrlimit", "quotactl", "swapon", "swapoff",
    "reboot", "acct", "settimeofday", "clock_settime", "adjtimex", "iopl", "ioperm", "syslog",
    "personality", "tkill", "vhangup", "lookup_dcookie",
    # Sockets: none may be created, connected or bound; the channel and any inbound listener
    # arrive already made (see below for socketpair and sendto). listen() stays allowed:
    # asyncio calls it again on the listener it is given, and no other socket can listen.
    "socket", "connect", "bind",
    # Inode metadata, which Landlock (ABI <= 7) does not govern: without these a plugin could
    # chmod, chown, re-time or tag any file its uid owns, through a path or a read-only fd.
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "futimesat", "utimensat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "setxattrat", "removexattrat",
    # Memory that RLIMIT_DATA does not count, and IPC objects that outlive the worker and are
    # shared with every process of the IPC namespace (siblings included).
    "memfd_create", "memfd_secret",
    # Watching files is not opening them, so Landlock (ABI <= 7) does not check it.
    "inotify_init", "inotify_init1", "inotify_add_watch", "fanotify_init", "fanotify_mark",
    "shmget", "shmat", "shmctl", "shmdt", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semtimedop", "semctl",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    # Memory with the stack's accounting (see the docstring), and identities.
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
    "setfsgid", "setgroups", "capset",
    # The mount table, LSM state, attributes and quotas through newer entry points.
    "listmount", "statmount", "open_tree_attr", "lsm_get_self_attr", "lsm_set_self_attr",
    "lsm_list_modules", "file_setattr", "quotactl_fd", "uselib", "modify_ldt",
)  # fmt: skip
NOSYS_SYSCALLS = (
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    "clone3",
)  # fmt: skip
"""Answered ENOSYS, so libraries fall back (glibc's clone3 to clone, AIO users to threads)."""
# Numbers of calls that older libseccomp releases cannot name. From 424 on, x86_64 and the
# generic table (aarch64, riscv64) share numbers.
UNIFIED_ARCHS = frozenset((sc.Arch.X86_64, sc.Arch.AARCH64, sc.Arch.RISCV64))
NEW_SYSCALLS = {
    "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459, "lsm_set_self_attr": 460,
    "lsm_list_modules": 461, "setxattrat": 463, "removexattrat": 466, "open_tree_attr": 467,
    "file_setattr": 469,
}  # fmt: skip
PRCTL_ALLOWED = frozenset((
    2, 3, 5, 7, 9, 11, 13,  # PR_GET_PDEATHSIG, _DUMPABLE, _UNALIGN, _KEEPCAPS, _FPEMU, _FPEXC, _TIMING
    15, 16,  # PR_SET_NAME, PR_GET_NAME: thread names
    19, 21, 23, 25, 27, 30,  # PR_GET_ENDIAN, _SECCOMP, PR_CAPBSET_READ, GET_TSC, _SECUREBITS, _TIMERSLACK
    34, 37, 39, 40, 42, 46,  # PR_MCE_KILL_GET, GET_CHILD_SUBREAPER, _NO_NEW_PRIVS, _TID_ADDRESS, _THP_DISABLE, _FP_MODE
    52, 56, 58, 66, 68, 74,  # PR_GET_SPECULATION_CTRL, _TAGGED_ADDR_CTRL, _IO_FLUSHER, _MDWE, _MEMORY_MERGE, _SHADOW_STACK_STATUS
))  # fmt: skip
"""prctl options a worker may use: its threads' names and reading its own state. Neither
CPython 3.11 nor glibc 2.36 calls any other after the sandbox is on (checked with strace)."""
PRCTL_OPTION_SPACE = 256  # every option but PR_SET_PTRACER/PR_SET_VMA/PR_GET_AUXV is below it
CLONE_THREAD = 0x00010000
PRIO_PROCESS = 0
IOPRIO_WHO_PROCESS = 1
# (syscall, index of its pid argument) for calls that may only target the caller (pid 0).
SELF_ONLY = (
    ("setpriority", 1), ("ioprio_set", 1), ("sched_setaffinity", 0), ("sched_setscheduler", 0),
    ("sched_setparam", 0), ("sched_setattr", 0), ("migrate_pages", 0), ("move_pages", 0),
    ("get_robust_list", 0), ("process_mrelease", 0),
)  # fmt: skip
MAP_SHARED = 0x01
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x0100
STACK_GUARD_GAP = 1 << 20  # the kernel's default stack_guard_gap: 256 pages
ALL_BITS = (1 << 64) - 1
SOCK_TYPE_MASK = 0xF
NON_STREAM_TYPES = (2, 3, 4, 5)  # SOCK_DGRAM, SOCK_RAW, SOCK_RDM, SOCK_SEQPACKET


def main_stack_zone() -> int | None:
    """The lowest address the main thread's stack can ever reach, or None if unknown."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("[stack]"):
                    low, high = (int(part, 16) for part in line.split()[0].split("-"))
                    return max(0, min(low, high - MAX_STACK_BYTES) - STACK_GUARD_GAP)
    except (OSError, ValueError):
        pass
    return None


def _aligned_blocks(low: int, high: int) -> list[tuple[int, int]]:
    """[low, high) as aligned power-of-two blocks (value, size): one MASKED_EQ test each."""
    blocks = []
    while low < high:
        size = low & -low if low else 1 << (high - 1).bit_length()
        while low + size > high:
            size //= 2
        blocks.append((low, size))
        low += size
    return blocks


def _number(arch: int, name: str) -> int | None:
    number = int(sc.resolve_syscall(arch, name))
    if number >= 0:
        return number
    if arch in UNIFIED_ARCHS and name in NEW_SYSCALLS:
        return NEW_SYSCALLS[name]
    return None  # older libseccomp, and a number we do not know here: cannot be filtered


def _deny_prctl_outside_allow_list(flt: sc.SyscallFilter, deny: int) -> None:
    """EPERM for every prctl option not in PRCTL_ALLOWED, compared on all 64 bits."""
    flt.add_rule(deny, "prctl", sc.Arg(0, sc.GE, PRCTL_OPTION_SPACE))
    start = 0
    for allowed in [*sorted(PRCTL_ALLOWED), PRCTL_OPTION_SPACE]:
        for value, size in _aligned_blocks(start, allowed):
            flt.add_rule(deny, "prctl", sc.Arg(0, sc.MASKED_EQ, ALL_BITS & ~(size - 1), value))
        start = allowed + 1


def build_filter(pid: int | None = None) -> tuple[sc.SyscallFilter, dict[str, object]]:
    """Build (not load) the filter. Depends only on this process's ``pid`` (default: its
    own), so a blank worker builds it ahead of assignment, and a template once for every
    worker that will be pid 1 of its own PID namespace. Returns the filter and a report of
    what it denies."""
    arch = sc.system_arch()
    deny = sc.ERRNO(errno.EPERM)
    flt = sc.SyscallFilter(sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)  # 32-bit entry points are not filtered
    flt.set_attr(sc.Attr.CTL_TSYNC, 1)
    unknown = []
    denied = 0
    for names, action in ((DENIED_SYSCALLS, deny), (NOSYS_SYSCALLS, sc.ERRNO(errno.ENOSYS))):
        for name in names:
            number = _number(arch, name)
            if number is None:
                unknown.append(name)
                continue
            flt.add_rule(action, number)
            denied += 1
    flt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    _deny_prctl_outside_allow_list(flt, deny)
    # Raising a limit needs a new value (arg 2); reading one passes NULL.
    flt.add_rule(deny, "prlimit64", sc.Arg(2, sc.NE, 0))
    # Signals only to itself: kill(pid) and tgkill(tgid) must name this process.
    pid = os.getpid() if pid is None else pid
    flt.add_rule(deny, "kill", sc.Arg(0, sc.NE, pid))
    flt.add_rule(deny, "tgkill", sc.Arg(0, sc.NE, pid))
    flt.add_rule(deny, "rt_sigqueueinfo", sc.Arg(0, sc.NE, pid))
    flt.add_rule(deny, "rt_tgsigqueueinfo", sc.Arg(0, sc.NE, pid))
    # Scheduling and memory placement of other processes (a sibling worker has the same uid):
    # allowed only on itself, which these calls spell as pid 0.
    for name, arg in SELF_ONLY:
        if sc.resolve_syscall(arch, name) >= 0:
            flt.add_rule(deny, name, sc.Arg(arg, sc.NE, 0))
    # ...and for these two, who=0 means "me" only when `which` names a process: with
    # PRIO_USER/IOPRIO_WHO_USER it means every process of this uid, siblings included.
    flt.add_rule(deny, "setpriority", sc.Arg(0, sc.NE, PRIO_PROCESS))
    flt.add_rule(deny, "ioprio_set", sc.Arg(0, sc.NE, IOPRIO_WHO_PROCESS))
    # Datagram socketpairs could address pathname sockets (/dev/log, a NOTIFY_SOCKET) with
    # sendmsg, which no filter can inspect; stream pairs (asyncio's self-pipe) are allowed.
    for kind in NON_STREAM_TYPES:
        flt.add_rule(deny, "socketpair", sc.Arg(1, sc.MASKED_EQ, SOCK_TYPE_MASK, kind))
    flt.add_rule(deny, "sendto", sc.Arg(4, sc.NE, 0))  # an explicit destination address
    # Shared anonymous memory escapes RLIMIT_DATA; private mappings (malloc) are unaffected.
    flt.add_rule(
        deny,
        "mmap",
        sc.Arg(3, sc.MASKED_EQ, MAP_SHARED | MAP_ANONYMOUS, MAP_SHARED | MAP_ANONYMOUS),
    )
    # So does a stack-like mapping: the kernel accounts it as stack, not data.
    flt.add_rule(deny, "mmap", sc.Arg(3, sc.MASKED_EQ, MAP_GROWSDOWN, MAP_GROWSDOWN))
    zone = main_stack_zone()
    if zone is None:
        flt.add_rule(deny, "mremap")
    else:
        flt.add_rule(deny, "mremap", sc.Arg(0, sc.GE, zone))
    return flt, {
        "denied_syscalls": denied,
        "prctl_allowed": len(PRCTL_ALLOWED),
        "mremap_denied_from": hex(zone) if zone is not None else "everywhere",
        "unknown_to_libseccomp": unknown,
    }


SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
BPF_INSTRUCTION_BYTES = 8  # struct sock_filter


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


class _Descriptor:
    """What ``export_bpf`` writes to: anything with ``fileno()``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


class Program:
    """A built filter compiled to its BPF program, installed with ``install()``.

    Raises OSError if libseccomp cannot export it or this architecture's ``seccomp`` syscall
    number is not known here."""

    def __init__(self, flt: sc.SyscallFilter) -> None:
        number = SYS_SECCOMP.get(os.uname().machine)
        if number is None:
            raise OSError(errno.ENOSYS, f"seccomp(2) on {os.uname().machine} is not known here")
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            flt.export_bpf(_Descriptor(fd))
            code = os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
        if not code or len(code) % BPF_INSTRUCTION_BYTES:
            raise OSError(errno.EINVAL, f"libseccomp exported {len(code)} bytes of BPF")
        self.instructions = len(code) // BPF_INSTRUCTION_BYTES
        self._code = ctypes.create_string_buffer(code, len(code))
        self._fprog = _SockFprog(self.instructions, ctypes.addressof(self._code))
        self._number = number

    def install(self) -> None:
        """Install for every thread of the process (TSYNC); from here it cannot be undone.
        Needs no_new_privs (``drop_privileges``) or CAP_SYS_ADMIN, as the kernel requires."""
        result = kernel.syscall(
            "seccomp(SET_MODE_FILTER)",
            self._number,
            ctypes.c_long(SECCOMP_SET_MODE_FILTER),
            ctypes.c_long(SECCOMP_FILTER_FLAG_TSYNC),
            ctypes.byref(self._fprog),
        )
        if result > 0:  # TSYNC names a thread that could not take the filter
            raise OSError(errno.EBUSY, f"seccomp: thread {result} could not take the filter")
