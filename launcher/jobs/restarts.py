"""`launch train --max-restarts N`: a job whose role failed (or whose host was lost) runs again, from the
newest whole checkpoint, in the same run directory, up to N times.

One attempt is one `Job` (launcher/jobs/job.py, unchanged): it tears everything down before it returns. Only a
failure is restarted: what was decided from outside (Ctrl-C, SIGTERM, SIGHUP, --timeout) ends the launch,
and so does a signal while waiting to restart. A spot interruption is restarted only by a launcher that can
replace the noticed host (`--cluster`): elsewhere the host is going away, and restarting on it only burns
restarts. After a failure: the delay is waited first (a brief outage gets time to heal), then the caller
readies the next attempt (a cluster made whole, then the resume point: launcher/jobs/checkpoints.py, the same search
--resume uses; None means no checkpoint yet, and the job starts again from scratch, its own command as given).
"""
from __future__ import annotations

import dataclasses
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, List, Optional, Tuple, TypeVar

from mxlaunch.launcher.jobs.checkpoints import Checkpoint
from mxlaunch.launcher.jobs.job import SIGNAL_REASONS, JobOutcome, Reason


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 0
    delay: float = 0.0  # seconds between a failed attempt's end and readying the next one
    replaces_hosts: bool = False  # a noticed (spot) host can be replaced (--cluster): SPOT is restarted


@dataclass(frozen=True)
class Restart:
    """One restart, as summary.json lists it."""

    attempt: int  # the attempt that failed (the first is 1)
    reason: str  # what failed
    failed_at: float  # wall clock: the failed attempt ended (every role gone)
    restarted_at: float  # wall clock: the next attempt started
    from_epoch: Optional[int]  # the checkpoint it resumed from; None: from scratch (no checkpoint yet)
    kept_until: float  # wall clock: what the next attempt keeps was reached (its checkpoint written)
    from_batch: int = 0  # > 0: a mid-epoch checkpoint, this many batches into epoch `from_epoch`

    @property
    def where(self) -> str:
        if self.from_epoch is None:
            return "scratch (no checkpoint)"
        return f"checkpoint {Checkpoint(self.from_epoch, self.from_batch)}"

    @property
    def seconds_lost(self) -> float:
        """Wall time the job gave up: the work past its resume point, redone, plus the teardown and the
        delay waited (at most one checkpoint period more than the downtime)."""
        return round(max(0.0, self.restarted_at - self.kept_until), 3)

    def record(self, iso: Callable[[float], str]) -> dict:
        return {"attempt": self.attempt, "reason": self.reason, "failed_at": iso(self.failed_at),
                "restarted_at": iso(self.restarted_at), "from_epoch": self.from_epoch,
                "from_batch": self.from_batch,
                "downtime_seconds": round(self.restarted_at - self.failed_at, 3), "seconds_lost": self.seconds_lost}


class RestartClock:
    """Wall time and the one wait between attempts, which a signal ends. Tests pass a fake."""

    def wall(self) -> float:
        return time.time()

    def wait(self, seconds: float) -> Optional[int]:
        """Wait `seconds`; the number of a signal (SIGINT, SIGTERM, SIGHUP) that came first, else None."""
        received: List[int] = []
        woken = threading.Event()

        def on_signal(signum, _frame):
            received.append(signum)
            woken.set()

        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, on_signal) for s in SIGNAL_REASONS}
        try:
            woken.wait(max(0.0, seconds))  # a lock wait: a signal's handler runs at once and sets it
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return received[0] if received else None


def restartable(outcome: JobOutcome) -> bool:
    """A role failed, a host was lost or is going away (a spot notice); never what was decided from outside
    (a signal, --timeout)."""
    return outcome.reason in (Reason.FAILED, Reason.SPOT)


@dataclass(frozen=True)
class ResumePoint:
    epoch: Optional[int]  # the newest whole checkpoint; None: none yet (from scratch)
    saved_at: Optional[float] = None  # wall clock of its params file, where known (this machine's files)
    batch: int = 0  # > 0: a mid-epoch checkpoint (this many batches of `epoch` done)


J = TypeVar("J")  # what one attempt runs (the caller's job: its spec and target)


@dataclass(frozen=True)
class Result(Generic[J]):
    outcome: JobOutcome  # the last attempt's (its reason: a signal during the wait, when one came)
    restarts: Tuple[Restart, ...]
    job: J  # what the last attempt ran
    interrupted_waiting: bool = False  # a signal came while waiting to restart
    spot_not_restarted: bool = False  # a spot interruption this launcher cannot replace the host of


def run_with_restarts(first: J, attempt: Callable[[J, int, Optional[int], Tuple[Restart, ...]], JobOutcome],
                      ready: Callable[[J, JobOutcome], Tuple[J, ResumePoint]], describe: Callable[[JobOutcome], str],
                      policy: RestartPolicy, notice: Callable[[str], None],
                      clock: RestartClock = RestartClock()) -> Result[J]:
    """Run attempt 1 (`attempt(first, 1, None, ())`: the command as given), then, while it fails and restarts
    are left: wait `policy.delay`, ready the next attempt with `ready(job, failed outcome)` -> (the job it runs:
    the caller may make a cluster whole first; the resume point, read through the hosts there are) and run
    `attempt(job, n, epoch, restarts so far)` from that epoch (a mid-epoch point's batch is the last restart's
    `from_batch`)."""
    restarts: List[Restart] = []
    job, number, epoch = first, 1, None
    while True:
        started = clock.wall()
        outcome = attempt(job, number, epoch, tuple(restarts))
        if not restartable(outcome) or len(restarts) >= policy.max_restarts:
            return Result(outcome, tuple(restarts), job)
        if outcome.reason is Reason.SPOT and not policy.replaces_hosts:
            return Result(outcome, tuple(restarts), job, spot_not_restarted=True)
        reason = describe(outcome)
        notice(f"restarting{f' in {policy.delay:g}s' if policy.delay else ''} after: {reason}")
        signum = clock.wait(policy.delay) if policy.delay > 0 else None
        if signum is not None:
            stopped = SIGNAL_REASONS.get(signum, Reason.TERMINATED)
            notice(f"{stopped.value} while waiting to restart; nothing is running")
            return Result(_imposed(outcome, stopped), tuple(restarts), job, interrupted_waiting=True)
        job, point = ready(job, outcome)
        epoch, batch = point.epoch, point.batch if point.epoch is not None else 0
        # kept: the checkpoint, when this attempt wrote it (its time known), else nothing of this attempt
        kept_until = max(started, point.saved_at) if epoch is not None and point.saved_at else started
        where = (f"from checkpoint {Checkpoint(epoch, batch)}" if epoch is not None
                 else "from scratch (no checkpoint yet)")
        notice(f"restart {len(restarts) + 1} of {policy.max_restarts}, {where}: {reason}")
        restarts.append(Restart(attempt=number, reason=reason, failed_at=outcome.ended, restarted_at=clock.wall(),
                                from_epoch=epoch, kept_until=kept_until, from_batch=batch))
        number += 1


def marker(restart: Restart, max_restarts: int) -> str:
    """The line every role's log gets where a restarted attempt begins."""
    return (f"===== launch: restart {restart.attempt} of {max_restarts}, attempt {restart.attempt + 1}, "
            f"from {restart.where}, after: {restart.reason} =====")


def _imposed(outcome: JobOutcome, reason: Reason) -> JobOutcome:
    return dataclasses.replace(outcome, reason=reason)
