"""What `launch train --cluster NAME` needs from a cluster, in one call: the one target type of a job.

    cluster_target(name, region=None, *, workdir=None, python=None, ssh=None) -> JobTarget
    with_settings(target, workdir, python, ssh) -> JobTarget      the values a user gave over the cluster's

`hosts` are the instances' PRIVATE addresses (what ps-lite roles must use to reach each other: the security
group admits cluster traffic only between members), one slot each (one worker per host drives every GPU of it
with `--gpus 0,...,gpus_per_host-1`). The launcher reaches them over SSH with `ssh -F ssh_config <address>`:
the ssh config maps each private address to the public one, with the cluster's user, key and known_hosts.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from mxlaunch.errors import CommandError

from mxlaunch.infra.cloud import catalog, local_state, owner
from mxlaunch.infra.cloud.aws import Aws
from mxlaunch.infra.cloud.record import Instance, find_instances
from mxlaunch.infra.cloud.spec import DEFAULT_SSH_USER, VENV, WORKDIR, validate_name
from mxlaunch.infra.transport.target import JobTarget

if TYPE_CHECKING:  # paramiko: not for every `launch cluster` command
    from mxlaunch.infra.transport.ssh import SSHOptions


def with_settings(target: JobTarget, workdir: Optional[str], python: Optional[str],
                  ssh: Optional["SSHOptions"]) -> JobTarget:
    """A cluster's target with the values the user gave (--workdir, --python, and in `ssh` --ssh-key,
    --ssh-user, --known-hosts, --accept-new-host-keys) over the cluster's; the cluster's ssh config always
    maps its private addresses."""
    from mxlaunch.infra.transport.ssh import SSHOptions  # heavy

    own, given = target.ssh, ssh or SSHOptions()
    ssh = dataclasses.replace(given, key=given.key or own.key, user=given.user or own.user,
                              known_hosts=given.known_hosts or own.known_hosts, config_path=own.config_path)
    return dataclasses.replace(target, workdir=workdir or target.workdir, python=python or target.python, ssh=ssh)


def ssh_entries(name: str, instances) -> list:
    return [(f"{name}-{n}", i.private_ip, i.public_ip or i.private_ip)
            for n, i in enumerate(instances) if i.private_ip or i.public_ip]


def write_local_files(name: str, instances, ssh_user: str, key: Optional[Path]) -> tuple:
    """Hostfile (templates/hosts.j2) and ssh config of the live instances; returns both paths."""
    hosts = [local_state.host_for(i.private_ip, ssh_user) for i in instances if i.private_ip]
    return (local_state.write_hostfile(name, hosts),
            local_state.write_ssh_config(name, ssh_entries(name, instances), ssh_user, key))


def hours_since(when: Optional[dt.datetime]) -> float:
    if when is None:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (dt.datetime.now(dt.timezone.utc) - when).total_seconds() / 3600)


def cluster_target(name: str, region: Optional[str] = None, aws: Optional[Aws] = None, *,
                   workdir: Optional[str] = None, python: Optional[str] = None,
                   ssh: Optional["SSHOptions"] = None) -> JobTarget:
    """Cluster `name` as a job's target: its running instances' private addresses (one slot each), the EFS
    workdir, the venv's interpreter, its SSH settings (key, login user, known_hosts, ssh config), its GPUs per
    host and the role environment its instance type needs; `workdir`, `python` and `ssh` as with_settings.
    Credentials of another account than cluster.json records, or another region, are refused (owner.bound) before
    anything is read; its hostfile and ssh config are rewritten from the instances found."""
    validate_name(name)  # `--cluster ../../x` is refused before any path is built
    meta = local_state.read_meta(name)
    aws = aws or Aws(region=region or meta.region)
    owner.bound(aws, name, "use")  # another account's or region's cluster of that name is never this one
    running = [i for i in find_instances(aws, name, states=("running",))]
    if not running:
        raise CommandError(f"cluster {name} has no running instances in {aws.region}: "
                           f"`launch cluster up {name} ...` first")
    itype = catalog.CATALOG.get(running[0].instance_type)
    gpus = itype.gpus if itype else (1 if meta.gpus_per_host is None else meta.gpus_per_host)
    if meta.extra == "cpu":  # installed with --extra cpu: the CPU build, so no --gpus and no GPU preflight
        gpus = 0
    user = meta.ssh_user or DEFAULT_SSH_USER
    key = Path(meta.key_file) if meta.key_file else None
    write_local_files(name, running, user, key)
    own = local_state.ssh_options(name, user, key)
    found = JobTarget(hosts=tuple(local_state.host_for(i.private_ip, user) for i in running if i.private_ip),
                      python=f"{VENV}/bin/python", workdir=WORKDIR, ssh=own, gpus_per_host=gpus,
                      env=tuple(sorted(catalog.role_env(running[0].instance_type).items())), cluster=name)
    return with_settings(found, workdir, python, ssh)


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
