"""Spot interruption notices in one attempt of a `Job` (launcher/jobs/job.py): what the attempt's first notice asks.

A notice gives its host two minutes. Rank 0 of a trainer job can save where it is (SIGUSR1 through its guard:
it finishes the batch in flight, writes PREFIX-EEEE-BBBBBB.params, exits 75); the job then ends with Reason.SPOT
and a restart continues from that checkpoint. Rank 0 is asked only when that is safe and worth it:
- the workload is the trainer (workload.is_trainer): SIGUSR1's default action would kill any other program;
- the role asked is the one that IS MXNet rank 0 (ps-lite's "W[id] is connected"; worker-0 by construction);
- it is training in this attempt (its log said so: the trainer's `rank R of N: ...` line, written once its
  kvstore is up, long after its SIGUSR1 handler is installed; it saves at its next batch boundary): before that
  the handler may not exist yet (a notice read during the previous attempt's teardown comes at once) and
  there is nothing new to save.
Otherwise the job stops at once. A notice when the work is done — every worker finished, or rank 0 ended 0
(training complete: the others end with it) — is a note: the job finishes, within the same bounded wait.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set

from mxlaunch.infra.transport.roles import WORKER, RoleId

RANK0 = RoleId(WORKER, 0).name  # worker-0 is MXNet rank 0 (plan.rank_order) unless ps-lite said otherwise
SPOT_POLL = 5.0  # seconds between a host's looks at its spot notice
SPOT_WAIT = 90.0  # after a notice, how long the job may take to save and end (AWS acts 2 minutes after it)
# Training under way, in the trainer's log (trainer/fit.py): `rank R of N: ...` once its kvstore is up (its SIGUSR1
# handler came first), then `Epoch[E] Batch [A-B]\tSpeed: ...` lines and `Epoch[E] Train-accuracy=...`.
TRAINED = re.compile(rb"\brank \d+ of \d+: |Epoch\[\d+\] (?:Batch \[\d+-\d+\]|Train-accuracy=)")


class Step(enum.Enum):
    """What the first notice asks of the job."""

    FINISHING = "note"  # every worker already finished: the job ends as it is ending
    WAIT = "wait"  # rank 0 ended 0: the others may finish, until the deadline
    ASK = "ask"  # rank 0 saves a checkpoint and ends, until the deadline; then the job ends (SPOT)
    STOP = "stop"  # nothing can be saved: every role is stopped now (SPOT)


@dataclass(frozen=True)
class FirstNotice:
    step: Step
    why: str  # the tail of the notice's note
    rank0: Optional[str] = None  # the role to ask (Step.ASK)


@dataclass
class SpotState:
    """One attempt's notices and what they started."""

    hosts: List[str] = field(default_factory=list)  # noticed addresses, first first
    trained: Set[str] = field(default_factory=set)  # roles whose log showed a trained batch (this start)
    deadline: Optional[float] = None  # after the first notice (unless the job was finishing): it ends by then
    asked: Optional[str] = None  # the role asked to checkpoint

    def saw(self, name: str, data: bytes) -> None:
        if name not in self.trained and TRAINED.search(data):
            self.trained.add(name)

    def overdue(self, wait: float) -> str:
        """The note when the deadline passed."""
        what = ("rank 0 did not end within {:g}s of the checkpoint request" if self.asked
                else "the workers did not end within {:g}s of the spot interruption notice")
        return what.format(wait) + "; every role was stopped"


def rank0_of(ranks: Dict[str, int], workers: Sequence[str]) -> Optional[str]:
    """The worker that is MXNet rank 0: as ps-lite said, else worker-0 unless ps-lite gave it another rank."""
    said = [name for name in workers if ranks.get(name) == 0]
    if said:
        return said[0]
    return RANK0 if RANK0 not in ranks else None


def first_notice(trainer: bool, rank0: Optional[str], finished: bool, rank0_ok: bool, running: bool,
                 trained: bool) -> FirstNotice:
    """`finished`: every worker ended 0; `rank0_ok`: rank 0 did; `running`: rank 0 runs and no start is being
    retried; `trained`: rank 0's log showed a trained batch in this attempt."""
    if finished:
        return FirstNotice(Step.FINISHING, "every worker has finished")
    if rank0_ok:
        return FirstNotice(Step.WAIT, "rank 0 has finished; waiting for the other workers to finish")
    if not trainer:
        return FirstNotice(Step.STOP, "the workload is not the trainer (only it saves on request); "
                                      "stopping every role")
    if rank0 is None or not running:
        return FirstNotice(Step.STOP, "rank 0 is not running; stopping every role")
    if not trained:
        return FirstNotice(Step.STOP, "rank 0 has not started training in this attempt (nothing new to save); "
                                      "stopping every role")
    return FirstNotice(Step.ASK, "asking rank 0 to checkpoint" + (f" ({rank0})" if rank0 != RANK0 else ""), rank0)
