"""Bounded waits. Every wait has a deadline; polling interval and clock are module attributes so that tests
make waits instant (`mxlaunch.infra.cloud.wait.SLEEP`), never `sleep` as synchronisation."""
from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

from mxlaunch.errors import CommandError
from mxlaunch.exits import Exit

T = TypeVar("T")
SLEEP: Callable[[float], None] = time.sleep
CLOCK: Callable[[], float] = time.monotonic


class WaitTimeout(CommandError):
    exit_code = Exit.WAIT_TIMEOUT


def poll(fetch: Callable[[], T], done: Callable[[T], bool], *, timeout: float, interval: float,
         what: str, progress: Optional[Callable[[T], None]] = None) -> T:
    """Call `fetch` until `done(result)`; WaitTimeout (one line naming `what`) after `timeout` seconds."""
    deadline = CLOCK() + timeout
    while True:
        result = fetch()
        if progress:
            progress(result)
        if done(result):
            return result
        if CLOCK() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        SLEEP(interval)


def retry_codes(action: Callable[[], T], codes: set, *, timeout: float, interval: float, what: str) -> T:
    """Run `action`, retrying only while it fails with one of `codes` (an AwsError code), up to `timeout`.
    Used for the one documented case: DependencyViolation / InUse while instances terminate."""
    deadline = CLOCK() + timeout
    while True:
        try:
            return action()
        except CommandError as exc:
            if getattr(exc, "code", None) not in codes or CLOCK() >= deadline:
                raise
        SLEEP(interval)
