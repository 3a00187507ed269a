"""`ClusterRecord`: what exists in AWS for one cluster, found by its tag (the tags are the state)."""
from __future__ import annotations

import datetime as dt
import dataclasses
from dataclasses import dataclass
from typing import List, Optional

from mxlaunch.infra.cloud.aws import Aws
from mxlaunch.infra.cloud.spec import ROLE_TAG, TAG

LIVE_STATES = ("pending", "running")
PRESENT_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")


def tag_filter(name: str) -> list:
    return [{"Name": f"tag:{TAG}", "Values": [name]}]


def tags(name: str, role: str) -> list:
    return [{"Key": TAG, "Value": name}, {"Key": ROLE_TAG, "Value": role}, {"Key": "Name", "Value": f"launch-{name}"}]


def tag_spec(resource_type: str, name: str, role: str, extra: Optional[dict] = None) -> list:
    items = tags(name, role) + [{"Key": k, "Value": v} for k, v in (extra or {}).items()]
    return [{"ResourceType": resource_type, "Tags": items}]


def creation_token(name: str) -> str:
    """EFS idempotency token: one file system per cluster name per account and region."""
    return f"launch-cluster-{name}"


@dataclass(frozen=True)
class Instance:
    id: str
    state: str
    instance_type: str
    az: str
    subnet_id: Optional[str]
    private_ip: Optional[str]
    public_ip: Optional[str]
    launch_time: Optional[dt.datetime]
    lifecycle: str  # AWS's InstanceLifecycle: spot, scheduled, capacity-block; "on-demand" where AWS omits it
    launch_index: int = 0
    tags: tuple = ()
    image_id: Optional[str] = None  # a replacement (infra/cloud/repair.py) boots the image its peers run

    @classmethod
    def from_api(cls, d: dict) -> "Instance":
        return cls(id=d["InstanceId"], state=d.get("State", {}).get("Name", "?"),
                   instance_type=d.get("InstanceType", "?"), az=d.get("Placement", {}).get("AvailabilityZone", ""),
                   subnet_id=d.get("SubnetId"), private_ip=d.get("PrivateIpAddress"),
                   public_ip=d.get("PublicIpAddress"), launch_time=d.get("LaunchTime"),
                   lifecycle=d.get("InstanceLifecycle") or "on-demand", launch_index=d.get("AmiLaunchIndex", 0),
                   tags=tuple((t["Key"], t["Value"]) for t in d.get("Tags", [])), image_id=d.get("ImageId"))

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class ClusterRecord:
    name: str
    region: str
    instances: tuple = ()  # non-terminated, in a stable order (launch time, launch index, id)
    security_group: Optional[str] = None  # members: SSH from --ssh-cidr, all traffic from the group itself
    efs_security_group: Optional[str] = None  # mount targets: NFS from the members' group only
    key_name: Optional[str] = None  # the key pair `up` created (a --key-name of the user's is never tagged)
    placement_group: Optional[str] = None
    file_system: Optional[str] = None
    mount_targets: tuple = ()  # (mount target id, subnet id)
    vpc_id: Optional[str] = None
    ssh_cidrs: tuple = ()  # what the cluster group admits on port 22 today
    volumes: tuple = ()  # tagged volumes attached to nothing (leftovers that bill)

    @property
    def live(self) -> tuple:
        return tuple(i for i in self.instances if i.live)

    @property
    def empty(self) -> bool:
        return not (self.instances or self.security_group or self.efs_security_group or self.key_name
                    or self.placement_group or self.file_system or self.volumes)


def _sort_key(i: Instance):
    return (i.launch_time or dt.datetime.min.replace(tzinfo=dt.timezone.utc), i.launch_index, i.id)


def find_instances(aws: Aws, name: str, states=PRESENT_STATES) -> tuple:
    found = []
    for reservation in aws.paginate("ec2", "describe_instances", "Reservations",
                                    Filters=tag_filter(name) + [{"Name": "instance-state-name",
                                                                 "Values": list(states)}]):
        found.extend(Instance.from_api(d) for d in reservation.get("Instances", []))
    return tuple(sorted(found, key=_sort_key))


def discover(aws: Aws, name: str) -> ClusterRecord:
    """Everything tagged `launch:cluster=NAME` in this region: a constant number of (paginated) calls."""
    instances = find_instances(aws, name)
    groups = {}
    vpc_id, ssh_cidrs = None, ()
    for g in aws.paginate("ec2", "describe_security_groups", "SecurityGroups", Filters=tag_filter(name)):
        role = dict((t["Key"], t["Value"]) for t in g.get("Tags", [])).get(ROLE_TAG, "cluster")
        groups[role] = g["GroupId"]
        vpc_id = g.get("VpcId", vpc_id)
        if role == "cluster":
            ssh_cidrs = tuple(sorted(
                [r["CidrIp"] for p in g.get("IpPermissions", []) if p.get("FromPort") == 22
                 for r in p.get("IpRanges", [])] +
                [r["CidrIpv6"] for p in g.get("IpPermissions", []) if p.get("FromPort") == 22
                 for r in p.get("Ipv6Ranges", [])]))
    keys = aws.call("ec2", "describe_key_pairs", Filters=tag_filter(name)).get("KeyPairs", [])
    pgs = aws.call("ec2", "describe_placement_groups", Filters=tag_filter(name)).get("PlacementGroups", [])
    pgs = [p for p in pgs if p.get("State") not in ("deleting", "deleted")]
    fs_id, mounts = None, ()
    for fs in aws.paginate("efs", "describe_file_systems", "FileSystems", CreationToken=creation_token(name)):
        if fs.get("LifeCycleState") not in ("deleting", "deleted"):
            fs_id = fs["FileSystemId"]
    if fs_id:
        mts = aws.call("efs", "describe_mount_targets", FileSystemId=fs_id).get("MountTargets", [])
        mounts = tuple((m["MountTargetId"], m["SubnetId"]) for m in mts
                       if m.get("LifeCycleState") not in ("deleting", "deleted"))
    volumes = tuple(v["VolumeId"] for v in aws.paginate("ec2", "describe_volumes", "Volumes", Filters=tag_filter(
        name) + [{"Name": "status", "Values": ["available", "error"]}]))
    return ClusterRecord(name=name, region=aws.region, instances=instances, volumes=volumes,
                         security_group=groups.get("cluster"), efs_security_group=groups.get("efs"),
                         key_name=keys[0]["KeyName"] if keys else None,
                         placement_group=pgs[0]["GroupName"] if pgs else None,
                         file_system=fs_id, mount_targets=mounts, vpc_id=vpc_id, ssh_cidrs=ssh_cidrs)


def list_clusters(aws: Aws) -> dict:
    """name -> tuple of non-terminated instances, for every cluster with instances or a security group."""
    clusters: dict = {}
    for reservation in aws.paginate("ec2", "describe_instances", "Reservations",
                                    Filters=[{"Name": "tag-key", "Values": [TAG]},
                                             {"Name": "instance-state-name", "Values": list(PRESENT_STATES)}]):
        for d in reservation.get("Instances", []):
            inst = Instance.from_api(d)
            clusters.setdefault(dict(inst.tags)[TAG], []).append(inst)
    for g in aws.paginate("ec2", "describe_security_groups", "SecurityGroups",
                          Filters=[{"Name": "tag-key", "Values": [TAG]}]):
        name = dict((t["Key"], t["Value"]) for t in g.get("Tags", [])).get(TAG)
        clusters.setdefault(name, [])
    return {k: tuple(sorted(v, key=_sort_key)) for k, v in sorted(clusters.items())}


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
    launching: List[str] = dataclasses.field(default_factory=list)  # ClientTokens of RunInstances sent, not recorded

    def as_record(self, name: str, region: str) -> ClusterRecord:
        return ClusterRecord(name=name, region=region, instances=tuple(self.instances),
                             security_group=self.security_group, efs_security_group=self.efs_security_group,
                             key_name=self.key_name, placement_group=self.placement_group,
                             file_system=self.file_system, mount_targets=tuple(self.mount_targets))
