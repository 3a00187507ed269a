"""Where a job runs: the one JobTarget a request names, and where a job meets the cloud.

    new_target(request)                    --local, --hosts FILE|h1,h2 or --cluster NAME
    resume_target(request)                 --resume RUN_DIR: where its job.yaml says it ran (a cluster's job:
                                           the cluster resolved again), this launch's flags over the record
    recorded_target(run_dir, ...)          a local or --hosts job's recorded target (--hosts: moved)
    cluster(name, request)                 a cluster's target, the flags the user gave winning
    made_whole(target, spec, ssh, doomed)  before a restart under --cluster: the same hosts, or the cluster
                                           repaired and the job's hosts taken from it as it is now
    on_hosts(command, target)              `trainer`/`python` as the target's venv has them

The cloud (infra/cloud: cluster_target, repair) is imported only where a cluster is named: boto3 stays off
every other launch.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple

from mxlaunch.errors import UsageError
from mxlaunch.infra.transport.hosts import parse_hostfile_text, parse_hosts
from mxlaunch.infra.transport.target import JobTarget, hosts_target, local_target, ssh_target
from mxlaunch.launcher.jobs import rundir
from mxlaunch.launcher.jobs.job_record import JobRecord, SSHRecord
from mxlaunch.launcher.jobs.plan import JobSpec
from mxlaunch.launcher.jobs.request import TrainRequest

if TYPE_CHECKING:
    from mxlaunch.infra.transport.ssh import SSHOptions

VENV_PROGRAMS = ("trainer", "python", "python3")  # what the job's interpreter's venv is known to hold


def new_target(request: TrainRequest) -> JobTarget:
    """A new job's target: exactly one of --local, --hosts, --cluster (request.py checked that)."""
    if request.local:
        return local_target(request.workdir)
    if request.hosts:
        return hosts_target(request.hosts, request.workdir, request.python, request.ssh)
    return cluster(request.cluster, request.workdir, request.python, request.ssh)


def cluster(name: str, workdir: Optional[str], python: Optional[str], ssh: "SSHOptions") -> JobTarget:
    """Cluster `name`'s hosts, EFS workdir, venv, SSH settings and GPUs (infra/cloud/cluster_target.py), with
    `workdir`, `python` and the SSH settings given over the cluster's."""
    from mxlaunch.infra.cloud.cluster_target import cluster_target  # heavy

    return cluster_target(name, workdir=workdir, python=python, ssh=ssh)


def resume_target(request: TrainRequest) -> JobTarget:
    """Where the job of request.resume ran (job.yaml), this launch's flags over the recorded values. A
    cluster's job resolves the cluster again by name: its instances' addresses may have changed since."""
    record = rundir.load_job(request.resume)
    recorded = record.target.cluster if record.target else None
    if request.hosts or not recorded:
        return recorded_target(request.resume, request.python, request.ssh, request.workdir, request.hosts)
    return cluster(recorded, request.workdir or record.workdir, request.python or record.target.python, request.ssh)


def _recorded_ssh(recorded: Optional[SSHRecord], given: Optional["SSHOptions"]) -> "SSHOptions":
    """This launch's --ssh-* flags over the ones job.yaml recorded."""
    from mxlaunch.infra.transport.ssh import SSHOptions  # heavy

    given = given or SSHOptions()
    if recorded is None:
        return given
    return dataclasses.replace(given, key=given.key or recorded.key, user=given.user or recorded.user,
                               known_hosts=given.known_hosts or recorded.known_hosts,
                               accept_new=given.accept_new or bool(recorded.accept_new),
                               config_path=recorded.config)


def recorded_target(run_dir: str, python: Optional[str] = None, ssh: Optional["SSHOptions"] = None,
                    workdir: Optional[str] = None, hosts: Optional[str] = None) -> JobTarget:
    """Where RUN_DIR's job ran, from its job.yaml: on this machine, or over SSH on its hosts with its
    interpreter, workdir and SSH settings, each overridden by this launch's --python, --workdir, --ssh-*.
    `hosts` (--hosts FILE|h1,h2): a --hosts job on other hosts (_moved_hosts)."""
    record = rundir.load_job(run_dir)
    found = _moved_hosts(run_dir, record, hosts) if hosts is not None else parse_hostfile_text(
        "\n".join(record.hosts or ["127.0.0.1"]), name=rundir.job_yaml(run_dir))
    workdir = workdir or record.workdir or os.getcwd()
    if record.local:
        return JobTarget(hosts=found, local=True, workdir=workdir)
    target = record.target
    return ssh_target(found, workdir, python or (target.python if target else None),
                      _recorded_ssh(target.ssh if target else None, ssh),
                      gpus_per_host=(target.gpus_per_host or 0) if target else 0)


def _moved_hosts(run_dir: str, record: JobRecord, text: str) -> tuple:
    """--resume RUN_DIR --hosts FILE|h1,h2: the job of a --hosts run on other hosts (a detached run's after
    `launch cluster repair`: its instances' addresses changed). Only a --hosts job (a local one has no hosts, a
    cluster's resolves its cluster again), and with as many worker slots as it had: the job's shape (workers,
    servers, ranks per host) is job.yaml's, only where it runs moves."""
    cluster_name = record.target.cluster if record.target else None
    if record.local or cluster_name:
        ran = "on this machine (--local)" if record.local else \
            f"on cluster {cluster_name}, which --resume resolves again by itself"
        raise UsageError(f"--resume {run_dir} --hosts: its job ran {ran}; --hosts moves only a --hosts job")
    hosts = parse_hosts(text)
    recorded = parse_hostfile_text("\n".join(record.hosts or []), name=rundir.job_yaml(run_dir))
    had, has = sum(h.slots for h in recorded), sum(h.slots for h in hosts)
    if has != had:
        raise UsageError(f"--resume {run_dir} --hosts: its job ran on {had} worker slot{'s' if had != 1 else ''}, "
                         f"these hosts offer {has}: give hosts with as many (slots=N in a hostfile)")
    return hosts


def made_whole(target: JobTarget, spec: JobSpec, ssh: "SSHOptions", doomed: Sequence[str],
               echo: Callable[[str], None]) -> Tuple[JobTarget, JobSpec]:
    """Before a restart under --cluster (infra/cloud/repair.py restart_hosts): the same target and spec when
    every host answers SSH and none had a spot notice (`doomed`: their private addresses), with no AWS call;
    else the cluster made whole, and the job's hosts taken from it as it is now."""
    from mxlaunch.infra.cloud.cluster_target import with_settings  # heavy
    from mxlaunch.infra.cloud.repair import restart_hosts  # heavy

    found = restart_hosts(target.cluster, [h.address for h in spec.hosts], doomed, echo)
    if found is None:
        return target, spec
    found = with_settings(found, target.workdir, target.python, ssh)
    return found, dataclasses.replace(spec, hosts=found.job_hosts(spec.num_workers)).validate()


def on_hosts(command: Sequence[str], target: JobTarget) -> Tuple[str, ...]:
    """SSH mode: `trainer` or `python` alone means the one beside the job's interpreter (--python, a cluster's
    venv), as --local finds it beside this launcher's: a non-interactive SSH session's PATH lacks the venv."""
    command = tuple(command)
    if not command or "/" in command[0] or command[0] not in VENV_PROGRAMS or not target.python:
        return command
    program = target.python if command[0].startswith("python") else posixpath.join(
        posixpath.dirname(target.python), command[0])
    return (program,) + command[1:]
