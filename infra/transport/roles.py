"""A job's processes as the runners see them: `Role` (kind, index, host, environment) and `RoleId`, the one
place a role's name (`worker-1`: file names, `--role`, LAUNCH_ROLE) and its label (`worker 1`: console prefixes,
messages) are made and the one place a name is read back."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Dict, Tuple

from mxlaunch.infra.transport.hosts import Host

SCHEDULER, SERVER, WORKER = "scheduler", "server", "worker"
KINDS = (SCHEDULER, SERVER, WORKER)  # also the start order
MARKER_KEY = "LAUNCH_JOB_ID"  # every process of a job carries it: how leftovers are found, never by name
Env = Tuple[Tuple[str, str], ...]  # ordered, hashable: frozen dataclasses stay frozen


@functools.total_ordering
@dataclass(frozen=True)
class RoleId:
    """A role of a job: its kind and its index (server i, worker i; 0 for the scheduler).
    Ordered as roles start: the scheduler, then servers, then workers, each by index."""

    kind: str
    index: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown role kind {self.kind!r} (expected one of {', '.join(KINDS)})")
        if self.index < 0 or (self.kind == SCHEDULER and self.index != 0):
            raise ValueError(f"bad index {self.index} for a {self.kind}")

    @property
    def name(self) -> str:
        """File-safe id: scheduler, server-0, worker-1 (logs/<name>.log, --role NAME)."""
        return self.kind if self.kind == SCHEDULER else f"{self.kind}-{self.index}"

    @property
    def label(self) -> str:
        """For people: scheduler, server 0, worker 1."""
        return self.kind if self.kind == SCHEDULER else f"{self.kind} {self.index}"

    @classmethod
    def parse(cls, text: str) -> "RoleId":
        """The inverse of `name`; ValueError for anything else."""
        kind, sep, index = text.partition("-")
        if kind == SCHEDULER and not sep:
            return cls(SCHEDULER)
        if kind in (SERVER, WORKER) and index.isascii() and index.isdigit() and str(int(index)) == index:
            return cls(kind, int(index))
        raise ValueError(f"not a role name: {text!r} (expected scheduler, server-N or worker-N)")

    def __lt__(self, other: "RoleId") -> bool:
        if not isinstance(other, RoleId):
            return NotImplemented
        return (KINDS.index(self.kind), self.index) < (KINDS.index(other.kind), other.index)

    def __str__(self) -> str:
        return self.name


SCHEDULER_ID = RoleId(SCHEDULER)


@dataclass(frozen=True)
class Role:
    """One process of the job."""

    kind: str  # scheduler | server | worker
    index: int  # server i / worker rank r; 0 for the scheduler
    host: Host
    env: Env

    @property
    def id(self) -> RoleId:
        return RoleId(self.kind, self.index)

    @property
    def name(self) -> str:
        return self.id.name

    @property
    def label(self) -> str:
        return self.id.label

    def env_dict(self) -> Dict[str, str]:
        return dict(self.env)
