"""`up`: a pipeline of small idempotent steps, each "find by tag, else create, record". Reads and checks come
first (prelaunch.py); everything created is written to a ledger. A failure before any instance was launched
(or Ctrl-C, SIGTERM, SIGHUP at any time) removes what this `up` created, unless --keep-on-failure. A failure
after instances were launched keeps everything (they bill already, and `up` run again finishes the cluster:
it is idempotent by tags) and says so in one line: what is kept, its cost per hour, and the two ways on. A
resource created seconds ago may not be visible yet: calls that use one retry AWS's NotFound codes with
backoff, bounded, and so does the rollback that deletes one."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Callable, List, Optional

from mxlaunch.errors import CommandError, UsageError

from mxlaunch.infra.cloud import catalog, deadlines, local_state, prelaunch, run_instances, teardown, wait
from mxlaunch.infra.cloud.aws import Aws, AwsError
from mxlaunch.infra.cloud.record import (ClusterRecord, Ledger, creation_token, discover, find_instances,
                                         tag_spec, tags)
from mxlaunch.infra.cloud.signals import Signalled
from mxlaunch.infra.cloud.spec import DEFAULT_SSH_USER, ClusterSpec, creation_tags, deadline_text

EFS_TIMEOUT = 300.0
INTERVAL = 5.0
NFS_PORT = 2049
CLOCK: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)  # noqa: E731


def plan(spec: ClusterSpec, record: ClusterRecord) -> List[str]:
    """What `up` would create, one line each (empty: the cluster is complete)."""
    todo = []
    if not spec.key_name and not record.key_name:
        todo.append(f"key pair {spec.resource_name} (private key saved to {local_state.key_path(spec.name)})")
    if not record.security_group:
        todo.append(f"security group {spec.resource_name}: SSH from {spec.ssh_cidr}, all traffic within the group")
    elif spec.ssh_cidr not in record.ssh_cidrs:
        todo.append(f"SSH rule: from {spec.ssh_cidr} {'besides' if spec.foreign else 'instead of'} "
                    f"{', '.join(record.ssh_cidrs) or 'nowhere'}")
    if spec.efs and not record.efs_security_group:
        todo.append(f"security group {spec.resource_name}-efs: NFS only from the cluster's group")
    if spec.use_placement_group and not record.placement_group:
        todo.append(f"cluster placement group {spec.resource_name}")
    if spec.efs and not record.file_system:
        todo.append("encrypted EFS file system, mounted at /efs on every instance")
    missing = spec.count - len(record.live)
    if missing > 0:
        market = "spot" if spec.spot else "on-demand"
        fallback = "; on-demand instead if spot capacity is gone (--on-demand-fallback)" if (
            spec.spot and spec.on_demand_fallback) else ""
        todo.append(f"{missing} x {spec.instance_type} {market} instance(s), {spec.itype.gpus} x "
                    f"{spec.itype.gpu_model} each{fallback}")
    elif spec.efs and record.file_system and not record.mount_targets and record.live:
        todo.append("EFS mount target")
    return todo


def _settle(action: Callable[[], dict], what: str) -> dict:
    """A call that uses a resource created seconds ago (`what` waits to be visible): teardown.settle."""
    return teardown.settle(action)


def again(spec: ClusterSpec) -> str:
    """The `launch cluster up` that completes the cluster of `spec` (the options that change what it makes)."""
    flags = [f"--instance-type {spec.instance_type}", f"--count {spec.count}", f"--ssh-cidr {spec.ssh_cidr}"]
    flags += [flag for flag, on in (("--spot", spec.spot), ("--no-efs", not spec.efs),
                                    ("--no-placement-group", not spec.placement_group)) if on]
    flags += [f"--key-name {spec.key_name}"] * bool(spec.key_name)
    flags += [f"--ssh-user {spec.ssh_user}"] * (spec.ssh_user != DEFAULT_SSH_USER)
    return f"launch cluster up {spec.name} {' '.join(flags)}"


class Up:
    """One run of `launch cluster up`."""

    def __init__(self, aws: Aws, spec: ClusterSpec, echo: Callable[[str], None],
                 finish: Optional[Callable[[ClusterRecord], ClusterRecord]] = None):
        self.aws, self.spec, self.echo = aws, spec, echo
        self.finish = finish  # the --wait part: runs after the launch, so its failure keeps the cluster
        self.ledger = Ledger()
        self.spot_fits = True  # prelaunch.check_quota's verdict on the spot quota

    def run(self, record: ClusterRecord) -> ClusterRecord:
        self.fresh = record.empty  # a new cluster: a failure also removes its local state directory
        self.start = record
        self.before = {i.id for i in record.instances}
        try:
            record = self._steps(record)
            return self.finish(record) if self.finish else record
        except BaseException as exc:
            if self.ledger.instances and not isinstance(exc, (KeyboardInterrupt, Signalled)) and not self.aws.dry_run:
                self.echo(self.kept())  # past the launch: everything stays, `up` again finishes it
            elif self.spec.keep_on_failure:
                self.echo("--keep-on-failure: leaving what was created; `launch cluster down "
                          f"{self.spec.name}` removes it")
            else:
                self.rollback(exc)
            raise

    def kept(self) -> str:
        """The one line of a failure after the launch: what is kept, its cost per hour, the two ways on."""
        spec, mine = self.spec, self.ledger.as_record(self.spec.name, self.aws.region)
        ids = list(dict.fromkeys([i.id for i in self.start.live] + [i.id for i in mine.instances]))
        fs = mine.file_system or self.start.file_system
        what = f"{len(ids)} x {spec.instance_type} ({' '.join(ids)})" + (f", EFS {fs}" if fs else "")
        price = catalog.price_text(spec.itype, len(ids)) + (" at most (spot bills less)" if spec.spot else "")
        return (f"up failed after launching instances: kept cluster {spec.name} as it is ({what}, and all else "
                f"tagged launch:cluster={spec.name}), {price} until removed; `{again(spec)}` finishes it, "
                f"`launch cluster down {spec.name}` removes it")

    def created(self) -> ClusterRecord:
        """What this run created. A RunInstances whose answer never arrived (a signal, a lost connection) may
        still have started instances: its ClientToken finds them, and the tag (when it is listed already)."""
        created = self.ledger.as_record(self.spec.name, self.aws.region)
        if self.aws.dry_run:
            return created
        if self.fresh:
            # a new cluster: everything tagged with its name is this run's — also what a signal caught between
            # a create call (which sets the tags itself) and the ledger
            created = _union(created, discover(self.aws, self.spec.name))
        if self.ledger.launching:
            known = self.before | {i.id for i in created.instances}
            lost = [i for token in self.ledger.launching for i in run_instances.lookup(self.aws, token)]
            lost += [] if self.fresh else list(find_instances(self.aws, self.spec.name))
            unknown = {i.id: i for i in lost if i.id not in known}
            created = dataclasses.replace(created, instances=created.instances + tuple(unknown.values()))
        return created

    def rollback(self, exc: BaseException) -> None:
        name = self.spec.name
        try:
            created = self.created()
        except Exception:  # noqa: BLE001 - what the ledger knows is still worth removing
            created = self.ledger.as_record(name, self.aws.region)
        if created.empty:
            return
        self.echo(f"up failed ({type(exc).__name__}); removing what this run created")
        todo = teardown.steps(self.aws, created, self.echo, remove_local_key=bool(created.key_name), fresh=True)
        done = 0
        try:
            for step in todo:
                line = step.run()
                if line:
                    self.echo(f"  removed {line}")
                done += 1
        except (KeyboardInterrupt, Signalled):
            self.echo(f"rollback interrupted; left: {'; '.join(s.label for s in todo[done:])}. "
                      f"`launch cluster down {name}` removes it")
            raise
        except CommandError as rb_exc:
            self.echo(f"rollback incomplete ({rb_exc.format_message()}); left: "
                      f"{'; '.join(s.label for s in todo[done:])}. `launch cluster down {name}` removes it")
            return
        if self.fresh and not self.aws.dry_run:
            local_state.remove_dir(name)

    def deadline(self, record: ClusterRecord) -> Optional[dt.datetime]:
        """When new instances end themselves: --max-hours from now (then the cluster's new deadline); without
        it, the cluster's recorded one (infra/cloud/deadlines.py); else never."""
        return deadlines.for_launch(self.spec.name, self.spec.max_hours, record, local_state.read_meta(self.spec.name),
                                    CLOCK(), "pass --max-hours H for the new instances")

    def _steps(self, record: ClusterRecord) -> ClusterRecord:
        aws, spec = self.aws, self.spec
        # Reads and checks first: a bad AMI, a missing VPC, a type offered nowhere or a vCPU quota too small
        # fails before anything is created.
        vpc, subnets = prelaunch.default_network(aws)
        missing = spec.count - len(record.live)
        image, deadline = None, None
        self.check_type(record)
        if missing > 0:
            image = prelaunch.image(aws, spec)
            subnets = prelaunch.offered_subnets(aws, spec, subnets)
            self.spot_fits = prelaunch.check_quota(aws, spec, missing, self.echo)
            deadline = self.deadline(record)
        if self.fresh and spec.binding and not aws.dry_run:  # bound before anything is created (infra/cloud/owner.py)
            local_state.write_meta(spec.name, region=aws.region, account=spec.binding.account,
                                   partition=spec.binding.partition)
        key_name, key_file = self.key_pair(record)
        sg = self.security_group(record, vpc, deadline)
        efs_sg = self.efs_security_group(record, vpc, sg) if spec.efs else None
        pg = self.placement_group(record)
        fs = self.file_system(record) if spec.efs else None
        efs_dns = f"{fs}.efs.{aws.region}.amazonaws.com" if fs else None
        self.mounts = list(record.mount_targets)
        instances = self.instances(record, image, key_name, sg, pg, efs_dns, subnets, deadline)
        self.record_meta(key_name, key_file, fs, deadline, missing > 0)  # before anything can fail after the launch
        if fs:  # the zone of the instances gets its mount target now, while they boot (their user data waits)
            for subnet in sorted({i.subnet_id for i in instances if i.live and i.subnet_id}):
                self.mount_target(fs, efs_sg, subnet)
        return dataclasses.replace(record, instances=instances, security_group=sg, efs_security_group=efs_sg,
                                   key_name=record.key_name or self.ledger.key_name, placement_group=pg,
                                   file_system=fs, mount_targets=tuple(self.mounts), vpc_id=vpc)

    def record_meta(self, key_name: str, key_file, fs: Optional[str], deadline: Optional[dt.datetime] = None,
                    launched: bool = False) -> None:
        """cluster.json: what the tags do not hold (read by ssh, repair, restarts and `train --cluster`); a kept
        cluster has it. `deadline`: the one instances were `launched` with, inherited by every later launch."""
        aws, spec = self.aws, self.spec
        if aws.dry_run:
            return
        meta = dict(region=aws.region, instance_type=spec.instance_type, gpus_per_host=spec.itype.gpus,
                    ssh_user=spec.ssh_user, key_file=str(key_file) if key_file else None, key_name=key_name,
                    efs=fs, spot=spec.spot, count=spec.count)
        if spec.max_hours is not None or self.fresh:  # growing without --max-hours keeps the setting
            meta["max_hours"] = spec.max_hours
        if launched or self.fresh:
            meta["deadline"] = deadline_text(deadline) if deadline else None
        if spec.on_demand_fallback is not None or self.fresh:  # read by repair and restarts: infra/cloud/repair.py
            meta["on_demand_fallback"] = bool(spec.on_demand_fallback)
        local_state.write_meta(spec.name, **meta)

    def check_type(self, record: ClusterRecord) -> None:
        other = sorted({i.instance_type for i in record.live} - {self.spec.instance_type})
        if other:
            raise UsageError(f"cluster {self.spec.name} already runs {', '.join(other)} instances, not "
                             f"{self.spec.instance_type}: `launch cluster down {self.spec.name}` first, or use "
                             f"another name")

    # -- steps: each finds what exists (in `record`), else creates it and writes it to the ledger ---------
    def key_pair(self, record: ClusterRecord) -> tuple:
        aws, spec = self.aws, self.spec
        if spec.key_name:
            try:
                aws.call("ec2", "describe_key_pairs", KeyNames=[spec.key_name])
            except AwsError as exc:
                if exc.code == "InvalidKeyPair.NotFound":
                    raise UsageError(f"--key-name {spec.key_name}: no such key pair in {aws.region}") from exc
                raise
            return spec.key_name, None
        path = local_state.key_path(spec.name)
        if record.key_name:
            if not path.exists() and not aws.dry_run:
                raise CommandError(f"key pair {record.key_name} exists but its private key {path} is missing: "
                                   f"run `launch cluster down {spec.name}` and up again, or pass --key-name")
            return record.key_name, path
        if path.exists() and not aws.dry_run:  # the only copy of some cluster's key: never removed here
            raise CommandError(f"cluster {spec.name}: a private key {path} is here but no key pair "
                               f"{spec.resource_name} in {aws.region}; nothing was created. `launch cluster down "
                               f"{spec.name}` removes it once it has checked the cluster is gone, or pass --key-name")
        resp = aws.call("ec2", "create_key_pair", KeyName=spec.resource_name, KeyType="ed25519",
                        TagSpecifications=tag_spec("key-pair", spec.name, "cluster"))
        self.ledger.key_name = spec.resource_name
        if not aws.dry_run:
            local_state.save_key(spec.name, resp["KeyMaterial"])
            self.echo(f"created key pair {spec.resource_name}; private key {path} (0600)")
        return spec.resource_name, path

    @staticmethod
    def _ssh_rule(cidr: str) -> dict:
        rule = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
        if ":" in cidr:
            rule["Ipv6Ranges"] = [{"CidrIpv6": cidr, "Description": "SSH (--ssh-cidr)"}]
        else:
            rule["IpRanges"] = [{"CidrIp": cidr, "Description": "SSH (--ssh-cidr)"}]
        return rule

    def security_group(self, record: ClusterRecord, vpc: str, deadline: Optional[dt.datetime] = None) -> str:
        """The cluster's group; a new one records `deadline` (the cluster's --max-hours deadline: it outlives
        every instance)."""
        aws, spec = self.aws, self.spec
        if record.security_group:
            # never take another owner's SSH rule away (--force on their cluster only adds ours)
            stale = [] if spec.foreign else [c for c in record.ssh_cidrs if c != spec.ssh_cidr]
            if spec.ssh_cidr not in record.ssh_cidrs:  # e.g. the user's address changed: SSH from the new one only
                aws.call("ec2", "authorize_security_group_ingress", GroupId=record.security_group,
                         IpPermissions=[self._ssh_rule(spec.ssh_cidr)])
                self.echo(f"SSH now allowed from {spec.ssh_cidr}")
            if stale:
                aws.call("ec2", "revoke_security_group_ingress", GroupId=record.security_group,
                         IpPermissions=[self._ssh_rule(c) for c in stale])
                self.echo(f"SSH no longer allowed from {', '.join(stale)}")
            return record.security_group
        sg = aws.call("ec2", "create_security_group", GroupName=spec.resource_name, VpcId=vpc,
                      Description=f"mxlaunch cluster {spec.name}: SSH from {spec.ssh_cidr}, all within the group",
                      TagSpecifications=tag_spec("security-group", spec.name, "cluster",
                                                 creation_tags(spec, "security-group", deadline)))["GroupId"]
        self.ledger.security_group = sg
        _settle(lambda: aws.call("ec2", "authorize_security_group_ingress", GroupId=sg, IpPermissions=[
            self._ssh_rule(spec.ssh_cidr),
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg, "Description": "cluster members"}]}]),
            f"security group {sg} to be visible")
        self.echo(f"created security group {sg}")
        return sg

    def efs_security_group(self, record: ClusterRecord, vpc: str, cluster_sg: str) -> str:
        aws, spec = self.aws, self.spec
        if record.efs_security_group:
            return record.efs_security_group
        sg = aws.call("ec2", "create_security_group", GroupName=f"{spec.resource_name}-efs", VpcId=vpc,
                      Description=f"mxlaunch cluster {spec.name}: EFS, NFS from the cluster's group only",
                      TagSpecifications=tag_spec("security-group", spec.name, "efs"))["GroupId"]
        self.ledger.efs_security_group = sg
        _settle(lambda: aws.call("ec2", "authorize_security_group_ingress", GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": NFS_PORT, "ToPort": NFS_PORT,
             "UserIdGroupPairs": [{"GroupId": cluster_sg, "Description": "NFS from cluster members"}]}]),
            f"security group {sg} to be visible")
        # A mount target answers; it never starts connections: no egress at all.
        _settle(lambda: aws.call("ec2", "revoke_security_group_egress", GroupId=sg, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]), f"security group {sg} to be visible")
        self.echo(f"created security group {sg} (EFS)")
        return sg

    def placement_group(self, record: ClusterRecord) -> Optional[str]:
        aws, spec = self.aws, self.spec
        if record.placement_group or not spec.use_placement_group:
            return record.placement_group
        aws.call("ec2", "create_placement_group", GroupName=spec.resource_name, Strategy="cluster",
                 TagSpecifications=tag_spec("placement-group", spec.name, "cluster"))
        self.ledger.placement_group = spec.resource_name
        self.echo(f"created placement group {spec.resource_name}")
        return spec.resource_name

    def file_system(self, record: ClusterRecord) -> str:
        aws, spec = self.aws, self.spec
        if record.file_system:
            return record.file_system
        resp = aws.call("efs", "create_file_system", CreationToken=creation_token(spec.name), Encrypted=True,
                        PerformanceMode="generalPurpose", ThroughputMode="elastic",
                        Tags=tags(spec.name, "efs"))
        fs = resp["FileSystemId"]
        self.ledger.file_system = fs
        if not aws.dry_run and resp.get("LifeCycleState") != "available":
            wait.poll(lambda: _settle(lambda: aws.call("efs", "describe_file_systems", FileSystemId=fs),
                                      f"EFS {fs} to be visible")["FileSystems"][0],
                      lambda d: d.get("LifeCycleState") == "available", timeout=EFS_TIMEOUT, interval=INTERVAL,
                      what=f"EFS {fs} to become available")
        self.echo(f"created encrypted EFS file system {fs}")
        return fs

    def instances(self, record, image, key_name, sg, pg, efs_dns, subnets, deadline) -> tuple:
        """The cluster's instances, the missing ones launched (run_instances.launch: one RunInstances per zone
        tried; a zone that has the file system's mount target already is tried first)."""
        spec = self.spec
        live = record.live
        missing = spec.count - len(live)
        if missing < 0:
            self.echo(f"warning: cluster {spec.name} has {len(live)} instances but {spec.count} were asked: "
                      f"likely a leak (`launch cluster status {spec.name}` lists them)")
        if missing <= 0:
            return record.instances
        if live:  # the placement group and the mount target pin the zone
            subnets = [s for s in subnets if s["SubnetId"] == live[0].subnet_id] or subnets
        mounted = {subnet for _, subnet in self.mounts}
        subnets = sorted(subnets, key=lambda s: s["SubnetId"] not in mounted)
        params = run_instances.parameters(spec, image, key_name, pg, efs_dns, deadline, missing)
        new = run_instances.launch(self.aws, spec, self.ledger, self.echo, subnets, params, [sg], self.spot_fits)
        return tuple(record.instances) + new

    def mount_target(self, fs: str, efs_sg: str, subnet: str) -> bool:
        """The file system's mount target in `subnet`, created and waited `available` unless it exists;
        True when this call created it."""
        aws = self.aws
        if any(s == subnet for _, s in self.mounts):
            return False
        resp = _settle(lambda: aws.call("efs", "create_mount_target", FileSystemId=fs, SubnetId=subnet,
                                        SecurityGroups=[efs_sg]), f"EFS {fs} to be visible")
        mt = resp["MountTargetId"]
        self.ledger.mount_targets.append((mt, subnet))
        self.mounts.append((mt, subnet))
        if not aws.dry_run and resp.get("LifeCycleState") != "available":
            def state() -> str:
                found = _settle(lambda: aws.call("efs", "describe_mount_targets", MountTargetId=mt),
                                f"mount target {mt} to be visible").get("MountTargets", [])
                got = found[0].get("LifeCycleState", "?") if found else "?"
                if got == "error":
                    raise CommandError(f"EFS mount target {mt} in {subnet} failed (state error): see the EFS "
                                       f"console for {fs}")
                return got
            wait.poll(state, lambda st: st == "available", timeout=EFS_TIMEOUT, interval=INTERVAL,
                      what=f"EFS mount target {mt} to become available")
        self.echo(f"created EFS mount target {mt} in {subnet}")
        return True


def _union(mine: ClusterRecord, found: ClusterRecord) -> ClusterRecord:
    """What the ledger holds and what the tags show (a resource just created may not be listed yet)."""
    def merged(a: tuple, b: tuple, key) -> tuple:
        seen = {key(x) for x in a}
        return a + tuple(x for x in b if key(x) not in seen)

    scalars = {f: getattr(mine, f) or getattr(found, f) for f in
               ("security_group", "efs_security_group", "key_name", "placement_group", "file_system", "vpc_id")}
    return dataclasses.replace(mine, **scalars,
                               instances=merged(mine.instances, found.instances, lambda i: i.id),
                               mount_targets=merged(mine.mount_targets, found.mount_targets, lambda m: m[0]),
                               volumes=merged(mine.volumes, found.volumes, lambda v: v))

