"""Which network `--network` and `--num-layers` build at an image height: pure rules, checked before MXNet is
imported.

Where MXNet 1.9's example/image-classification/symbols/resnet.py or resnext.py builds a network (their
`get_symbol`), the form is exactly theirs: same units, channels, stem and parameters. Where they raise
ValueError, the trainer builds an extension (`Form.mxnet` is False), or refuses the depth:

- resnet, height <= 28, an ImageNet depth (18, 34, 101, 269): the network MXNet builds for that depth at
  29-32 px (ImageNet units behind the 3x3 stem); height 29-32, a CIFAR depth (6n+2 ...): the network MXNet
  builds for it at 28 px.
- resnext, height <= 32, an ImageNet depth (18, 34, 101, 269): ImageNet units behind the 3x3 stem, as MXNet's
  own `resnext()` builds them at that height; other 9n+2 depths (29, 47, ...): the CIFAR ResNeXt of the paper
  (ResNeXt-29, 8x64d: grouped bottlenecks of 256/512/1024 channels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

# symbols/resnet.py and resnext.py, get_symbol: units per stage of the ImageNet depths
IMAGENET_UNITS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3),
                  200: (3, 24, 36, 3), 269: (3, 30, 48, 8)}
SMALL_STEM_MAX = 32  # resnet()/resnext(): a 3x3 stride-1 conv0 up to this height, else 7x7/2 and max-pooling
CIFAR_FORM_MAX = {"resnet": 28, "resnext": 32}  # get_symbol: the 3-stage CIFAR depths up to this height
BOTTLENECK_FROM = 164  # CIFAR depths: 9n+2 bottleneck units from here, 6n+2 basic units below
NETWORKS = ("resnet", "resnext")
RESNEXT29_GROUPS, RESNEXT29_WIDTH = 8, 64  # the paper's CIFAR ResNeXt-29 (8x64d)
MXNET_RESNEXT_GROUPS = 32  # resnext.py get_symbol(num_group=32)


@dataclass(frozen=True)
class Form:
    """One network: `filters` is MXNet's filter_list (the stem's channels, then each stage's output)."""

    network: str
    depth: int
    units: Tuple[int, ...]
    filters: Tuple[int, ...]
    bottleneck: bool
    small_stem: bool
    mxnet: bool  # MXNet's get_symbol builds exactly this network at this height
    paper_resnext: bool = False  # the ResNeXt-29 extension: inner width = groups x width, stem with BN and ReLU

    @property
    def grouped(self) -> bool:
        """Whether --num-group changes this network (only ResNeXt's bottleneck units have grouped convolutions)."""
        return self.network == "resnext" and self.bottleneck

    @property
    def name(self) -> str:
        return f"{self.network}-{self.depth}"


def _cifar(network: str, depth: int, small_stem: bool, mxnet: bool) -> Optional[Form]:
    """get_symbol's 3-stage form: 9n+2 bottleneck from 164 layers, 6n+2 basic below."""
    if (depth - 2) % 9 == 0 and depth >= BOTTLENECK_FROM:
        return Form(network, depth, ((depth - 2) // 9,) * 3, (16, 64, 128, 256), True, small_stem, mxnet)
    if (depth - 2) % 6 == 0 and 8 <= depth < BOTTLENECK_FROM:
        return Form(network, depth, ((depth - 2) // 6,) * 3, (16, 16, 32, 64), False, small_stem, mxnet)
    return None


def _imagenet(network: str, depth: int, small_stem: bool, mxnet: bool) -> Optional[Form]:
    if depth not in IMAGENET_UNITS:
        return None
    filters = (64, 256, 512, 1024, 2048) if depth >= 50 else (64, 64, 128, 256, 512)
    return Form(network, depth, IMAGENET_UNITS[depth], filters, depth >= 50, small_stem, mxnet)


def mxnet_form(network: str, depth: int, height: int) -> Optional[Form]:
    """The network MXNet's get_symbol builds, or None where it raises ValueError."""
    small = height <= SMALL_STEM_MAX
    if height <= CIFAR_FORM_MAX[network]:
        return _cifar(network, depth, small, True)
    return _imagenet(network, depth, small, True)


def _extension(network: str, depth: int, height: int) -> Optional[Form]:
    if height > SMALL_STEM_MAX:
        return None
    form = _imagenet(network, depth, True, False)
    if form is None and network == "resnet":
        form = _cifar(network, depth, True, False)
    if form is None and network == "resnext" and (depth - 2) % 9 == 0 and depth >= 11:
        n = (depth - 2) // 9
        form = Form(network, depth, (n, n, n), (64, 256, 512, 1024), True, True, False, paper_resnext=True)
    return form


def form(network: str, depth: int, height: int) -> Optional[Form]:
    """MXNet's network where it builds one, else the trainer's extension, else None."""
    if network not in NETWORKS:
        return None
    return mxnet_form(network, depth, height) or _extension(network, depth, height)


def valid_depths_text(network: str, height: int) -> str:
    imagenet = ", ".join(map(str, IMAGENET_UNITS))
    if height > SMALL_STEM_MAX:
        return imagenet
    cifar = "6n+2 below 164 (8, 14, 20, 32, 44, 56, 110, ...) or 9n+2 from 164 (164, 1001, ...)"
    if network == "resnext":
        cifar = ("6n+2 below 164 (8, 14, 20, 32, 44, 56, 110, ...) or 9n+2 (11, 20, 29, 38, ..., 164, ...; "
                 "29 is the paper's ResNeXt-29)")
    return f"{cifar}, or {imagenet}"
