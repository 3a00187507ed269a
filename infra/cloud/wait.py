"""Bounded waits and retries. Every wait has a deadline; the sleep and the clock are module attributes so that
tests make waits instant (`mxlaunch.infra.cloud.wait.SLEEP`), never `sleep` as synchronisation.

    poll(fetch, done, timeout=, interval=, what=)   # until done(fetch()), else WaitTimeout
    retry(action, Backoff(codes, total), ...)        # again while it fails with one of a rule's codes
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, TypeVar

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


@dataclass(frozen=True)
class Backoff:
    """Retry a failure whose AwsError `code` is in `codes`: the first wait `first` seconds, each next one twice
    the last up to `cap`, until the waits would pass `total` seconds (AWS asks for exponential backoff:
    https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html)."""

    codes: frozenset
    total: float
    first: float = 2.0
    cap: float = 30.0

    def delays(self) -> Iterator[float]:
        """The waits between tries, in order, as long as they fit in `total`."""
        spent, delay = 0.0, self.first
        while spent + delay <= self.total + 1e-9:
            yield delay
            spent += delay
            delay = min(self.cap, delay * 2)


def retry(action: Callable[[], T], *rules: Backoff) -> T:
    """Run `action`; while it fails with a code of one of `rules`, wait that rule's next delay and run it again.
    A failure with no rule's code, or past its rule's schedule, is raised as it is."""
    schedules = {rule: rule.delays() for rule in rules}
    while True:
        try:
            return action()
        except CommandError as exc:
            code = getattr(exc, "code", None)
            rule = next((r for r in rules if code in r.codes), None)
            delay = next(schedules[rule], None) if rule is not None else None
            if delay is None:
                raise
        SLEEP(delay)


def retry_codes(action: Callable[[], T], codes: set, *, timeout: float, interval: float, what: str = "") -> T:
    """Run `action`, retrying every `interval` seconds while it fails with one of `codes`, up to `timeout`
    (a steady pace: DependencyViolation / InUse while instances terminate)."""
    deadline = CLOCK() + timeout
    while True:
        try:
            return action()
        except CommandError as exc:
            if getattr(exc, "code", None) not in codes or CLOCK() >= deadline:
                raise
        SLEEP(interval)
