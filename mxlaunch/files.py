"""Files the launcher writes where another user may have been first: never through a link."""
from __future__ import annotations

import errno
import os

from mxlaunch.errors import UsageError


def open_new(path: str, mode: str = "w", errors: str = "strict"):
    """Open a run-directory file for writing ("w", "wb", "a", "ab"), never through a symbolic link
    (O_NOFOLLOW: a link there is an error, not a redirection of the launcher's writes)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{path} is a symbolic link: the launcher never writes through one (remove it)") from exc
        raise
    return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "errors": errors}))
