"""A child's output read with a deadline: a bare readline() on a pipe blocks forever when the process hangs,
and a read loop that does not stop at end of file spins forever."""
from __future__ import annotations

import os
import selectors
import time


class Output:
    """The output of one pipe or pty master. Read it only through here: bytes that a buffered file object
    over the same descriptor had read ahead would be lost to us."""

    def __init__(self, source):
        self.fd = source if isinstance(source, int) else source.fileno()
        self.pending = b""
        self.eof = False

    def _read_some(self, deadline: float, waiting_for: str) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.fd, selectors.EVENT_READ)
            ready = selector.select(max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"no {waiting_for} before the deadline; unread output: {self.pending[-2000:]!r}")
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # a pty master reads EIO once every writer has gone: its end of file
            chunk = b""
        self.pending += chunk
        self.eof = not chunk

    def readline(self, timeout: float) -> bytes:
        """The next line with its newline (at end of file, the unterminated rest). Raises TimeoutError after
        `timeout` seconds, and EOFError at end of file when nothing is left."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending and not self.eof:
            self._read_some(deadline, "line")
        if not self.pending:
            raise EOFError("end of output")
        line, newline, self.pending = self.pending.partition(b"\n")
        return line + newline

    def read_to_end(self, timeout: float) -> bytes:
        """Everything up to end of file; raises TimeoutError when it has not come within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._read_some(deadline, "end of output")
        data, self.pending = self.pending, b""
        return data
