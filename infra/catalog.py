"""Instance catalog: GPUs per EC2 type, on-demand price estimates, and the retired types users still type.

Prices are ESTIMATES: us-east-1 Linux on-demand list prices (USD/hour) as published by AWS; they differ by
region, change over time, and spot is usually cheaper. `None` means we know no reliable public price.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mxlaunch.errors import UsageError


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpus: int
    gpu_model: str
    price_per_hour: Optional[float]  # estimate, USD, us-east-1 on-demand
    placement_group: bool = True  # supports a `cluster` placement group

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


def _family(family: str, gpu_model: str, sizes: dict) -> dict:
    return {f"{family}.{size}": InstanceType(f"{family}.{size}", gpus, gpu_model, price)
            for size, (gpus, price) in sizes.items()}


CATALOG: dict = {}
CATALOG.update(_family("g4dn", "NVIDIA T4 16GB", {
    "xlarge": (1, 0.526), "2xlarge": (1, 0.752), "4xlarge": (1, 1.204), "8xlarge": (1, 2.176),
    "12xlarge": (4, 3.912), "16xlarge": (1, 4.352), "metal": (8, 7.824)}))
CATALOG.update(_family("g5", "NVIDIA A10G 24GB", {
    "xlarge": (1, 1.006), "2xlarge": (1, 1.212), "4xlarge": (1, 1.624), "8xlarge": (1, 2.448),
    "12xlarge": (4, 5.672), "16xlarge": (1, 4.096), "24xlarge": (4, 8.144), "48xlarge": (8, 16.288)}))
CATALOG.update(_family("g6", "NVIDIA L4 24GB", {
    "xlarge": (1, 0.805), "2xlarge": (1, 0.978), "4xlarge": (1, 1.323), "8xlarge": (1, 2.014),
    "12xlarge": (4, 4.602), "16xlarge": (1, 3.397), "24xlarge": (4, 6.675), "48xlarge": (8, 13.350)}))
CATALOG.update(_family("g6e", "NVIDIA L40S 48GB", {
    "xlarge": (1, 1.861), "2xlarge": (1, 2.242), "4xlarge": (1, 3.004), "8xlarge": (1, 4.529),
    "12xlarge": (4, 10.493), "16xlarge": (1, 7.577), "24xlarge": (4, 15.066), "48xlarge": (8, 30.131)}))
CATALOG.update(_family("p4d", "NVIDIA A100 40GB", {"24xlarge": (8, 32.773)}))
CATALOG.update(_family("p4de", "NVIDIA A100 80GB", {"24xlarge": (8, 40.966)}))
CATALOG.update(_family("p5", "NVIDIA H100 80GB", {"4xlarge": (1, None), "48xlarge": (8, 98.320)}))
CATALOG.update(_family("p5e", "NVIDIA H200 141GB", {"48xlarge": (8, None)}))
CATALOG.update(_family("p5en", "NVIDIA H200 141GB", {"48xlarge": (8, None)}))


@dataclass(frozen=True)
class Retired:
    name: str
    gpus: int
    gpu_model: str
    instead: str  # current type with the same number of GPUs per instance (or per --count)
    count: int = 1  # how many of `instead` give the same GPU count


RETIRED = {r.name: r for r in (
    Retired("g2.2xlarge", 1, "NVIDIA GRID K520", "g5.xlarge"),
    Retired("g2.8xlarge", 4, "NVIDIA GRID K520", "g5.12xlarge"),
    Retired("p2.xlarge", 1, "NVIDIA K80", "g5.xlarge"),
    Retired("p2.8xlarge", 8, "NVIDIA K80", "g5.48xlarge"),
    Retired("p2.16xlarge", 16, "NVIDIA K80", "g5.48xlarge", count=2),
    Retired("p3.2xlarge", 1, "NVIDIA V100", "g5.xlarge"),
    Retired("p3.8xlarge", 4, "NVIDIA V100", "g5.12xlarge"),
    Retired("p3.16xlarge", 8, "NVIDIA V100", "p4d.24xlarge"),
    Retired("p3dn.24xlarge", 8, "NVIDIA V100 32GB", "p4d.24xlarge"),
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
        return _raise(f"instance type {name} ({r.gpus} x {r.gpu_model}) is retired by AWS; {hint}")
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
    return f"~${itype.price_per_hour * count:,.2f}/h (estimate, on-demand)"
