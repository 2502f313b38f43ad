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
"""

from __future__ import annotations

import errno
import os

from autoweave_plugins.sandbox.native import sonames_only

with sonames_only():  # pyseccomp looks up its libraries at import: by soname, running nothing
    import pyseccomp as sc

__all__ = ["DENIED_SYSCALLS", "build_filter", "load_filter"]

DENIED_SYSCALLS = (
    "execve", "execveat", "fork", "vfork",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "pidfd_open",
    "pidfd_send_signal", "process_madvise",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr",
    "bpf", "keyctl", "add_key", "request_key", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
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
)  # fmt: skip
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
SOCK_TYPE_MASK = 0xF
NON_STREAM_TYPES = (2, 3, 4, 5)  # SOCK_DGRAM, SOCK_RAW, SOCK_RDM, SOCK_SEQPACKET


def build_filter() -> tuple[sc.SyscallFilter, dict[str, object]]:
    """Build (not load) the filter. Depends only on this process, so a blank worker builds it
    ahead of assignment. Returns the filter and a report of what it denies."""
    arch = sc.system_arch()
    deny = sc.ERRNO(errno.EPERM)
    flt = sc.SyscallFilter(sc.ALLOW)
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)  # 32-bit entry points are not filtered
    flt.set_attr(sc.Attr.CTL_TSYNC, 1)
    unknown = []
    for name in DENIED_SYSCALLS:
        if sc.resolve_syscall(arch, name) < 0:
            unknown.append(name)  # older libseccomp; the syscall cannot be named, skip it
            continue
        flt.add_rule(deny, name)
    flt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    # Raising a limit needs a new value (arg 2); reading one passes NULL.
    flt.add_rule(deny, "prlimit64", sc.Arg(2, sc.NE, 0))
    # Signals only to itself: kill(pid) and tgkill(tgid) must name this process.
    pid = os.getpid()
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
    return flt, {
        "denied_syscalls": len(DENIED_SYSCALLS) - len(unknown),
        "unknown_to_libseccomp": unknown,
    }


def load_filter(flt: sc.SyscallFilter) -> None:
    """Load a built filter for the whole process (all threads); from here it cannot be undone."""
    flt.load()
