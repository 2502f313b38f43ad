"""The compatibility table: snippets of ordinary plugin code, each run as a plugin of its own.

Every snippet defines ``run(grant, readonly)``: ``grant`` is a folder declared readwrite,
``readonly`` one declared read. ``WORKS`` must return the expected value (the test checks the
disk, from the host, where there is something to check); ``REFUSED`` must raise the expected
error type, with every fragment of ``says`` in the message the caller gets (the sandbox's
notes are part of it) or the traceback. Each runs in a worker with its own world (namespaces,
a view made of its grants) and in one without (the fallback); where the kernel answers
differently in the world, ``world_error`` and ``world_says`` say what the plugin gets there:
a path outside the view does not exist (ENOENT), a read-only mount refuses a write (EROFS),
and a move between two mounts is a move across devices (EXDEV).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    expected: Any = None
    error: str | None = None
    says: tuple[str, ...] = ()
    world_error: str | None = None
    world_says: tuple[str, ...] | None = None
    files: dict[str, str] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)
    extra_imports: tuple[str, ...] = ()
    denied_imports: tuple[str, ...] = ()


WORKS = [
    Case("zoneinfo", """
import datetime, zoneinfo
def run(grant, readonly):
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    return [datetime.datetime(2024, m, 15, tzinfo=paris).utcoffset().seconds for m in (1, 7)]
""", [3600, 7200]),
    Case("localtime", """
import datetime, time
def run(grant, readonly):
    return [time.localtime(0).tm_zone, datetime.datetime.now().astimezone().tzname()]
""", "HOST_TZ"),
    Case("mimetypes", """
import mimetypes
def run(grant, readonly):
    return [mimetypes.guess_type(n)[0] for n in ("a.json", "b.webp", "c.tar.gz", "d.csv")]
""", ["application/json", "image/webp", "application/x-tar", "text/csv"]),
    Case("ssl_default_context_loads_the_system_cas", """
import ssl
def run(grant, readonly):
    return ssl.create_default_context().cert_store_stats()["x509_ca"]
""", "HOST_CAS"),
    Case("locale", """
import locale
def run(grant, readonly):
    chosen = locale.setlocale(locale.LC_ALL, "C.UTF-8")
    return [chosen, locale.getlocale()[1], locale.nl_langinfo(locale.CODESET)]
""", ["C.UTF-8", "UTF-8", "UTF-8"]),
    Case("tempfile", """
import os, tempfile
def run(grant, readonly):
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "x"), "w") as f:
            f.write("x")
        with tempfile.NamedTemporaryFile("w+") as named:
            named.write("data"); named.flush(); named.seek(0)
            fd, path = tempfile.mkstemp(suffix=".txt")
            os.write(fd, b"made"); os.close(fd)
            return [os.environ["TMPDIR"], tempfile.gettempdir(), folder, named.name, path, named.read()]
""", "TMP"),
    Case("replace_and_rename_between_folders_of_one_grant", """
import os
def run(grant, readonly):
    for d in ("a", "b", "a/deep"):
        os.makedirs(os.path.join(grant, d), exist_ok=True)
    with open(os.path.join(grant, "a/deep/f"), "w") as f:
        f.write("moved")
    os.replace(os.path.join(grant, "a/deep/f"), os.path.join(grant, "b/f"))
    os.rename(os.path.join(grant, "a/deep"), os.path.join(grant, "b/deep"))
    return sorted(os.listdir(os.path.join(grant, "b")))
""", ["deep", "f"]),
    Case("shutil_copy_copy2_copytree_move", """
import os, shutil
def run(grant, readonly):
    src = os.path.join(grant, "src.txt")
    with open(src, "w") as f:
        f.write("payload")
    os.chmod(src, 0o640)
    os.utime(src, (1_000_000_000, 1_000_000_000))
    shutil.copy(src, os.path.join(grant, "copy.txt"))
    shutil.copy2(src, os.path.join(grant, "copy2.txt"))
    os.makedirs(os.path.join(grant, "tree/sub"))
    shutil.copy2(src, os.path.join(grant, "tree/sub/file.txt"))
    shutil.copytree(os.path.join(grant, "tree"), os.path.join(grant, "tree2"))
    os.makedirs(os.path.join(grant, "elsewhere"))
    shutil.move(os.path.join(grant, "tree2"), os.path.join(grant, "elsewhere/tree3"))
    shutil.move(os.path.join(grant, "copy.txt"), os.path.join(grant, "elsewhere/moved.txt"))
    return "done"
""", "done"),
    Case("path_touch_updates_the_time", """
import os, pathlib
def run(grant, readonly):
    path = pathlib.Path(grant, "touched")
    path.write_text("x")
    os.utime(path, ns=(0, 0))
    path.touch()
    return path.stat().st_mtime
""", "RECENT"),
    Case("shelve_and_dbm", """
import dbm, os, shelve
def run(grant, readonly):
    with shelve.open(os.path.join(grant, "shelf")) as shelf:
        shelf["key"] = {"answer": 42}
    with shelve.open(os.path.join(grant, "shelf")) as shelf:
        value = shelf["key"]["answer"]
    with dbm.open(os.path.join(grant, "db"), "c") as db:
        db[b"k"] = b"v"
    with dbm.open(os.path.join(grant, "db"), "r") as db:
        return [value, db[b"k"].decode()]
""", [42, "v"]),
    Case("sqlite3_wal", """
import os, sqlite3
def run(grant, readonly):
    path = os.path.join(grant, "app.db")
    writer = sqlite3.connect(path)
    mode = writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    writer.execute("CREATE TABLE t (x)")
    writer.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    writer.commit()
    reader = sqlite3.connect(path)  # a second connection reads through the shared -shm map
    total = reader.execute("SELECT sum(x) FROM t").fetchone()[0]
    reader.close(); writer.close()
    return [mode, total]
""", ["wal", 4950]),
    Case("thread_pool_of_32_at_the_default_heap", """
import threading
from concurrent.futures import ThreadPoolExecutor
def run(grant, readonly):
    barrier = threading.Barrier(32)
    def work(i):
        barrier.wait(10)  # all 32 threads exist at once
        return threading.get_ident()
    with ThreadPoolExecutor(32) as pool:
        return len(set(pool.map(work, range(32))))
""", 32),
    Case("threads_started_by_c_libraries_get_the_same_stack", """
import ctypes, threading
def run(grant, readonly):
    libc = ctypes.CDLL(None)
    attr = ctypes.create_string_buffer(128)  # what pthread_create uses when given no attributes
    assert libc.pthread_getattr_default_np(attr) == 0
    size = ctypes.c_size_t()
    libc.pthread_attr_getstacksize(attr, ctypes.byref(size))
    return [size.value, threading.stack_size()]
""", [2 << 20, 2 << 20]),
    Case("deep_recursion_through_c_in_a_thread", """
from concurrent.futures import ThreadPoolExecutor
def down():
    return sorted([0], key=lambda x: down())  # heavy on the C stack at every level
def deepest():
    try:
        down()
    except RecursionError:  # Python's limit comes first: the thread's stack did not overflow
        return "recursion limit reached"
def run(grant, readonly):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(deepest).result()
""", "recursion limit reached"),
    Case("relative_import_in_the_entry", """
from . import helpers
from .helpers import VALUE
def run(grant, readonly):
    return [helpers.VALUE, VALUE, __name__.rpartition(".")[0] == helpers.__package__]
""", [42, 42, True], files={"helpers.py": "VALUE = 42\n"}),
    Case("pickle_a_class_of_the_entry", """
import pickle
from dataclasses import dataclass
@dataclass
class Point:
    x: int
    y: int
def run(grant, readonly):
    return pickle.loads(pickle.dumps(Point(1, 2))) == Point(1, 2)
""", True),
    Case("working_directory_is_the_plugin_folder", """
import os
def run(grant, readonly):
    with open("data.txt") as f:
        return [f.read(), os.path.samefile(os.getcwd(), os.path.dirname(__file__))]
""", ["shipped", True], files={"data.txt": "shipped"}),
    Case("vendored_package_at_depth_despite_a_host_denial", """
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_vendor", "lib"))
import sortedcontainers
def run(grant, readonly):
    inside = sortedcontainers.__file__.startswith(os.path.dirname(__file__))
    return [inside, list(sortedcontainers.SortedList([3, 1, 2]))]
""", [True, [1, 2, 3]], denied_imports=("sortedcontainers",)),
    Case("stdlib_modules_the_old_allow_list_blocked", """
import ast, copyreg, email, encodings.idna, inspect, marshal, platform, sqlite3, stat, tempfile
def run(grant, readonly):
    return [
        type(ast.parse("x = 1").body[0]).__name__,
        email.message_from_string("Subject: hi\\n\\nbody")["Subject"],
        list(inspect.signature(run).parameters),
        marshal.loads(marshal.dumps([1])),
        platform.python_implementation(),
        stat.S_ISDIR(0o040755),
        sqlite3.connect(":memory:").execute("select 1").fetchone()[0],
        copyreg.__name__, encodings.idna.__name__, tempfile.__name__,
    ]
""", ["Assign", "hi", ["grant", "readonly"], [1], "CPython", True, 1, "copyreg",
      "encodings.idna", "tempfile"]),
    Case("asyncio_to_thread_and_the_default_executor", """
import asyncio
async def run(grant, readonly):
    loop = asyncio.get_running_loop()
    squares = await asyncio.gather(*(asyncio.to_thread(pow, x, 2) for x in range(5)))
    return [squares, await loop.run_in_executor(None, sum, squares)]
""", [[0, 1, 4, 9, 16], 30]),
    Case("async_hooks_run_on_uvloop_with_timers_and_tasks", """
import asyncio
async def run(grant, readonly):
    loop = asyncio.get_running_loop()
    bases = [cls.__module__.split(".")[0] for cls in type(loop).__mro__]
    later = loop.create_future()
    loop.call_later(0.01, later.set_result, "timer")
    task = asyncio.ensure_future(asyncio.sleep(0.005, result="task"))
    return ["uvloop" in bases, await later, await task]
""", [True, "timer", "task"]),
    Case("numpy_openblas_at_the_default_heap", """
import os
import numpy as np
def run(grant, readonly):
    a = np.ones((400, 400))
    return [float((a @ a)[0, 0]), os.environ["OPENBLAS_NUM_THREADS"], os.environ["OMP_NUM_THREADS"]]
""", [400.0, "1", "1"]),
]  # fmt: skip

REFUSED = [
    Case("open_outside_the_grants", """
def run(grant, readonly):
    return open("/etc/shadow").read()
""", error="PermissionError", says=("'/etc/shadow'", "Landlock", "permissions", "filesystem",
                                     '"mode": "read"'),
         world_error="FileNotFoundError",
         world_says=("'/etc/shadow'", "does not exist in this plugin's view", "mount namespace",
                     "permissions", '"mode": "read"')),
    Case("write_in_a_read_only_grant", """
import os
def run(grant, readonly):
    open(os.path.join(readonly, "new.txt"), "w")
""", error="PermissionError", says=("may only read", '"mode": "readwrite"'),
         world_error="OSError", world_says=("Read-only file system", "may only read",
                                            '"mode": "readwrite"', "mount namespace")),
    Case("write_in_the_plugin_folder", """
def run(grant, readonly):
    open("new.txt", "w")
""", error="PermissionError", says=("plugin's own folder", "read-only", "temp folder"),
         world_error="OSError", world_says=("plugin's own folder", "read-only", "temp folder")),
    Case("rename_into_a_read_only_grant", """
import os
def run(grant, readonly):
    open(os.path.join(grant, "f"), "w").close()
    os.rename(os.path.join(grant, "f"), os.path.join(readonly, "f"))
""", error="PermissionError", says=("may only read", '"mode": "readwrite"'),
         world_error="OSError", world_says=("Invalid cross-device link", "would leave its grant")),
    Case("move_out_of_the_plugin_folder", """
import os
def run(grant, readonly):
    os.rename("data.txt", os.path.join(grant, "data.txt"))
""", error="PermissionError", says=("'data.txt'", "plugin's own folder", "read-only"),
         world_error="OSError", world_says=("'data.txt'", "would leave its grant"),
         files={"data.txt": "shipped"}),
    Case("symlink_in_a_grant", """
import os
def run(grant, readonly):
    os.symlink("target", os.path.join(grant, "link"))
""", error="PermissionError", says=("symlinks", "Landlock")),
    Case("import_subprocess", """
def run(grant, readonly):
    import subprocess
""", error="ImportError", says=("starting processes is not allowed in a plugin", "extra_imports")),
    Case("subprocess_run_when_the_import_is_granted", """
import subprocess
def run(grant, readonly):
    subprocess.run(["true"])
""", error="PermissionError", says=("starting processes is not allowed in a plugin", "seccomp"),
         extra_imports=("subprocess",)),
    Case("os_system", """
import os
def run(grant, readonly):
    return os.system("true")
""", error="PermissionError", says=("os.system", "starting processes is not allowed in a plugin")),
    Case("os_fork", """
import os
def run(grant, readonly):
    return os.fork()
""", error="PermissionError", says=("os.fork", "starting processes is not allowed in a plugin")),
    Case("import_multiprocessing", """
def run(grant, readonly):
    import multiprocessing
""", error="ImportError", says=("starting processes is not allowed in a plugin",)),
    Case("multiprocessing_pool_when_the_import_is_granted", """
import multiprocessing
def run(grant, readonly):
    multiprocessing.Pool(2)
""", error="PermissionError", says=("semaphores shared between processes",),
         world_error="FileNotFoundError", extra_imports=("multiprocessing",)),
    Case("multiprocessing_process_when_the_import_is_granted", """
import multiprocessing
def run(grant, readonly):
    multiprocessing.get_context("fork").Process(target=print).start()
""", error="PermissionError", says=("starting processes is not allowed in a plugin",),
         extra_imports=("multiprocessing",)),
    Case("multiprocessing_dummy_pool", """
from multiprocessing.dummy import Pool
def run(grant, readonly):
    Pool(4)
""", error="PermissionError", says=("semaphores shared between processes", "ThreadPoolExecutor"),
         world_error="FileNotFoundError"),
    Case("process_pool_executor", """
import concurrent.futures
def run(grant, readonly):
    concurrent.futures.ProcessPoolExecutor(2)
""", error="PermissionError", says=("ProcessPoolExecutor", "starting processes is not allowed")),
    Case("from_concurrent_futures_import_process_pool_executor", """
def run(grant, readonly):
    from concurrent.futures import ProcessPoolExecutor
""", error="ImportError", says=("starting processes is not allowed in a plugin",)),
    Case("socket_create_connection", """
import socket
def run(grant, readonly):
    socket.create_connection(("example.com", 443), timeout=5)
""", error="PermissionDenied", says=("autoweave.fetch", "'https://example.com/*'",
                                      "permissions.network.outbound")),
    Case("socket_to_an_address_literal", """
import socket
def run(grant, readonly):
    socket.create_connection(("192.0.2.7", 8080), timeout=5)
""", error="PermissionError", says=("autoweave.fetch", "'https://192.0.2.7:8080/*'")),
    Case("raw_socket", """
import socket
def run(grant, readonly):
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
""", error="PermissionError", says=("autoweave.fetch", "cannot open sockets")),
    Case("urllib_request", """
import urllib.request
def run(grant, readonly):
    urllib.request.urlopen("http://example.com/data.json", timeout=5)
""", error="URLError", says=("autoweave.fetch", "'http://example.com/*'")),
    Case("http_client", """
import http.client
def run(grant, readonly):
    http.client.HTTPSConnection("api.example.com", timeout=5).request("GET", "/")
""", error="PermissionDenied", says=("autoweave.fetch", "'https://api.example.com/*'")),
    Case("httpx", """
import httpx
def run(grant, readonly):
    httpx.get("https://api.example.com/v1", timeout=5)
""", error="ConnectError", says=("autoweave.fetch", "'https://api.example.com/*'")),
    Case("asyncio_open_connection", """
import asyncio
async def run(grant, readonly):
    await asyncio.open_connection("example.com", 8080)
""", error="PermissionDenied", says=("autoweave.fetch", "'https://example.com:8080/*'")),
    Case("asyncio_open_connection_to_an_address_literal", """
import asyncio
async def run(grant, readonly):
    await asyncio.open_connection("192.0.2.7", 8443)
""", error="PermissionError", says=("autoweave.fetch", "'https://192.0.2.7:8443/*'")),
    Case("asyncio_datagram_endpoint", """
import asyncio
async def run(grant, readonly):
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("192.0.2.7", 53))
""", error="PermissionError", says=("autoweave.fetch", "cannot open sockets")),
    Case("memory_error", """
def run(grant, readonly):
    return len(bytearray(1 << 30))
""", error="MemoryError", says=("memory.max_heap_mb = 256",)),
    Case("more_threads_than_max_threads", """
import threading
def run(grant, readonly):
    stop = threading.Event()
    for _ in range(8):
        threading.Thread(target=stop.wait, daemon=True).start()
""", error="RuntimeError", says=("memory.max_threads = 2",), memory={"max_threads": 2}),
    Case("chmod_outside_the_write_grants", """
import os
def run(grant, readonly):
    os.chmod(__file__, 0o777)
""", error="PermissionError", says=("not inside a writable filesystem grant",)),
    Case("chmod_setuid_in_a_grant", """
import os
def run(grant, readonly):
    path = os.path.join(grant, "tool")
    open(path, "w").close()
    os.chmod(path, 0o4755)
""", error="PermissionError", says=("setuid and setgid bits cannot be set",)),
    Case("chown", """
import os
def run(grant, readonly):
    path = os.path.join(grant, "mine")
    open(path, "w").close()
    os.chown(path, 0, 0)
""", error="PermissionError", says=("cannot change a file's owner",)),
]  # fmt: skip
