"""Reads `up` makes before it creates anything: the network, the image, the zones that offer the type, and the
vCPU quota. A cluster that cannot start fails here, before a key, a group, an EFS or a GPU bills."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from mxlaunch.errors import UsageError

from mxlaunch.infra.cloud.aws import Aws, AwsError, QuotaExceeded
from mxlaunch.infra.cloud.spec import DLAMI_PARAMETER, ClusterSpec

# vCPU quotas of EC2 (Service Quotas, service code ec2), by family letter and market.
QUOTAS = {
    ("g", False): ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("p", False): ("L-417A185B", "Running On-Demand P instances"),
    ("g", True): ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("p", True): ("L-7212CCBC", "All P4, P3 and P2 Spot Instance Requests"),
}


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
    root = d.get("RootDeviceName") or "/dev/sda1"
    size = next((m.get("Ebs", {}).get("VolumeSize") for m in d.get("BlockDeviceMappings", [])
                 if m.get("DeviceName") == root), None)
    return Image(id=ami, root_device=root, root_size=size)


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


def check_quota(aws: Aws, spec: ClusterSpec, count: int, echo: Callable[[str], None]) -> None:
    """Refuse when the account's vCPU quota for the type's family (on-demand or spot) cannot hold `count` new
    instances: new accounts often have 0 for G and P. Instances already running count too, but only
    RunInstances knows them exactly: this check never refuses what could start."""
    key = (spec.instance_type[:1], spec.spot)
    if key not in QUOTAS or count <= 0:
        return
    code, name = QUOTAS[key]
    try:
        itype = aws.call("ec2", "describe_instance_types", InstanceTypes=[spec.instance_type])["InstanceTypes"][0]
        value = aws.call("service-quotas", "get_service_quota", ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]
    except AwsError as exc:
        if exc.code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
            echo(f"note: cannot read the quota '{name}' ({exc.code}); RunInstances will tell")
        return  # NoSuchResourceException, endpoint trouble: RunInstances still reports a quota it hits
    needed = itype["VCpuInfo"]["DefaultVCpus"] * count
    if value < needed:
        raise QuotaExceeded(
            f"{count} x {spec.instance_type} need {needed} vCPUs but your quota '{name}' ({code}) in {aws.region} is "
            f"{value:g}: request an increase at https://{aws.region}.console.aws.amazon.com/servicequotas/home/"
            f"services/ec2/quotas/{code} (or `aws service-quotas request-service-quota-increase --service-code "
            f"ec2 --quota-code {code} --desired-value {needed} --region {aws.region}`)", "VcpuLimitExceeded")
