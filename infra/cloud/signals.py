"""SIGTERM and SIGHUP during `up` roll back like Ctrl-C: the signal becomes an exception in the main thread, so
that what this run created is removed on the way out (a kill -9 cannot be helped: `launch cluster down`)."""
from __future__ import annotations

import contextlib
import signal
import threading

from mxlaunch.errors import CommandError
from mxlaunch.exits import Exit

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Signalled(BaseException):
    """Raised by the handler; a BaseException, like KeyboardInterrupt, so that no `except Exception` eats it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Stopped(CommandError):
    """The one line and the exit status (128 + signal number) of a command stopped by a signal."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = Exit.for_signal(signum)


@contextlib.contextmanager
def raised():
    """Within the block, SIGTERM and SIGHUP raise Signalled (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Signalled(signum)
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    except Signalled as sig:
        raise Stopped(sig.signum) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
