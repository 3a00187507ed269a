"""The GPU part of the preflight, launcher side: what to ask a host (infra/transport/remote/host_check.py runs it
there with the job's interpreter) and how to judge its reply. Pure: no SSH here, so `launch train`'s
preflight and `launch cluster up --wait ssh` (infra/cloud/install.py) judge alike, and tests need no host.

A host passes when every requested GPU index exists, its compute capability is one the GPU wheel has kernels
for (mxlaunch/cuda.py: decided here, the remote program stays standard library only), the NVIDIA driver is
new enough for CUDA 11, and the real operation on every requested `mx.gpu(i)` computed the right answer.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from mxlaunch import cuda

SMI_TIMEOUT = 15.0  # nvidia-smi answers in well under a second; a broken driver makes it hang
OP_TIMEOUT = 60.0  # the first CUDA call creates a context per GPU and loads the wheel's kernels: seconds each
# CUDA 11.x minor-version compatibility needs at least this driver on Linux (NVIDIA's CUDA compatibility guide)
MIN_DRIVER = "450.80.02"
WHEEL = cuda.MXNET_CU112  # what the `gpu` extra installs


def parse_gpus(value: Optional[str]) -> Tuple[int, ...]:
    """`--gpus 0,1,3` -> (0, 1, 3); '' or None -> () (the trainer's CPU). Words that are not indices are the
    program's to reject: the preflight checks the ones it can read."""
    return tuple(int(w) for w in (value or "").split(",") if w.strip().isdigit())


def request(gpus: Sequence[int]) -> dict:
    """The GPU fields of a host_check request (none for a job without GPUs)."""
    if not gpus:
        return {}
    return {"gpus": list(gpus), "smi_timeout": SMI_TIMEOUT, "op_timeout": OP_TIMEOUT}


def check_timeout(gpus: Sequence[int]) -> float:
    """What the GPU part adds to a host's check, at most."""
    return SMI_TIMEOUT + OP_TIMEOUT if gpus else 0.0


def _version(text: str) -> Optional[Tuple[int, ...]]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return None


def _indices(indices: Sequence[int]) -> str:
    return ("GPU " if len(indices) == 1 else "GPUs ") + ",".join(map(str, indices))


def column(gpu: Optional[dict]) -> str:
    """The table's GPUS cell: what nvidia-smi lists, e.g. '4x NVIDIA A10G (8.6, 23028 MiB)'."""
    if not gpu:
        return "-"
    rows = gpu.get("smi")
    if rows is None:
        return "no nvidia-smi" if gpu.get("smi_error") == "not found" else "nvidia-smi FAIL"
    if not rows:
        return "none"
    groups: Dict[Tuple[str, ...], int] = {}
    for row in rows:
        key = tuple((row + ["?", "?", "?"])[:3])
        groups[key] = groups.get(key, 0) + 1
    return " + ".join(f"{n}x {name} ({cc}, {memory})" for (name, cc, memory), n in groups.items())


def judge(gpus: Sequence[int], gpu: Optional[dict], python: str, wheel: cuda.Wheel = WHEEL) -> List[str]:
    """The problems of one host from host_check's "gpu" reply, most fundamental first ([] = it can run).
    `gpu` is None when the host sent no GPU part (its interpreter failed: reported elsewhere)."""
    if not gpus or gpu is None:
        return []
    problems: List[str] = []
    rows: Optional[list] = gpu.get("smi")
    smi_error = gpu.get("smi_error")
    if smi_error and smi_error != "not found":
        problems.append(f"nvidia-smi failed: {smi_error}")
    for version in sorted({row[3] for row in rows or () if len(row) > 3}):
        found = _version(version)
        if found is not None and found < _version(MIN_DRIVER):
            problems.append(f"NVIDIA driver {version} is too old for CUDA 11 (needs {MIN_DRIVER} or newer)")
    cuda_build = gpu.get("cuda")
    count, source = (len(rows), "nvidia-smi") if rows is not None else (gpu.get("num_gpus"), "mxnet")
    if source == "mxnet" and cuda_build is not True:
        count = None  # the CPU build sees no GPU whatever the host has
    missing = [i for i in gpus if count is not None and i >= count]
    if missing:
        problems.append(f"{_indices(missing)} requested but this host has {count} GPU(s) ({source})")
    unrunnable: Dict[Tuple[str, str], List[int]] = {}
    for i in gpus:
        if rows and i < len(rows) and len(rows[i]) > 1:
            try:
                verdict = cuda.runs(wheel, cuda.parse_capability(rows[i][1]))
            except ValueError:  # "[N/A]" and such: the operation below is the judge
                continue
            if not verdict.runs:
                unrunnable.setdefault((rows[i][0], verdict.reason), []).append(i)
    for (name, reason), indices in unrunnable.items():
        problems.append(f"{_indices(indices)} {name}: {reason}")
    op = gpu.get("op")
    if cuda_build is False:
        problems.append(f"the mxnet of {python} is the CPU build (no CUDA): install the gpu extra "
                        f"({wheel.name}) there")
    elif op is not None and op != "ok":
        problems.append(f"GPU operation failed: {op}")
    if smi_error == "not found" and (op != "ok" or cuda_build is False):
        problems.append("no nvidia-smi on this host (is the NVIDIA driver installed?)")
    return problems
