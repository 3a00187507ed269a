"""Files where another user may have been first: written never through a link, read never through one and
never without a bound.

    open_new(path, "w")              a run-directory file for writing (O_NOFOLLOW)
    open_regular(path)               a regular file for reading, in binary (O_NOFOLLOW; a FIFO or device refused)
    read_bounded(path, limit)        its bytes, at most `limit` (FileTooLarge beyond)

Every refusal is an `UnsafeFile` (a UsageError: one line naming the file); a missing file is the usual
FileNotFoundError, for the caller to treat as absent.
"""
from __future__ import annotations

import errno
import os
import stat

from mxlaunch.errors import UsageError

KIB, MIB = 1 << 10, 1 << 20


class UnsafeFile(UsageError):
    """A file that is not read or written as asked: a symbolic link, not a regular file, or too large."""


class FileTooLarge(UnsafeFile):
    pass


def size_text(n: int) -> str:
    """1048576 -> '1 MiB', 65536 -> '64 KiB'."""
    return f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB" if n >= KIB else f"{n} bytes"


def open_new(path: str, mode: str = "w", errors: str = "strict"):
    """Open a run-directory file for writing ("w", "wb", "a", "ab"), never through a symbolic link
    (O_NOFOLLOW: a link there is an error, not a redirection of the launcher's writes)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(f"{path} is a symbolic link: the launcher never writes through one (remove it)") from exc
        raise
    return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "errors": errors}))


def open_regular(path: str):
    """`path` opened for reading in binary, only if it is a regular file and not a symbolic link: a link
    planted by another user could show any file, a FIFO would block the reader forever and /dev/zero never ends.
    FileNotFoundError when it is absent."""
    try:  # O_NONBLOCK: opening a FIFO that has no writer returns at once instead of waiting for one
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(f"{path} is a symbolic link: not read (mxlaunch reads run files only as regular "
                             f"files; remove the link)") from exc
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFile(f"{path} is not a regular file: not read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str, limit: int) -> bytes:
    """The whole of the regular file `path` (open_regular), refused when it holds more than `limit` bytes:
    a reader's memory and time never depend on what someone else put there."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"{path} is larger than {size_text(limit)}: not read (damaged, or not this file)")
    return data
