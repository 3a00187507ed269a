"""How one attempt of a job ended (launcher/jobs/job.py decides it): the reason, with its exit status and message,
and the outcome every report reads (summary.json, the console's last lines, the restart loop)."""
from __future__ import annotations

import enum
import signal
from dataclasses import dataclass
from typing import Optional, Tuple

from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs.plan import JobPlan
from mxlaunch.infra.transport.runner import RoleResult


class Reason(enum.Enum):
    """Why a job ended: its value is summary.json's `reason`; it carries the exit status and the final message."""

    OK = ("ok", Exit.OK, "every worker exited 0")
    FAILED = ("failed", Exit.FAILED, "not every worker exited 0")
    TIMEOUT = ("timeout", Exit.TIMEOUT, "the job exceeded --timeout {timeout:g}s; every role was stopped")
    INTERRUPTED = ("interrupted", Exit.INTERRUPTED, "interrupted; every role was stopped")
    TERMINATED = ("terminated", Exit.TERMINATED, "terminated; every role was stopped")
    HUNG_UP = ("hung up", Exit.HUNG_UP, "hung up; every role was stopped")
    SPOT = ("spot interruption", Exit.FAILED, "spot interruption on {hosts}")

    def __new__(cls, text: str, exit_status: Exit, message: str):
        member = object.__new__(cls)
        member._value_ = text
        member.exit_status = exit_status
        member._message = message
        return member

    @property
    def imposed(self) -> bool:
        """Decided from outside (--timeout, a signal), whatever the workers did."""
        return self not in (Reason.OK, Reason.FAILED, Reason.SPOT)

    def message(self, timeout: Optional[float] = None, hosts: Tuple[str, ...] = ()) -> str:
        return self._message.format(timeout=timeout, hosts=", ".join(hosts))


SIGNAL_REASONS = {signal.SIGINT: Reason.INTERRUPTED, signal.SIGTERM: Reason.TERMINATED,
                  signal.SIGHUP: Reason.HUNG_UP}


@dataclass(frozen=True)
class JobOutcome:
    reason: Reason
    plan: JobPlan  # the plan that ran (its ports are the ones its roles bound)
    results: Tuple[RoleResult, ...]
    first_failure: Optional[RoleResult]
    started: float
    ended: float
    teardown_started: Optional[float] = None  # wall clock; None when nothing had to be stopped
    notes: Tuple[str, ...] = ()
    ranks: Tuple[Tuple[str, int], ...] = ()  # role name -> MXNet (ps-lite) rank, where ps-lite said
    spot_hosts: Tuple[str, ...] = ()  # addresses of hosts that had a spot interruption notice (first first)

    @property
    def status(self) -> Exit:
        return self.reason.exit_status

    def message(self) -> str:
        """Why the job ended, for people: the reason's message with this job's details."""
        return self.reason.message(self.plan.spec.timeout, self.spot_hosts)

    def rank_of(self, name: str) -> Optional[int]:
        return dict(self.ranks).get(name)
