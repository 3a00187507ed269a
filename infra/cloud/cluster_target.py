"""What `launch train --cluster NAME` needs from a cluster, in one call:

    cluster_target(name, region=None) -> ClusterTarget
    ClusterTarget.job_target(workdir, python, ssh) -> the launcher's JobTarget (explicit flags win)

`hosts` are the instances' PRIVATE addresses (what ps-lite roles must use to reach each other: the security
group admits cluster traffic only between members), one slot each (one worker per host drives every GPU of it
with `--gpus 0,...,gpus_per_host-1`). The launcher reaches them over SSH with `ssh -F ssh_config <address>`:
the ssh config maps each private address to the public one, with the cluster's user, key and known_hosts.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from mxlaunch.errors import CommandError

from mxlaunch.infra.cloud import catalog, local_state as state
from mxlaunch.infra.cloud.aws import Aws
from mxlaunch.infra.cloud.record import Instance, find_instances
from mxlaunch.infra.cloud.spec import DEFAULT_SSH_USER, VENV, WORKDIR, validate_name
from mxlaunch.infra.transport.target import JobTarget, ssh_target

if TYPE_CHECKING:  # paramiko: not for every `launch cluster` command
    from mxlaunch.infra.transport.ssh import SSHOptions


@dataclass(frozen=True)
class ClusterTarget:
    name: str
    region: str
    hosts: tuple  # of mxlaunch.infra.transport.hosts.Host (private addresses, user set, slots=1)
    gpus_per_host: int
    workdir: str  # on EFS, shared by every host
    python: str  # the EFS virtual environment's interpreter (absolute path on every host)
    ssh_key: Optional[Path]  # None: the user's own --key-name; ssh finds it through the agent/ssh config
    ssh_user: str
    ssh_config: Path  # `ssh -F` this; maps private addresses to public ones
    known_hosts: Path
    env: tuple = ()  # ((KEY, VALUE), ...) every role needs on this instance type (infra/cloud/catalog.py role_env)

    def job_target(self, workdir: Optional[str], python: Optional[str], ssh: "SSHOptions") -> JobTarget:
        """The launcher's target: this cluster's hosts, EFS workdir, venv, SSH settings and GPUs. A value
        the user gave (--workdir, --python, and in `ssh` --ssh-key, --ssh-user, --known-hosts) beats the
        cluster's; the cluster's ssh config always maps its private addresses."""
        ssh = dataclasses.replace(ssh, key=ssh.key or (str(self.ssh_key) if self.ssh_key else None),
                                  user=ssh.user or self.ssh_user, known_hosts=ssh.known_hosts or str(self.known_hosts),
                                  config_path=str(self.ssh_config))
        return ssh_target(self.hosts, workdir or self.workdir, python or self.python, ssh,
                          gpus_per_host=self.gpus_per_host, env=self.env)


def ssh_entries(name: str, instances) -> list:
    return [(f"{name}-{n}", i.private_ip, i.public_ip or i.private_ip)
            for n, i in enumerate(instances) if i.private_ip or i.public_ip]


def write_local_files(name: str, instances, ssh_user: str, key: Optional[Path]) -> tuple:
    """Hostfile (templates/hosts.j2) and ssh config of the live instances; returns both paths."""
    hosts = [state.host_for(i.private_ip, ssh_user) for i in instances if i.private_ip]
    return (state.write_hostfile(name, hosts),
            state.write_ssh_config(name, ssh_entries(name, instances), ssh_user, key))


def hours_since(when: Optional[dt.datetime]) -> float:
    if when is None:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (dt.datetime.now(dt.timezone.utc) - when).total_seconds() / 3600)


def cluster_target(name: str, region: Optional[str] = None, aws: Optional[Aws] = None) -> ClusterTarget:
    validate_name(name)  # `--cluster ../../x` is refused before any path is built
    meta = state.read_meta(name)
    aws = aws or Aws(region=region or meta.get("region"))
    running = [i for i in find_instances(aws, name, states=("running",))]
    if not running:
        raise CommandError(f"cluster {name} has no running instances in {aws.region}: "
                           f"`launch cluster up {name} ...` first")
    itype = catalog.CATALOG.get(running[0].instance_type)
    gpus = itype.gpus if itype else int(meta.get("gpus_per_host", 1))
    if meta.get("extra") == "cpu":  # installed with --extra cpu: the CPU build, so no --gpus and no GPU preflight
        gpus = 0
    user = meta.get("ssh_user", DEFAULT_SSH_USER)
    key = Path(meta["key_file"]) if meta.get("key_file") else None
    write_local_files(name, running, user, key)
    hosts = tuple(state.host_for(i.private_ip, user) for i in running if i.private_ip)
    return ClusterTarget(name=name, region=aws.region, hosts=hosts, gpus_per_host=gpus, workdir=WORKDIR,
                         python=f"{VENV}/bin/python", env=tuple(sorted(catalog.role_env(running[0].instance_type).items())),
                         ssh_key=key, ssh_user=user,
                         ssh_config=state.ssh_config_path(name), known_hosts=state.known_hosts_path(name))


def cost(instances) -> tuple:
    """(estimated $/h now, estimated $ so far) of the present instances; None where no price is known."""
    per_hour, so_far = 0.0, 0.0
    for i in instances:
        itype: Optional[catalog.InstanceType] = catalog.CATALOG.get(i.instance_type)
        if not itype or itype.price_per_hour is None:
            return None, None
        if i.state in ("pending", "running"):
            per_hour += itype.price_per_hour
        so_far += itype.price_per_hour * hours_since(i.launch_time) if i.state != "stopped" else 0.0
    return per_hour, so_far


def describe(instance: Instance) -> str:
    itype = catalog.CATALOG.get(instance.instance_type)
    return f"{itype.gpus} x {itype.gpu_model}" if itype else "?"
