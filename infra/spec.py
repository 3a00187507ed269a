"""`ClusterSpec`: what the user asked for, validated in one place (before any AWS call)."""
from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Optional

from mxlaunch.errors import UsageError

from mxlaunch.infra import catalog

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
AMI_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
WAIT_MODES = ("ssh", "running", "none")
TAG = "launch:cluster"
ROLE_TAG = "launch:role"
DEFAULT_SSH_USER = "ubuntu"
# The DLAMI whose only addition is the NVIDIA driver (Ubuntu 22.04, x86_64): the wheel brings CUDA itself.
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
EFS_ROOT = "/efs/mxlaunch"
VENV = f"{EFS_ROOT}/venv"
WORKDIR = f"{EFS_ROOT}/work"


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
    if not NAME_RE.match(name or ""):
        raise UsageError(f"bad cluster name {name!r}: use 1-31 lowercase letters, digits and '-', "
                         f"starting with a letter or digit")
    return name


def validate_cidr(cidr: Optional[str]) -> str:
    if not cidr:
        raise UsageError("--ssh-cidr is required: the address range allowed to SSH in, e.g. your IP as "
                         "203.0.113.7/32 (see `curl https://checkip.amazonaws.com`)")
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise UsageError(f"bad --ssh-cidr {cidr!r}: expected an address range such as 203.0.113.7/32") from None
    if str(net) != cidr.strip() and "/" in cidr:
        raise UsageError(f"bad --ssh-cidr {cidr!r}: host bits are set; did you mean {net}?")
    if "/" not in cidr:
        cidr = str(net)  # a bare address means just that address (/32 or /128)
    return cidr.strip()


def build(name: str, instance_type: str, count: int, ssh_cidr: Optional[str], **options) -> ClusterSpec:
    """The validated spec, or a UsageError naming the first bad input (a type whose GPUs the installed MXNet
    wheel cannot run is bad input: catalog.require_runnable)."""
    validate_name(name)
    catalog.require_runnable(catalog.lookup(instance_type))  # refused before any AWS call: nothing is created
    if count is None or count < 1:
        raise UsageError(f"--count must be at least 1 (got {count})")
    cidr = validate_cidr(ssh_cidr)
    ami = options.get("ami")
    if ami is not None and not AMI_RE.match(ami):
        raise UsageError(f"bad --ami {ami!r}: expected an AMI id such as ami-0123456789abcdef0")
    max_hours = options.get("max_hours")
    if max_hours is not None and not (0 < max_hours <= 24 * 365):
        raise UsageError(f"--max-hours must be a positive number of hours (got {max_hours})")
    if options.get("wait", "ssh") not in WAIT_MODES:
        raise UsageError(f"--wait must be one of {', '.join(WAIT_MODES)}")
    return ClusterSpec(name=name, instance_type=instance_type.strip().lower(), count=count, ssh_cidr=cidr,
                       **options)
