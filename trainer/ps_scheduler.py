"""The scheduler role of a dist_* job, run on MXNet's library without MXNet's Python package.

`import mxnet` with DMLC_ROLE=scheduler runs the scheduler (python/mxnet/kvstore/kvstore_server.py of MXNet 1.9:
MXKVStoreCreate("dist"), then MXKVStoreRunServer, then exit), but first builds the Python functions of every
operator: 1.5-1.9 s of CPU (loading the library alone: 0.15 s) and 45 MB that a scheduler never uses, paid on the
host that also runs rank 0. Here the same three C calls are made on the same libmxnet.so, found as `import mxnet`
finds it (MXNet's own libinfo.find_lib_path; the CUDA libraries of a GPU build prepared by mxlaunch's import hook).
The scheduler only routes ps-lite's control messages: it is sent no command, so the controller never runs (if it
did, the role would end at once, saying so).
A server stays on `import mxnet`: it runs the optimizer the workers send (command 0), in Python. The same calls
serve only a server that is sent no command, which keeps the workers' summed pushes as they are: the tests'
push/pull job (testkit/pushpull.py) has such servers.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from typing import NoReturn

from mxlaunch.exits import Exit

# void (*)(int head, const char *body, void *handle): MXKVStoreServerController, c_api.h
_CONTROLLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class LibraryError(RuntimeError):
    """MXNet's library could not be found, or a call into it failed (its own message)."""


def library_path() -> str:
    """The libmxnet.so that `import mxnet` would load, found by MXNet's own libinfo.find_lib_path."""
    spec = importlib.util.find_spec("mxnet")  # a finder's lookup: mxnet/__init__.py is not run
    if spec is None or not spec.submodule_search_locations:
        raise LibraryError("No module named 'mxnet'")
    libinfo_file = os.path.join(list(spec.submodule_search_locations)[0], "libinfo.py")
    libinfo_spec = importlib.util.spec_from_file_location("_mxnet_libinfo", libinfo_file)
    libinfo = importlib.util.module_from_spec(libinfo_spec)
    try:
        libinfo_spec.loader.exec_module(libinfo)  # standard library only; it finds the library beside itself
        return libinfo.find_lib_path()[0]
    except (OSError, RuntimeError) as exc:
        raise LibraryError(str(exc).strip().splitlines()[0]) from None  # the rest lists every path it tried


def _check(lib, status: int) -> None:
    if status != 0:
        message = lib.MXGetLastError().decode("utf-8", "replace").strip() or f"status {status}"
        raise LibraryError(message.splitlines()[0])  # the rest is MXNet's C++ stack


def _refuse_command(head: int, body: bytes, _handle) -> None:
    """A command is for a server's Python controller (0: an optimizer to run), which this process does not have."""
    os.write(2, f"trainer: error: a server command ({head}) reached a role without MXNet's Python package\n".encode())
    os._exit(int(Exit.INTERNAL))  # a bug of ours; an exception here would be printed and ignored by ctypes


def run() -> NoReturn:
    """Serve as the job's scheduler (or a server sent no command) until every node has finished, then exit 0,
    as `import mxnet` does."""
    try:
        lib = ctypes.CDLL(library_path(), ctypes.RTLD_LOCAL)  # RTLD_LOCAL: as mxnet/base.py loads it
    except OSError as exc:  # a library it needs is missing: the loader's own line names it
        raise LibraryError(str(exc)) from None
    lib.MXGetLastError.restype = ctypes.c_char_p
    handle = ctypes.c_void_p()
    _check(lib, lib.MXKVStoreCreate(b"dist", ctypes.byref(handle)))
    controller = _CONTROLLER(_refuse_command)  # kept referenced while the library may call it
    _check(lib, lib.MXKVStoreRunServer(handle, controller, None))
    _check(lib, lib.MXKVStoreFree(handle))
    lib.MXNotifyShutdown()  # what mxnet/base.py's atexit hook does
    sys.exit(0)
