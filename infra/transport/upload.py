"""Local files into one folder of a host, over SFTP on its SSH connection.

    upload(conn, files, "/efs/mxlaunch/wheels", timeout=3600) -> names copied

A file already there with the same size and modification time (whole seconds) is skipped, so a second upload
copies nothing; each copied file gets its local modification time. A file lands under a temporary name and
is renamed when complete: an interrupted upload leaves no torn file under the real name. Every SFTP request
is bounded by the connection's SFTP timeout and the whole upload by `timeout`.
"""
from __future__ import annotations

import posixpath
import stat
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import paramiko

from mxlaunch.errors import CommandError
from mxlaunch.infra.transport import timeouts
from mxlaunch.infra.transport.ssh import Connection

PART = ".part"  # the suffix of a file still being copied


def upload(conn: Connection, files: Sequence[Path], dest: str, timeout: float = timeouts.UPLOAD,
           echo: Callable[[str], None] = lambda line: None) -> List[str]:
    """Copy `files` into the folder `dest` (made if missing) on `conn`'s host; returns the names copied. Says
    what it copies (one line) before the first file. CommandError (one line) when the host refuses or the
    upload outlives `timeout`."""
    where = f"{conn.host.address}:{dest}"
    deadline = time.monotonic() + timeout

    def in_time(_done: int, _total: int) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s")

    try:
        with conn.sftp(timeouts.SFTP_REQUEST) as sftp:
            _makedirs(sftp, dest)
            there = _listing(sftp, dest)
            todo = [f for f in files if there.get(f.name) != (f.stat().st_size, int(f.stat().st_mtime))]
            if todo:
                echo(f"  uploading {len(todo)} file(s) to {where} ({len(files) - len(todo)} already there)")
            for path in todo:
                final = posixpath.join(dest, path.name)
                mtime = int(path.stat().st_mtime)
                sftp.put(str(path), final + PART, callback=in_time, confirm=True)
                sftp.utime(final + PART, (mtime, mtime))
                sftp.posix_rename(final + PART, final)
    except (OSError, EOFError) as exc:
        raise CommandError(f"copying to {where} failed: {_reason(exc)}") from exc
    except paramiko.SSHException as exc:  # the SFTP session itself failed
        raise CommandError(f"copying to {where} failed: {' '.join(str(exc).split()) or type(exc).__name__}") from exc
    return [f.name for f in todo]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _listing(sftp, folder: str) -> Dict[str, Tuple[int, int]]:
    """name -> (size, whole-second mtime) of the regular files in `folder`."""
    return {a.filename: (a.st_size, int(a.st_mtime or 0)) for a in sftp.listdir_attr(folder)
            if stat.S_ISREG(a.st_mode or 0)}


def _makedirs(sftp, path: str) -> None:
    """`mkdir -p` over SFTP."""
    try:
        if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
            return
    except IOError:
        pass
    parent = posixpath.dirname(path.rstrip("/"))
    if parent and parent != path:
        _makedirs(sftp, parent)
    try:
        sftp.mkdir(path)
    except IOError as exc:  # made meanwhile by someone else is fine
        try:
            if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                return
        except IOError:
            pass
        raise IOError(f"cannot create {path}: {getattr(exc, 'strerror', None) or exc}") from exc
