"""Files where another user may have been first: written never through a link, read never through one and
never without a bound.

    open_new(path, "w")              a run-directory file for writing (O_NOFOLLOW)
    open_regular(path)               a regular file for reading, in binary (O_NOFOLLOW; a FIFO or device refused)
    read_bounded(path, limit)        its bytes, at most `limit` (FileTooLarge beyond)
    OwnDirectory(path)               a directory only this user can plant files in, opened once: the files
                                     under it are opened by name relative to it (openat), never through a link
    read_own(path, limit)            read_bounded, and only this user's own file in such a directory (NotOwn
                                     otherwise): for content that is acted on, as a process id to signal
    Replacement(path), replaced(path)  a file's new content written under a private temporary name beside it,
                                     then made `path` in one step (fsync, rename); replaced: as a with-block

Every refusal is an `UnsafeFile` (a UsageError: one line naming the file); a missing file is the usual
FileNotFoundError, for the caller to treat as absent.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from typing import Iterator

from mxlaunch.errors import UsageError

KIB, MIB = 1 << 10, 1 << 20


class UnsafeFile(UsageError):
    """A file that is not read or written as asked: a symbolic link, not a regular file, too large, or (for a
    reader that says so) one this user may not read."""


class FileTooLarge(UnsafeFile):
    pass


class NotOwn(UnsafeFile):
    """A file, or the directory it lies in, that another user may have written: its content is not trusted."""


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


class OwnDirectory:
    """A directory opened once, without following a link, that no other user can plant a file in: this user's
    own and not writable by others, or one with the sticky bit (/tmp: others' names there can be neither renamed
    nor written over by this user's files). Files under it are opened relative to it (openat), never through a
    link: a directory swapped for a link after the check changes nothing, a planted link is an error."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeFile(f"{path} is a symbolic link or not a directory: nothing there is written or "
                                 f"trusted") from exc
            raise
        st = os.fstat(self.fd)
        sticky = bool(st.st_mode & stat.S_ISVTX)
        if not sticky and (st.st_uid != os.geteuid() or st.st_mode & stat.S_IWOTH):
            os.close(self.fd)
            raise NotOwn(f"{path} is not this user's own directory (another user can write there): nothing there "
                         f"is written or trusted")

    def open(self, name: str, mode: str, limit: int = 0, own: bool = False):
        """`name` under the directory: "r"/"rb" a regular file (at most `limit` bytes read, FileTooLarge beyond:
        the whole content is returned as bytes), "a" appended to, "x" created new (never an existing name).
        `own`: read only a file this user owns (NotOwn otherwise; in a sticky directory another user's name
        stays theirs)."""
        if os.sep in name:
            raise ValueError(f"{name!r} is not a file name")
        flags = {"r": os.O_RDONLY, "a": os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}[mode[0]]
        try:  # O_NONBLOCK: a FIFO planted there fails or returns at once instead of waiting for its other end
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFile(f"{os.path.join(self.path, name)} is a symbolic link: never read or written "
                                 f"through (remove it)") from exc
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnsafeFile(f"{os.path.join(self.path, name)} is not a regular file")
        if own and st.st_uid != os.geteuid():
            os.close(fd)
            raise NotOwn(f"{os.path.join(self.path, name)} belongs to another user (uid {st.st_uid}): not trusted")
        os.set_blocking(fd, True)
        if mode[0] != "r":
            return os.fdopen(fd, mode[0] if mode[0] == "a" else "w", encoding="utf-8")
        with os.fdopen(fd, "rb") as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise FileTooLarge(f"{os.path.join(self.path, name)} is larger than {size_text(limit)}: not read")
        return data

    def replace(self, source: str, name: str) -> None:
        os.replace(source, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def close(self) -> None:
        os.close(self.fd)


def read_own(path: str, limit: int) -> bytes:
    """The whole of `path`, at most `limit` bytes, only when this user wrote it: a regular file this user owns,
    in a directory no other user can plant a file in (OwnDirectory). A file someone else could have put there
    may name anything (a process to signal): NotOwn. FileNotFoundError when it is absent."""
    directory = OwnDirectory(os.path.dirname(path) or ".")
    try:
        return directory.open(os.path.basename(path), "r", limit, own=True)
    finally:
        directory.close()


class Replacement:
    """The new content of `path`, written at `tmp`: a path in a folder of its own (0700, a name nobody can
    guess) beside `path`, so that a writer that opens files by name (MXNet's C++ savers, its profiler) never
    meets a planted link. `commit()` makes it `path` in one step: on disk first (a host that loses power keeps
    the old file or the whole new one), then renamed over it (a link at `path` is replaced, never followed)."""

    def __init__(self, path: str):
        self.path = path
        directory, base = os.path.split(os.path.abspath(path))
        OwnDirectory(directory).close()  # else another user could rename the private folder and plant a link
        self._folder = tempfile.mkdtemp(prefix=f".{base}.", dir=directory)
        self.tmp = os.path.join(self._folder, base)

    def commit(self) -> None:
        try:
            with open_regular(self.tmp) as stream:
                os.fsync(stream.fileno())
            os.replace(self.tmp, self.path)
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


@contextlib.contextmanager
def replaced(path: str) -> Iterator[str]:
    """A with-block's Replacement of `path`: yields where to write; committed when the block ends without an
    error, removed either way."""
    replacement = Replacement(path)
    try:
        yield replacement.tmp
    except BaseException:
        replacement.discard()
        raise
    replacement.commit()
