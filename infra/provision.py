"""`up`: a pipeline of small idempotent steps, each "find by tag, else create, record". Everything created is
written to a ledger; any failure (or Ctrl-C) removes what this `up` created, unless --keep-on-failure."""
from __future__ import annotations

import dataclasses
import uuid
from typing import Callable, List, Optional

from mxlaunch.errors import CommandError, UsageError
from mxlaunch.launcher.render import render

from mxlaunch.infra import state, teardown, wait
from mxlaunch.infra.aws import Aws, AwsError, CapacityUnavailable
from mxlaunch.infra.record import ClusterRecord, Instance, creation_token, find_instances, tag_spec, tags
from mxlaunch.infra.spec import DLAMI_PARAMETER, EFS_ROOT, VENV, ClusterSpec

RUNNING_TIMEOUT = 900.0
EFS_TIMEOUT = 300.0
INTERVAL = 5.0
NFS_PORT = 2049


@dataclasses.dataclass
class Ledger:
    """What this `up` created (ids), so that a failure undoes exactly that."""

    key_name: Optional[str] = None
    security_group: Optional[str] = None
    efs_security_group: Optional[str] = None
    placement_group: Optional[str] = None
    file_system: Optional[str] = None
    mount_targets: List[tuple] = dataclasses.field(default_factory=list)
    instances: List[Instance] = dataclasses.field(default_factory=list)

    def as_record(self, name: str, region: str) -> ClusterRecord:
        return ClusterRecord(name=name, region=region, instances=tuple(self.instances),
                             security_group=self.security_group, efs_security_group=self.efs_security_group,
                             key_name=self.key_name, placement_group=self.placement_group,
                             file_system=self.file_system, mount_targets=tuple(self.mount_targets))


def plan(spec: ClusterSpec, record: ClusterRecord) -> List[str]:
    """What `up` would create, one line each (empty: the cluster is complete)."""
    todo = []
    if not spec.key_name and not record.key_name:
        todo.append(f"key pair {spec.resource_name} (private key saved to {state.key_path(spec.name)})")
    if not record.security_group:
        todo.append(f"security group {spec.resource_name}: SSH from {spec.ssh_cidr}, all traffic within the group")
    elif spec.ssh_cidr not in record.ssh_cidrs:
        todo.append(f"SSH rule: from {spec.ssh_cidr} instead of {', '.join(record.ssh_cidrs) or 'nowhere'}")
    if spec.efs and not record.efs_security_group:
        todo.append(f"security group {spec.resource_name}-efs: NFS only from the cluster's group")
    if spec.use_placement_group and not record.placement_group:
        todo.append(f"cluster placement group {spec.resource_name}")
    if spec.efs and not record.file_system:
        todo.append("encrypted EFS file system, mounted at /efs on every instance")
    missing = spec.count - len(record.live)
    if missing > 0:
        market = "spot" if spec.spot else "on-demand"
        todo.append(f"{missing} x {spec.instance_type} {market} instance(s), {spec.itype.gpus} x "
                    f"{spec.itype.gpu_model} each")
    elif spec.efs and record.file_system and not record.mount_targets and record.live:
        todo.append("EFS mount target")
    return todo


def default_network(aws: Aws) -> tuple:
    """(vpc id, default subnets sorted by availability zone)."""
    vpcs = aws.call("ec2", "describe_vpcs", Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs", [])
    if not vpcs:
        raise UsageError(f"no default VPC in {aws.region}: create one with `aws ec2 create-default-vpc` "
                         f"(launch cluster uses the default VPC)")
    vpc = vpcs[0]["VpcId"]
    subnets = list(aws.paginate("ec2", "describe_subnets", "Subnets",
                                Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                         {"Name": "default-for-az", "Values": ["true"]}]))
    if not subnets and not aws.dry_run:
        raise UsageError(f"the default VPC {vpc} in {aws.region} has no default subnets")
    return vpc, sorted(subnets, key=lambda s: s["AvailabilityZone"])


def resolve_ami(aws: Aws, spec: ClusterSpec) -> str:
    if spec.ami:
        return spec.ami
    try:
        return aws.call("ssm", "get_parameter", Name=DLAMI_PARAMETER)["Parameter"]["Value"]
    except AwsError as exc:
        if exc.code in ("ParameterNotFound", "InvalidParameter"):
            raise AwsError(f"the Deep Learning AMI is not published in {aws.region} (SSM parameter "
                           f"{DLAMI_PARAMETER} not found): pass --ami", exc.code) from exc
        raise


def user_data(spec: ClusterSpec, efs_dns: Optional[str]) -> str:
    return render("cluster_userdata.sh.j2", name=spec.name, max_minutes=spec.max_minutes,
                  max_hours=spec.max_hours, efs_dns=efs_dns, efs_root=EFS_ROOT, venv=VENV,
                  ssh_user=spec.ssh_user)


class Up:
    """One run of `launch cluster up`."""

    def __init__(self, aws: Aws, spec: ClusterSpec, echo: Callable[[str], None],
                 finish: Optional[Callable[[ClusterRecord], ClusterRecord]] = None):
        self.aws, self.spec, self.echo = aws, spec, echo
        self.finish = finish  # the --wait part: its failure rolls back too
        self.ledger = Ledger()

    def run(self, record: ClusterRecord) -> ClusterRecord:
        self.fresh = record.empty  # a new cluster: a failure also removes its local state directory
        try:
            record = self._steps(record)
            return self.finish(record) if self.finish else record
        except BaseException as exc:
            if self.spec.keep_on_failure:
                self.echo("--keep-on-failure: leaving what was created; `launch cluster down "
                          f"{self.spec.name}` removes it")
            else:
                self.rollback(exc)
            raise

    def rollback(self, exc: BaseException) -> None:
        created = self.ledger.as_record(self.spec.name, self.aws.region)
        if created.empty:
            return
        self.echo(f"up failed ({type(exc).__name__}); removing what this run created")
        try:
            for line in teardown.remove(self.aws, created, self.echo, remove_local_key=bool(created.key_name)):
                self.echo(f"  removed {line}")
        except CommandError as rb_exc:
            self.echo(f"rollback incomplete ({rb_exc.format_message()}); run `launch cluster down "
                      f"{self.spec.name}` to remove the rest")
            return
        if self.fresh and not self.aws.dry_run:
            state.remove_dir(self.spec.name)

    def _steps(self, record: ClusterRecord) -> ClusterRecord:
        aws, spec = self.aws, self.spec
        # Reads first: a bad AMI or a missing VPC fails before anything is created.
        vpc, subnets = default_network(aws)
        ami = resolve_ami(aws, spec) if len(record.live) < spec.count else None
        key_name, key_file = self.key_pair(record)
        sg = self.security_group(record, vpc)
        efs_sg = self.efs_security_group(record, vpc, sg) if spec.efs else None
        pg = self.placement_group(record)
        fs = self.file_system(record) if spec.efs else None
        efs_dns = f"{fs}.efs.{aws.region}.amazonaws.com" if fs else None
        instances = self.instances(record, ami, key_name, sg, pg, efs_dns, subnets)
        mounts = self.mount_targets(record, fs, efs_sg, instances) if fs else ()
        if not aws.dry_run:
            state.write_meta(spec.name, region=aws.region, instance_type=spec.instance_type,
                             gpus_per_host=spec.itype.gpus, ssh_user=spec.ssh_user,
                             key_file=str(key_file) if key_file else None, key_name=key_name,
                             efs=fs, spot=spec.spot, max_hours=spec.max_hours, count=spec.count)
        return dataclasses.replace(record, instances=instances, security_group=sg, efs_security_group=efs_sg,
                                   key_name=record.key_name or self.ledger.key_name, placement_group=pg,
                                   file_system=fs, mount_targets=mounts, vpc_id=vpc)

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
        path = state.key_path(spec.name)
        if record.key_name:
            if not path.exists() and not aws.dry_run:
                raise CommandError(f"key pair {record.key_name} exists but its private key {path} is missing: "
                                   f"run `launch cluster down {spec.name}` and up again, or pass --key-name")
            return record.key_name, path
        if path.exists() and not aws.dry_run:
            path.unlink()  # a stale key of a cluster that no longer exists: useless, and in the way
        resp = aws.call("ec2", "create_key_pair", KeyName=spec.resource_name, KeyType="ed25519",
                        TagSpecifications=tag_spec("key-pair", spec.name, "cluster"))
        self.ledger.key_name = spec.resource_name
        if not aws.dry_run:
            state.save_key(spec.name, resp["KeyMaterial"])
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

    def security_group(self, record: ClusterRecord, vpc: str) -> str:
        aws, spec = self.aws, self.spec
        if record.security_group:
            stale = [c for c in record.ssh_cidrs if c != spec.ssh_cidr]
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
                      TagSpecifications=tag_spec("security-group", spec.name, "cluster"))["GroupId"]
        self.ledger.security_group = sg
        aws.call("ec2", "authorize_security_group_ingress", GroupId=sg, IpPermissions=[
            self._ssh_rule(spec.ssh_cidr), {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg, "Description": "cluster members"}]}])
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
        aws.call("ec2", "authorize_security_group_ingress", GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": NFS_PORT, "ToPort": NFS_PORT,
             "UserIdGroupPairs": [{"GroupId": cluster_sg, "Description": "NFS from cluster members"}]}])
        # A mount target answers; it never starts connections: no egress at all.
        aws.call("ec2", "revoke_security_group_egress", GroupId=sg, IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
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
            wait.poll(lambda: aws.call("efs", "describe_file_systems", FileSystemId=fs)["FileSystems"][0],
                      lambda d: d.get("LifeCycleState") == "available", timeout=EFS_TIMEOUT, interval=INTERVAL,
                      what=f"EFS {fs} to become available")
        self.echo(f"created encrypted EFS file system {fs}")
        return fs

    def instances(self, record, ami, key_name, sg, pg, efs_dns, subnets) -> tuple:
        aws, spec = self.aws, self.spec
        live = record.live
        other = sorted({i.instance_type for i in live} - {spec.instance_type})
        if other:
            raise UsageError(f"cluster {spec.name} already runs {', '.join(other)} instances, not "
                             f"{spec.instance_type}: `launch cluster down {spec.name}` first, or use another name")
        missing = spec.count - len(live)
        if missing < 0:
            self.echo(f"warning: cluster {spec.name} has {len(live)} instances but {spec.count} were asked: "
                      f"likely a leak (`launch cluster status {spec.name}` lists them)")
        if missing <= 0:
            return record.instances
        if live:  # the placement group and the mount target pin the zone
            subnets = [s for s in subnets if s["SubnetId"] == live[0].subnet_id] or subnets
        params = dict(ImageId=ami, InstanceType=spec.instance_type, MinCount=missing, MaxCount=missing,
                      KeyName=key_name, SecurityGroupIds=[sg], UserData=user_data(spec, efs_dns),
                      MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled",
                                       "HttpPutResponseHopLimit": 2},
                      TagSpecifications=tag_spec("instance", spec.name, "node") + tag_spec("volume", spec.name,
                                                                                           "node"))
        if pg:
            params["Placement"] = {"GroupName": pg}
        if spec.max_hours is not None:
            params["InstanceInitiatedShutdownBehavior"] = "terminate"
        if spec.spot:
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
        tried = []
        for subnet in subnets or [{"SubnetId": None, "AvailabilityZone": "?"}]:
            az = subnet["AvailabilityZone"]
            try:
                # One call for all N; ClientToken makes botocore's own retries safe (no double launch).
                resp = aws.call("ec2", "run_instances", SubnetId=subnet["SubnetId"], ClientToken=uuid.uuid4().hex,
                                **params)
            except CapacityUnavailable as exc:
                tried.append(az)
                self.echo(f"no capacity for {missing} x {spec.instance_type} in {az} ({exc.code}); "
                          f"trying the next zone" if len(tried) < len(subnets) else
                          f"no capacity for {missing} x {spec.instance_type} in {az} ({exc.code})")
                continue
            new = [Instance.from_api(d) for d in resp["Instances"]]
            self.ledger.instances.extend(new)
            self.echo(f"launched {len(new)} x {spec.instance_type} in {az}: {' '.join(i.id for i in new)}")
            return tuple(record.instances) + tuple(new)
        raise CapacityUnavailable(
            f"no capacity for {missing} x {spec.instance_type}{' (spot)' if spec.spot else ''} in any zone of "
            f"{aws.region} (tried {', '.join(tried)}); try later, another --region, fewer instances"
            f"{'' if spec.spot else ''} or another --instance-type", "InsufficientInstanceCapacity")

    def mount_targets(self, record, fs, efs_sg, instances) -> tuple:
        aws = self.aws
        have = {subnet for _, subnet in record.mount_targets}
        mounts = list(record.mount_targets)
        for subnet in sorted({i.subnet_id for i in instances if i.live and i.subnet_id} - have):
            mt = aws.call("efs", "create_mount_target", FileSystemId=fs, SubnetId=subnet,
                          SecurityGroups=[efs_sg])["MountTargetId"]
            self.ledger.mount_targets.append((mt, subnet))
            mounts.append((mt, subnet))
            self.echo(f"created EFS mount target {mt} in {subnet}")
        return tuple(mounts)


def wait_running(aws: Aws, name: str, ids, echo, timeout: float = RUNNING_TIMEOUT) -> tuple:
    """Poll until every instance in `ids` runs (bounded); a progress line whenever the count changes."""
    ids = set(ids)
    seen = [None]

    def fetch():
        return [i for i in find_instances(aws, name, states=("pending", "running", "stopping", "stopped",
                                                               "shutting-down", "terminated")) if i.id in ids]

    def show(found):
        running = sum(1 for i in found if i.state == "running")
        if running != seen[0]:
            echo(f"  running: {running}/{len(ids)}")
            seen[0] = running
        dead = [i for i in found if i.state in ("shutting-down", "terminated", "stopped", "stopping")]
        if dead:
            raise CommandError(f"instance(s) stopped while starting: "
                               f"{', '.join(f'{i.id} ({i.state})' for i in dead)} (spot reclaimed or boot failure)")
    found = wait.poll(fetch, lambda f: len(f) == len(ids) and all(i.state == "running" for i in f),
                      timeout=timeout, interval=INTERVAL, what=f"{len(ids)} instance(s) of {name} to run",
                      progress=show)
    return tuple(found)
