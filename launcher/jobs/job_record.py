"""job.yaml: the record of a job (what ran, where, with which environment), written when its roles start
and read back by `launch train --resume` and `launch runs`. One definition, `JobRecord`, writes it and checks
it; the values of secret-looking variables are masked before they reach it (plan.masked).

    of_plan(plan, workdir, target) -> JobRecord     pure
    text(record) -> str                             the file's text (YAML, keys in the order below)
    read(path) -> JobRecord                         a damaged file is one UsageError naming the field
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Dict, Literal, Optional, Tuple

import yaml

from mxlaunch.errors import UsageError
from mxlaunch.files import MIB, read_bounded
from mxlaunch.infra.transport.target import JobTarget
from mxlaunch.launcher.jobs.plan import JobPlan, masked
from mxlaunch.records import RecordError, Word, dump, expect, load

HEADER = ("# mxlaunch job plan, written by `launch train` (values of secret-looking variables are masked).\n"
          "# `launch train --resume` reads it back: it is the record of what ran, and where.\n")
ENV = "a mapping of names to values"
RECORD_LIMIT = 16 * MIB  # bytes: job.yaml of a thousand roles is a few MB


def _count(n: int) -> bool:
    return n >= 1


@dataclass(frozen=True)
class SSHRecord:
    """SSH settings of a job's target: paths and names only, never key material."""

    user: Optional[str] = None
    key: Optional[str] = None
    known_hosts: Optional[str] = None
    config: Optional[str] = "~/.ssh/config"  # SSHOptions' default, for a record from before it held one; null: none
    accept_new: Optional[bool] = None


@dataclass(frozen=True)
class TargetRecord:
    """Where the job ran beyond its hosts and workdir: what --resume needs to run it there again."""

    cluster: Optional[str] = None  # --cluster NAME: resolved again on --resume (its addresses may change)
    python: Optional[str] = None
    gpus_per_host: Optional[int] = expect("a whole number >= 0", lambda n: n >= 0, default=None)
    ssh: Optional[SSHRecord] = expect("a mapping of SSH settings", default=None)

    @classmethod
    def of(cls, target: JobTarget) -> "TargetRecord":
        ssh = target.ssh
        return cls(cluster=target.cluster, python=target.python, gpus_per_host=target.gpus_per_host,
                   ssh=None if ssh is None else SSHRecord(user=ssh.user, key=ssh.key, known_hosts=ssh.known_hosts,
                                                          config=ssh.config_path, accept_new=ssh.accept_new))


@dataclass(frozen=True)
class SchedulerRecord:
    host: str
    port: int


@dataclass(frozen=True)
class RoleRecord:
    name: str
    kind: Optional[str] = None
    index: Optional[int] = None
    host: Optional[str] = None
    env: Dict[str, Word] = expect(ENV, default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    mode: Literal["local", "hosts"]
    command: Tuple[Word, ...] = expect("a list of arguments", lambda c: len(c) > 0)
    num_workers: int = expect("a whole number >= 1", _count)
    num_servers: int = expect("a whole number >= 1", _count)
    job_id: Optional[str] = None
    run_dir: Optional[str] = None  # the launcher's, on its machine
    remote_run_dir: Optional[str] = None  # SSH mode: the roles' (LAUNCH_RUN_DIR); metrics.jsonl is fetched from it
    workdir: Optional[str] = None
    timeout: Optional[float] = expect("a positive number of seconds", lambda t: t > 0, default=None)
    watch_spot: Optional[bool] = None  # None: a job.yaml from before it was recorded
    hosts: Optional[Tuple[str, ...]] = expect("a list of hostfile lines", default=None)
    target: Optional[TargetRecord] = expect("a mapping", default=None)
    scheduler: Optional[SchedulerRecord] = None
    env: Dict[str, Word] = expect(ENV, default_factory=dict)
    env_worker: Dict[str, Word] = expect(ENV, default_factory=dict)
    env_server: Dict[str, Word] = expect(ENV, default_factory=dict)
    roles: Tuple[RoleRecord, ...] = ()

    @property
    def local(self) -> bool:
        return self.mode == "local"


def of_plan(plan: JobPlan, workdir: str, target: Optional[JobTarget] = None) -> JobRecord:
    """The record of a plan (secret-looking values masked); with `target`, where the job ran (for --resume:
    interpreter, SSH settings, GPUs, cluster)."""
    job = plan.spec
    roles = tuple(RoleRecord(name=r.name, kind=r.kind, index=r.index, host=r.host.address, env=masked(r.env_dict()))
                  for r in plan.roles)
    return JobRecord(mode="local" if job.local else "hosts", command=tuple(job.command),
                     num_workers=job.num_workers, num_servers=job.num_servers, job_id=plan.job_id,
                     run_dir=plan.run_dir, remote_run_dir=plan.remote_run_dir, workdir=workdir, timeout=job.timeout,
                     watch_spot=job.watch_spot, hosts=tuple(f"{h.target} slots={h.slots}" for h in job.hosts),
                     target=TargetRecord.of(target) if target is not None else None,
                     scheduler=SchedulerRecord(plan.scheduler.host.address, plan.port),
                     env=masked(dict(job.env)), env_worker=masked(dict(job.env_worker)),
                     env_server=masked(dict(job.env_server)), roles=roles)


def text(record: JobRecord) -> str:
    """job.yaml's text: block YAML, one value per line however long, keys in the record's order."""
    return HEADER + yaml.safe_dump(dump(record), sort_keys=False, allow_unicode=True, default_flow_style=False,
                                   width=sys.maxsize)


def read(path: str, run_dir: str) -> JobRecord:
    """RUN_DIR/job.yaml (`path`) as a record, checked: a damaged one is one error, never a guess (a missing
    `mode:` must not make a local job an SSH one)."""
    try:  # a regular file only, never through a link, bounded (a run directory may be shared)
        data = yaml.safe_load(read_bounded(path, RECORD_LIMIT).decode("utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"{run_dir} is not a run directory (no job.yaml)") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    try:
        return load(JobRecord, data)
    except RecordError as exc:
        raise UsageError(f"{path} is damaged ({exc}): it does not describe a job that can be resumed") from exc

