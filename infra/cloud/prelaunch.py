"""Reads `up` makes before it creates anything: the network, the image (and whether its python3 can run the
stack), the zones that offer the type, and the vCPU quotas. A cluster that cannot start fails here, before a key,
a group, an EFS or a GPU bills."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

from mxlaunch.errors import UsageError

from mxlaunch.infra.cloud.aws import Aws, AwsError, QuotaExceeded
from mxlaunch.infra.cloud.spec import DLAMI_PARAMETER, ClusterSpec
from mxlaunch.infra.cloud.userdata import PYTHON_TOO_NEW

# vCPU quotas of EC2 (Service Quotas, service code ec2), by family letter and market.
QUOTAS = {
    ("g", False): ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("p", False): ("L-417A185B", "Running On-Demand P instances"),
    ("g", True): ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("p", True): ("L-7212CCBC", "All P4, P3 and P2 Spot Instance Requests"),
}


# An image's python3 is known from its Ubuntu release, which the names of the Deep Learning AMIs ("... (Ubuntu
# 22.04) ...") and of Canonical's images ("ubuntu-jammy-22.04-...") carry: each release keeps its python3.
UBUNTU_RELEASE = re.compile(r"ubuntu\D{0,12}?(\d{2})\.(\d{2})", re.IGNORECASE)
UBUNTU_PYTHON = {(20, 4): (3, 8), (22, 4): (3, 10), (24, 4): (3, 12), (24, 10): (3, 12), (25, 4): (3, 13)}
FIRST_TOO_NEW = (24, 4)  # the first LTS whose python3 is PYTHON_TOO_NEW or later (releases never go back)


@dataclass(frozen=True)
class Image:
    id: str
    root_device: str
    root_size: Optional[int]  # GiB of the image's root snapshot

    def block_devices(self) -> list:
        """The root volume goes with its instance (a custom --ami may say otherwise)."""
        ebs = {"DeleteOnTermination": True}
        if self.root_size:
            ebs["VolumeSize"] = self.root_size
        return [{"DeviceName": self.root_device, "Ebs": ebs}]


def require_ipv4(spec: ClusterSpec) -> None:
    """The default VPC and its instances have no IPv6: an IPv6 SSH rule would never match (refused rather than
    giving the user's default VPC an IPv6 block)."""
    if ":" in spec.ssh_cidr:
        raise UsageError(f"--ssh-cidr {spec.ssh_cidr} is IPv6, but the cluster's instances have IPv4 addresses "
                         f"only (default VPC): pass your IPv4 address as A.B.C.D/32 "
                         f"(curl -4 https://checkip.amazonaws.com)")


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


def image(aws: Aws, spec: ClusterSpec) -> Image:
    ami = resolve_ami(aws, spec)
    try:
        found = aws.call("ec2", "describe_images", ImageIds=[ami]).get("Images", [])
    except AwsError as exc:
        if exc.code not in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidAMIID.Malformed"):
            raise
        found = []
    if not found:
        raise UsageError(f"image {ami} does not exist in {aws.region} (or is not shared with this account)")
    d = found[0]
    if d.get("Architecture", "x86_64") != "x86_64":
        raise UsageError(f"image {ami} is {d['Architecture']}: the MXNet GPU wheels need an x86_64 image")
    check_python(ami, d)
    root = d.get("RootDeviceName") or "/dev/sda1"
    size = next((m.get("Ebs", {}).get("VolumeSize") for m in d.get("BlockDeviceMappings", [])
                 if m.get("DeviceName") == root), None)
    return Image(id=ami, root_device=root, root_size=size)


def check_python(ami: str, d: dict) -> None:
    """Refuse an image whose python3 cannot install the stack (numpy 1.23.5 has no wheels for PYTHON_TOO_NEW or
    later), known from the Ubuntu release its name or description names. An image that names none is let
    through: its user data refuses such a python3 on the instance, naming the step."""
    found = UBUNTU_RELEASE.search(f"{d.get('Name') or ''} {d.get('Description') or ''}")
    release = (int(found[1]), int(found[2])) if found else None
    if release is None or release < FIRST_TOO_NEW:
        return
    python = UBUNTU_PYTHON.get(release, PYTHON_TOO_NEW)
    raise UsageError(
        f"image {ami} ({d.get('Name') or 'no name'}) is Ubuntu {release[0]}.{release[1]:02d}, whose python3 is "
        f"{python[0]}.{python[1]}{'' if release in UBUNTU_PYTHON else ' or later'}: MXNet 1.9.1 needs numpy 1.23.5, "
        f"which has no wheels for Python {PYTHON_TOO_NEW[0]}.{PYTHON_TOO_NEW[1]} or later; leave out --ami (the "
        f"Ubuntu 22.04 Deep Learning AMI, python3 3.10) or pass an --ami with Python 3.8-3.11")


def offered_subnets(aws: Aws, spec: ClusterSpec, subnets: list) -> list:
    """The default subnets whose zone offers the type; a type offered nowhere is refused by name (not read as
    'no capacity in any zone' after everything was created)."""
    zones = {o["Location"] for o in aws.paginate(
        "ec2", "describe_instance_type_offerings", "InstanceTypeOfferings", LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": [spec.instance_type]}])}
    if aws.dry_run and not subnets:
        return subnets
    if not zones:
        raise UsageError(f"{spec.instance_type} is not offered in any zone of {aws.region}: try another --region "
                         f"or --instance-type (`launch cluster types`)")
    usable = [s for s in subnets if s["AvailabilityZone"] in zones]
    if not usable:
        raise UsageError(f"{spec.instance_type} is offered in {', '.join(sorted(zones))} of {aws.region}, where the "
                         f"default VPC has no default subnet: create one with `aws ec2 create-default-subnet "
                         f"--availability-zone {sorted(zones)[0]}`")
    return usable


def check_quota(aws: Aws, spec: ClusterSpec, count: int, echo: Callable[[str], None]) -> bool:
    """Refuse when the account's vCPU quota for the type's family cannot hold `count` new instances (new accounts
    often have 0 for G and P). With --spot --on-demand-fallback both markets' quotas are read: one too small is a
    warning, both a refusal. Returns False when only the on-demand quota holds them (the launch then goes
    on-demand at once: spot would be refused). Instances already running count too, but only RunInstances knows
    them exactly: this check never refuses what could start."""
    family = spec.instance_type[:1]
    if (family, spec.spot) not in QUOTAS or count <= 0:
        return True
    markets = [spec.spot] + ([False] if spec.spot and spec.on_demand_fallback else [])
    try:
        itype = aws.call("ec2", "describe_instance_types", InstanceTypes=[spec.instance_type])["InstanceTypes"][0]
        values = {spot: _quota(aws, QUOTAS[(family, spot)], echo) for spot in markets}
    except AwsError:
        return True  # NoSuchResourceException, endpoint trouble: RunInstances still reports a quota it hits
    needed = itype["VCpuInfo"]["DefaultVCpus"] * count
    short = [spot for spot, value in values.items() if value is not None and value < needed]
    if len(short) == len(markets):
        lines = [_short(aws, QUOTAS[(family, spot)], values[spot], needed) for spot in short]
        # its own code: the quota itself is too small, which no wait fixes (a repair retries RunInstances' codes)
        raise QuotaExceeded(f"{count} x {spec.instance_type} need {needed} vCPUs but " + "; and ".join(lines),
                            "QuotaBelowNeed")
    for spot in short:
        code, name = QUOTAS[(family, spot)]
        then = ("launching on-demand instead (--on-demand-fallback)" if spot else
                "if spot capacity is gone, the on-demand fallback will hit it")
        echo(f"warning: your quota '{name}' ({code}) is {values[spot]:g} vCPUs, {needed} needed: {then}")
    return True not in short


def _quota(aws: Aws, quota: tuple, echo: Callable[[str], None]) -> Optional[float]:
    """The value of one vCPU quota (Service Quotas), or None when it cannot be read (said in a note)."""
    code, name = quota
    try:
        return aws.call("service-quotas", "get_service_quota", ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]
    except AwsError as exc:
        if exc.code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            echo(f"note: cannot read the quota '{name}' ({exc.code}); RunInstances will tell")
            return None
        raise


def _short(aws: Aws, quota: tuple, value: float, needed: int) -> str:
    code, name = quota
    return (f"your quota '{name}' ({code}) in {aws.region} is {value:g}: request an increase at "
            f"https://{aws.region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{code} (or `aws "
            f"service-quotas request-service-quota-increase --service-code ec2 --quota-code {code} --desired-value "
            f"{needed} --region {aws.region}`)")
