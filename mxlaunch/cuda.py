"""Which GPUs a CUDA build can run: NVIDIA's binary-compatibility rule, and the facts of the MXNet wheel
that the `gpu` extra installs (checked on the real wheel: ../shared/mxnet-facts.md, "GPU build").

The rule (CUDA C++ Programming Guide, "Binary Compatibility", "PTX Compatibility"): a cubin (SASS) built for
sm_XY runs only on a GPU of the same major version X with minor >= Y; PTX for compute_XY is compiled by the
driver (JIT) for any GPU of compute capability >= X.Y. A GPU with neither fails every kernel with "no kernel
image is available for execution on the device". Shared base: the cluster catalog and the GPU preflight
(which reads `compute_cap` from nvidia-smi) judge GPUs by this one rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from mxlaunch.errors import UsageError

Capability = Tuple[int, int]  # (major, minor): nvidia-smi's compute_cap "8.6" is (8, 6)


def parse_capability(text: str) -> Capability:
    """'8.6' (nvidia-smi --query-gpu=compute_cap) -> (8, 6); ValueError for anything else."""
    major, minor = text.strip().split(".")
    return int(major), int(minor)


def dotted(cc: Capability) -> str:
    return f"{cc[0]}.{cc[1]}"


def arch(cc: Capability, kind: str = "sm") -> str:
    """(8, 6) -> 'sm_86' (machine code) or, with kind='compute', 'compute_86' (PTX)."""
    return f"{kind}_{cc[0]}{cc[1]}"


@dataclass(frozen=True)
class Wheel:
    """What one MXNet GPU wheel can run: the architectures in its fatbinaries."""

    name: str
    version: str
    sass: Tuple[Capability, ...]  # cubins (machine code), ascending
    ptx: Tuple[Capability, ...] = ()  # PTX the driver can JIT for newer GPUs
    # The newest GPU that MXNet's runtime fusion (NVRTC, `--gpu-architecture=compute_<cc>`) is known to compile
    # for; on a newer one the role needs MXNET_USE_FUSION=0 (fusion off, every operator still runs).
    fusion_max: Capability = (0, 0)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def kernels(self) -> str:
        """'sm_50..sm_86 and no PTX'"""
        names = [arch(cc) for cc in self.sass]
        sass = f"{names[0]}..{names[-1]}" if len(names) > 2 else ", ".join(names) or "no machine code"
        ptx = ", ".join(arch(cc, "compute") for cc in self.ptx)
        return f"{sass} and {'PTX for ' + ptx if ptx else 'no PTX'}"


@dataclass(frozen=True)
class Verdict:
    runs: bool
    reason: str  # one clause, e.g. "compute capability 9.0 (sm_90): mxnet-cu112 1.9.1 has kernels for ..."
    kernel: Optional[str] = None  # the code the GPU runs: "sm_86", or "compute_80 (JIT)"


def runs(wheel: Wheel, cc: Capability) -> Verdict:
    """Can `wheel` run kernels on a GPU of compute capability `cc`? Pure: the rule of the module docstring.
    The driver prefers a matching cubin (the newest of the same major, minor <= the GPU's) over JIT."""
    cubins = [s for s in wheel.sass if s[0] == cc[0] and s[1] <= cc[1]]
    if cubins:
        best = arch(max(cubins))
        return Verdict(True, f"compute capability {dotted(cc)} runs the {best} kernels of {wheel.label}", best)
    ptx = [p for p in wheel.ptx if p <= cc]
    if ptx:
        best = arch(max(ptx), "compute")
        return Verdict(True, f"compute capability {dotted(cc)}: the driver compiles the {best} PTX of "
                             f"{wheel.label} (JIT, slow first start)", f"{best} (JIT)")
    return Verdict(False, f"compute capability {dotted(cc)} ({arch(cc)}): {wheel.label} has kernels for "
                          f"{wheel.kernels}")


def environment(wheel: Wheel, cc: Capability) -> Dict[str, str]:
    """Environment a process of `wheel` needs on a GPU of capability `cc` (empty when none)."""
    return {"MXNET_USE_FUSION": "0"} if cc > wheel.fusion_max else {}


# mxnet-cu112==1.9.1 (pyproject.toml's `gpu` extra): its `.nv_fatbin` holds SASS for sm_50, 60, 70, 80, 86 and no
# PTX (read from the real wheel; mxnet-cu117 1.9.1 is the same). fusion_max: the wheel was built with CUDA
# 11.2, whose NVRTC stops at compute_86. The pinned nvidia-cuda-nvrtc-cu11 11.8.89 lists 35..90 in
# nvrtcGetSupportedArchs and compiles compute_89 (checked here: NVRTC needs no GPU), but fusion on a real 8.9
# GPU is unproven: raise this to (8, 9) once it is, and L4/L40S keep fusion.
MXNET_CU112 = Wheel("mxnet-cu112", "1.9.1", sass=((5, 0), (6, 0), (7, 0), (8, 0), (8, 6)), ptx=(),
                    fusion_max=(8, 6))


class DriverMissing(UsageError, ImportError):
    """The GPU build of MXNet is installed but the NVIDIA driver's library (libcuda.so.1) cannot be loaded: an
    ImportError of `import mxnet`, and one line with exit 2 from any command of ours that imported it."""

    def __init__(self, reason: str):
        super().__init__(f"the GPU build of MXNet ({MXNET_CU112.name}) needs the NVIDIA driver, and this machine has "
                         f"none ({' '.join(reason.split())}): install the driver, or use the cpu extra "
                         f"(pip install 'mxlaunch[cpu]'), which serves machines without one")
