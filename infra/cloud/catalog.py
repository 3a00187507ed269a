"""Instance catalog: per EC2 GPU type its GPUs (model, memory, compute capability), whether the MXNet wheel
the cluster installs can run them, on-demand price estimates, and the old types users still type (retired by
AWS, or no longer driven by the Deep Learning AMI `up` boots), each refused naming a current one.

GPU counts, models and memory: AWS's DescribeInstanceTypes (tests/test_catalog.py checks them against moto's
copy of it). Compute capability: NVIDIA's CUDA GPU list. Prices are ESTIMATES: us-east-1 Linux on-demand list
prices (USD/hour) as AWS published them at PRICES_AS_OF (after AWS's June 2025 cuts: P4d/P4de about -33%,
P5 about -44%; G families unchanged); they differ by region, change over time, and spot is usually cheaper.
Every printed estimate names PRICES_AS_OF (ESTIMATE). `None`: no public on-demand price (p5e: Capacity Blocks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

from mxlaunch import cuda
from mxlaunch.errors import UsageError

PRICES_AS_OF = "2025-06"
ESTIMATE = f"on-demand estimate, us-east-1 list prices as of {PRICES_AS_OF}"
WHEEL = cuda.MXNET_CU112  # what `launch cluster up` installs on every instance (pyproject.toml's `gpu` extra)


@dataclass(frozen=True)
class Gpu:
    model: str
    memory_gb: int  # per GPU, as NVIDIA and AWS name it (nvidia-smi shows a little less: ECC, reserved)
    capability: cuda.Capability

    @property
    def label(self) -> str:
        return f"{self.model} {self.memory_gb}GB"


K520 = Gpu("NVIDIA GRID K520", 4, (3, 0))
K80 = Gpu("NVIDIA K80", 12, (3, 7))
V100 = Gpu("NVIDIA V100", 16, (7, 0))
V100_32 = Gpu("NVIDIA V100", 32, (7, 0))
T4 = Gpu("NVIDIA T4", 16, (7, 5))
A10G = Gpu("NVIDIA A10G", 24, (8, 6))
L4 = Gpu("NVIDIA L4", 24, (8, 9))
L40S = Gpu("NVIDIA L40S", 48, (8, 9))
A100_40 = Gpu("NVIDIA A100", 40, (8, 0))
A100_80 = Gpu("NVIDIA A100", 80, (8, 0))
H100 = Gpu("NVIDIA H100", 80, (9, 0))
H200 = Gpu("NVIDIA H200", 141, (9, 0))


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpus: int
    gpu: Gpu
    price_per_hour: Optional[float]  # estimate, USD, us-east-1 on-demand, at PRICES_AS_OF
    placement_group: bool = True  # supports a `cluster` placement group

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def gpu_model(self) -> str:
        return self.gpu.label

    @property
    def verdict(self) -> cuda.Verdict:
        """Can WHEEL run on this type's GPUs, and why."""
        return cuda.runs(WHEEL, self.gpu.capability)

    @property
    def env(self) -> Dict[str, str]:
        """Environment every role of a job on this type needs (MXNET_USE_FUSION=0 where fusion cannot compile)."""
        return cuda.environment(WHEEL, self.gpu.capability)


def _family(family: str, gpu: Gpu, sizes: dict) -> dict:
    return {f"{family}.{size}": InstanceType(f"{family}.{size}", gpus, gpu, price)
            for size, (gpus, price) in sizes.items()}


CATALOG: dict = {}
CATALOG.update(_family("g4dn", T4, {
    "xlarge": (1, 0.526), "2xlarge": (1, 0.752), "4xlarge": (1, 1.204), "8xlarge": (1, 2.176),
    "12xlarge": (4, 3.912), "16xlarge": (1, 4.352), "metal": (8, 7.824)}))
CATALOG.update(_family("g5", A10G, {
    "xlarge": (1, 1.006), "2xlarge": (1, 1.212), "4xlarge": (1, 1.624), "8xlarge": (1, 2.448),
    "12xlarge": (4, 5.672), "16xlarge": (1, 4.096), "24xlarge": (4, 8.144), "48xlarge": (8, 16.288)}))
CATALOG.update(_family("g6", L4, {
    "xlarge": (1, 0.805), "2xlarge": (1, 0.978), "4xlarge": (1, 1.323), "8xlarge": (1, 2.014),
    "12xlarge": (4, 4.602), "16xlarge": (1, 3.397), "24xlarge": (4, 6.675), "48xlarge": (8, 13.350)}))
CATALOG.update(_family("g6e", L40S, {
    "xlarge": (1, 1.861), "2xlarge": (1, 2.242), "4xlarge": (1, 3.004), "8xlarge": (1, 4.529),
    "12xlarge": (4, 10.493), "16xlarge": (1, 7.577), "24xlarge": (4, 15.066), "48xlarge": (8, 30.131)}))
CATALOG.update(_family("p4d", A100_40, {"24xlarge": (8, 21.958)}))
CATALOG.update(_family("p4de", A100_80, {"24xlarge": (8, 27.447)}))
CATALOG.update(_family("p5", H100, {"4xlarge": (1, 6.880), "48xlarge": (8, 55.040)}))
CATALOG.update(_family("p5e", H200, {"48xlarge": (8, None)}))
CATALOG.update(_family("p5en", H200, {"48xlarge": (8, 63.296)}))


@dataclass(frozen=True)
class Retired:
    name: str
    gpus: int
    gpu: Gpu
    instead: str  # current type with the same number of GPUs per instance (or per --count)
    count: int = 1  # how many of `instead` give the same GPU count
    why: str = "retired by AWS"

    @property
    def gpu_model(self) -> str:
        return self.gpu.label


# p3 still runs on EC2, but the current Deep Learning AMI's NVIDIA driver does not support its V100 (Volta) GPUs.
NO_DRIVER = "not supported by the current Deep Learning AMI's NVIDIA driver (V100, Volta)"
RETIRED = {r.name: r for r in (
    Retired("g2.2xlarge", 1, K520, "g5.xlarge"),
    Retired("g2.8xlarge", 4, K520, "g5.12xlarge"),
    Retired("p2.xlarge", 1, K80, "g5.xlarge"),
    Retired("p2.8xlarge", 8, K80, "g5.48xlarge"),
    Retired("p2.16xlarge", 16, K80, "g5.48xlarge", count=2),
    Retired("p3.2xlarge", 1, V100, "g5.xlarge", why=NO_DRIVER),
    Retired("p3.8xlarge", 4, V100, "g5.12xlarge", why=NO_DRIVER),
    Retired("p3.16xlarge", 8, V100, "p4d.24xlarge", why=NO_DRIVER),
    Retired("p3dn.24xlarge", 8, V100_32, "p4d.24xlarge", why=NO_DRIVER),
)}


def lookup(name: str) -> InstanceType:
    """The catalog entry of `name`; a retired or unknown type is a UsageError naming what to use instead."""
    key = name.strip().lower()
    if key in CATALOG:
        return CATALOG[key]
    if key in RETIRED:
        r = RETIRED[key]
        if r.count == 1:
            hint = f"use --instance-type {r.instead} ({r.gpus} GPU{'s' if r.gpus > 1 else ''}, {CATALOG[r.instead].gpu_model})"
        else:
            per = CATALOG[r.instead].gpus
            hint = (f"use --instance-type {r.instead} with {r.count}x the --count "
                    f"({per} GPUs each, {r.gpus} per {name})")
        return _raise(f"instance type {name} ({r.gpus} x {r.gpu_model}) is {r.why}; {hint}")
    family = key.split(".", 1)[0]
    sizes = [t for t in CATALOG if t.startswith(family + ".")]
    if sizes:
        return _raise(f"unknown instance type {name}; {family} sizes: {', '.join(sizes)}")
    families = sorted({t.family for t in CATALOG.values()})
    return _raise(f"unknown GPU instance type {name}; known families: {', '.join(families)}")


def _raise(message: str):
    raise UsageError(message)


def price_text(itype: InstanceType, count: int = 1) -> str:
    if itype.price_per_hour is None:
        return "no price estimate (check the AWS pricing page)"
    return f"~${itype.price_per_hour * count:,.2f}/h ({ESTIMATE})"


def nearest(itype: InstanceType) -> Optional[InstanceType]:
    """What to use instead of a type WHEEL cannot run: the same number of GPUs per instance; the same class
    (p: training, NVLink; g: PCIe) where one exists; the newest GPU the wheel runs as built (no extra
    environment); then the cheapest. p5.48xlarge -> p4d.24xlarge, p5.4xlarge -> g5.xlarge."""
    usable = [t for t in CATALOG.values() if t.gpus == itype.gpus and t.verdict.runs]
    if not usable:
        return None
    return min(usable, key=lambda t: (t.name[0] != itype.name[0], bool(t.env), tuple(-v for v in t.gpu.capability),
                                      math.inf if t.price_per_hour is None else t.price_per_hour))


def require_runnable(itype: InstanceType) -> InstanceType:
    """`itype`, or a UsageError (one line) saying why WHEEL cannot run its GPUs and what to use instead."""
    verdict = itype.verdict
    if verdict.runs:
        return itype
    alt = nearest(itype)
    hint = (f"nearest type that works: --instance-type {alt.name} ({alt.gpus} x {alt.gpu_model})" if alt
            else f"no catalog type with {itype.gpus} GPUs works")
    raise UsageError(f"instance type {itype.name} ({itype.gpus} x {itype.gpu_model}): {verdict.reason}; {hint} "
                     f"(all types: launch cluster types)")


def role_env(instance_type: str) -> Dict[str, str]:
    """Environment every role of a job on `instance_type` needs ({} for a type outside the catalog)."""
    itype = CATALOG.get(instance_type.strip().lower())
    return itype.env if itype else {}
