"""`ClusterSpec`: what the user asked for, validated in one place (before any AWS call); where a cluster lives
(`Binding`: partition, account, region) and who made it (`Owner`); and the tags a cluster's resources carry from
their creation (owner, binding, --max-hours deadline)."""
from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from mxlaunch.errors import UsageError

from mxlaunch.infra.cloud import catalog

# Names end up in file paths (the state directory), AWS names and tags, user data and ssh config: fullmatch only
# (`re.match` with `$` would let a trailing newline through).
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
# A POSIX login name (the portable set, as useradd's default): it goes raw into root's user data and ssh config.
SSH_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
AMI_RE = re.compile(r"ami-[0-9a-f]{8,17}")
WAIT_MODES = ("ssh", "running", "none")
TAG = "launch:cluster"
ROLE_TAG = "launch:role"
OWNER_TAG = "launch:owner"  # the creator's AWS identity (STS GetCallerIdentity ARN)
OWNER_ID_TAG = "launch:owner-id"  # the creator's local id (infra/cloud/owner.py): one per mxlaunch state directory
DEADLINE_TAG = "launch:deadline"  # --max-hours: when the instance terminates itself, ISO-8601 UTC
ORIGIN_TAG = "launch:origin"  # user@host of the `up` that created the cluster
CREATED_TAG = "launch:created"  # when that `up` ran, ISO-8601 UTC
ACCOUNT_TAG = "launch:account"  # the account and partition the cluster was created in: `aws/123456789012`
REGION_TAG = "launch:region"
WIDEST_QUIET_PREFIX = {4: 8, 6: 32}  # a wider --ssh-cidr gets a warning
DEFAULT_SSH_USER = "ubuntu"
# The DLAMI whose only addition is the NVIDIA driver (Ubuntu 22.04, x86_64): the wheel brings CUDA itself.
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
EFS_ROOT = "/efs/mxlaunch"
VENV = f"{EFS_ROOT}/venv"
WORKDIR = f"{EFS_ROOT}/work"


@dataclass(frozen=True)
class Binding:
    """Where a cluster lives: the AWS partition, account and region its resources were created in."""

    partition: str
    account: str
    region: str

    def describe(self) -> str:
        return f"account {self.account} ({self.partition}), region {self.region}"

    def tags(self) -> dict:
        return {ACCOUNT_TAG: f"{self.partition}/{self.account}", REGION_TAG: self.region}


@dataclass(frozen=True)
class Owner:
    """Who created a cluster: the AWS identity (STS ARN) and the mxlaunch state directory's local id; `origin`
    (user@host) and `created` (ISO-8601 UTC) say from where and when, where they were recorded."""

    arn: str
    local_id: str
    origin: Optional[str] = None
    created: Optional[str] = None

    def same(self, other: "Owner") -> bool:
        return self.arn == other.arn or self.local_id == other.local_id

    def describe(self) -> str:
        """`ARN (mxlaunch id ID) from user@host at TIME`, with what is known."""
        where = f" from {self.origin}" if self.origin else ""
        when = f" at {self.created}" if self.created else ""
        return f"{self.arn} (mxlaunch id {self.local_id}){where}{when}"

    def tags(self) -> dict:
        extra = {k: v for k, v in ((ORIGIN_TAG, self.origin), (CREATED_TAG, self.created)) if v}
        return {OWNER_TAG: self.arn, OWNER_ID_TAG: self.local_id, **extra}

    @classmethod
    def from_tags(cls, tags: dict) -> Optional["Owner"]:
        if OWNER_TAG not in tags and OWNER_ID_TAG not in tags:
            return None  # made before owners were recorded: nobody to protect
        return cls(arn=tags.get(OWNER_TAG, "?"), local_id=tags.get(OWNER_ID_TAG, "?"), origin=tags.get(ORIGIN_TAG),
                   created=tags.get(CREATED_TAG))


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    instance_type: str
    count: int
    ssh_cidr: str
    spot: bool = False
    efs: bool = True
    placement_group: bool = True
    ami: Optional[str] = None
    key_name: Optional[str] = None  # an existing key pair of the user's; None = create launch-NAME
    max_hours: Optional[float] = None
    ssh_user: str = DEFAULT_SSH_USER
    wait: str = "ssh"
    keep_on_failure: bool = False
    owner: Optional[Owner] = None  # who runs this `up` (recorded on what it creates)
    binding: Optional[Binding] = None  # where it runs (recorded on what it creates, and in cluster.json)
    foreign: bool = False  # --force on a cluster another owner recorded: add to it, never take their SSH rule away
    # --spot only: a spot launch refused for capacity is retried once as on-demand (infra/cloud/run_instances.py);
    # None: not said (`up` keeps what the cluster recorded, a new cluster has it off)
    on_demand_fallback: Optional[bool] = None

    @property
    def itype(self) -> catalog.InstanceType:
        return catalog.lookup(self.instance_type)

    @property
    def resource_name(self) -> str:
        """Name of the security group, key pair, placement group: `launch-NAME`."""
        return f"launch-{self.name}"

    @property
    def max_minutes(self) -> Optional[int]:
        return None if self.max_hours is None else max(1, math.ceil(self.max_hours * 60))

    @property
    def use_placement_group(self) -> bool:
        return self.placement_group and self.itype.placement_group and self.count > 1


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UsageError(f"bad cluster name {name!r}: use 1-31 lowercase letters, digits and '-', "
                         f"starting with a letter or digit")
    return name


def validate_ssh_user(user: str) -> str:
    if not isinstance(user, str) or not SSH_USER_RE.fullmatch(user):
        raise UsageError(f"bad --ssh-user {user!r}: a login name of 1-32 lowercase letters, digits, '_' and '-', "
                         f"starting with a letter or '_' (e.g. ubuntu, ec2-user)")
    return user


def validate_cidr(cidr: Optional[str]) -> str:
    """The normalised range (lowercase, a bare address as /32 or /128), or a UsageError naming the mistake."""
    if not cidr:
        raise UsageError("--ssh-cidr is required: the address range allowed to SSH in, e.g. your IP as "
                         "203.0.113.7/32 (see `curl https://checkip.amazonaws.com`)")
    text = cidr.strip()
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(f"bad --ssh-cidr {cidr!r}: expected an address range such as 203.0.113.7/32") from None
    if "/" in text and ipaddress.ip_address(text.split("/", 1)[0]) != net.network_address:
        raise UsageError(f"bad --ssh-cidr {cidr!r}: host bits are set; did you mean {net}?")
    return str(net)  # compressed and lowercase: what AWS stores and returns


def cidr_warning(cidr: str) -> Optional[str]:
    """A warning for a range wider than /8 (IPv4) or /32 (IPv6): that many addresses may try SSH."""
    net = ipaddress.ip_network(cidr)
    if net.prefixlen >= WIDEST_QUIET_PREFIX[net.version]:
        return None
    who = "the whole internet" if net.prefixlen == 0 else f"{net.num_addresses:,} addresses"
    return f"warning: --ssh-cidr {net} lets {who} try SSH; prefer your own address/32"


def deadline_text(when: dt.datetime) -> str:
    """ISO-8601 UTC to the second: the value of the `launch:deadline` tag and of the instance's timer."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_deadline(text: Optional[str]) -> Optional[dt.datetime]:
    """The datetime of a `launch:deadline` value; None for a missing or unreadable one."""
    try:
        return dt.datetime.strptime(text or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def instance_deadline(instance) -> Optional[dt.datetime]:
    """The deadline an instance (mxlaunch.infra.cloud.record.Instance) was launched with, from its tag."""
    return parse_deadline(dict(instance.tags).get(DEADLINE_TAG))


def cluster_deadline(instances: Iterable) -> Optional[dt.datetime]:
    """The earliest deadline `instances` carry: what a growing cluster gives its new instances when `up` gets
    no --max-hours, and what `status` reports once they are gone."""
    return min(filter(None, (instance_deadline(i) for i in instances)), default=None)


def creation_tags(spec: ClusterSpec, resource_type: str, deadline: Optional[dt.datetime] = None) -> dict:
    """Tags `up` adds at creation besides launch:cluster/role/Name: the owner and the binding, on the cluster's
    security group (made first, removed last) and on instances (infra/cloud/owner.py checks them); `deadline`:
    the cluster's --max-hours deadline, on its security group, which outlives every instance."""
    if resource_type not in ("security-group", "instance"):
        return {}
    tags = {**(spec.owner.tags() if spec.owner else {}), **(spec.binding.tags() if spec.binding else {})}
    if deadline is not None and resource_type == "security-group":
        tags[DEADLINE_TAG] = deadline_text(deadline)
    return tags


def build(name: str, instance_type: str, count: int, ssh_cidr: Optional[str], **options) -> ClusterSpec:
    """The validated spec, or a UsageError naming the first bad input (a type whose GPUs the installed MXNet
    wheel cannot run is bad input: catalog.require_runnable)."""
    validate_name(name)
    catalog.require_runnable(catalog.lookup(instance_type))  # refused before any AWS call: nothing is created
    if count is None or count < 1:
        raise UsageError(f"--count must be at least 1 (got {count})")
    cidr = validate_cidr(ssh_cidr)
    validate_ssh_user(options.get("ssh_user", DEFAULT_SSH_USER))
    ami = options.get("ami")
    if ami is not None and not AMI_RE.fullmatch(ami):
        raise UsageError(f"bad --ami {ami!r}: expected an AMI id such as ami-0123456789abcdef0")
    max_hours = options.get("max_hours")
    if max_hours is not None and not (0 < max_hours <= 24 * 365):
        raise UsageError(f"--max-hours must be a positive number of hours (got {max_hours})")
    if options.get("on_demand_fallback") and not options.get("spot"):
        raise UsageError("--on-demand-fallback needs --spot: it launches on-demand instances when spot capacity "
                         "is gone (without --spot they are on-demand already)")
    if options.get("wait", "ssh") not in WAIT_MODES:
        raise UsageError(f"--wait must be one of {', '.join(WAIT_MODES)}")
    return ClusterSpec(name=name, instance_type=instance_type.strip().lower(), count=count, ssh_cidr=cidr,
                       **options)
