"""Where a job runs: one typed target, resolved before any plan is made, however the user named it.

    --local                 local_target(workdir)
    --hosts FILE|h1,h2      hosts_target(text, workdir, python, ssh)
    --cluster NAME          mxlaunch.infra.cloud.cluster_target.cluster_target(NAME, workdir=, python=, ssh=)
    --resume RUN_DIR        the target its job.yaml records (mxlaunch.launcher.jobs.where.resume_target)

The plan, the preflight and the runner take this value; nothing edits it (a restart that needs other hosts
gets a new one).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

from mxlaunch.infra.transport.hosts import Host, parse_hosts

if TYPE_CHECKING:  # launcher.ssh imports paramiko: only SSH mode needs it, at run time
    from mxlaunch.infra.transport.ssh import SSHOptions


@dataclass(frozen=True)
class JobTarget:
    hosts: Tuple[Host, ...]
    local: bool = False
    python: Optional[str] = None  # SSH mode: the interpreter on every host that runs each role's guard
    workdir: Optional[str] = None  # where roles run; None = the launcher's current directory
    ssh: Optional["SSHOptions"] = None  # SSH mode's key, user, known_hosts, ssh config; None in local mode
    gpus_per_host: int = 0  # a GPU cluster's: trainer commands get --gpus 0,...,n-1 (launcher/jobs/workload.py)
    env: Tuple[Tuple[str, str], ...] = ()  # what every role needs on these hosts (e.g. MXNET_USE_FUSION=0); --env wins
    cluster: Optional[str] = None  # a cluster's name: --resume and restarts resolve it again (its addresses change)

    def job_hosts(self, num_workers: int) -> Tuple[Host, ...]:
        """The hosts of the job's plan: in local mode 127.0.0.1 with a slot for every worker."""
        return (Host.loopback(slots=num_workers),) if self.local else self.hosts


def default_python() -> str:
    """Without --python: this launcher's own interpreter path, which a shared venv (EFS, the same AMI) has
    on every host too. The preflight proves it exists and imports mxnet everywhere before anything runs."""
    return sys.executable


def local_target(workdir: Optional[str] = None) -> JobTarget:
    return JobTarget(hosts=(Host.loopback(),), local=True, workdir=os.path.abspath(workdir) if workdir else None)


def ssh_target(hosts: Tuple[Host, ...], workdir: Optional[str], python: Optional[str], ssh: "SSHOptions",
               gpus_per_host: int = 0, env: Tuple[Tuple[str, str], ...] = ()) -> JobTarget:
    """SSH mode on `hosts`; the workdir is a path on the hosts, kept as given."""
    return JobTarget(hosts=tuple(hosts), python=python or default_python(), workdir=workdir, ssh=ssh,
                     gpus_per_host=gpus_per_host, env=tuple(env))


def hosts_target(text: str, workdir: Optional[str], python: Optional[str], ssh: "SSHOptions") -> JobTarget:
    """`--hosts FILE|h1,h2:2222` with the --workdir, --python and --ssh-* flags."""
    return ssh_target(parse_hosts(text), workdir, python, ssh)
