"""Which depths each network has, at which image sizes: pure rules, checked before MXNet is even imported."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

CIFAR_MAX_SIDE = 32  # images up to this side take the CIFAR form when the depth has one


@dataclass(frozen=True)
class Forms:
    cifar_unit_layers: int  # layers per residual unit in the CIFAR form: depth = 3 stages * n units * this + 2
    cifar_min_depth: int
    cifar_examples: str
    imagenet_units: Dict[int, Tuple[Tuple[int, ...], bool]]  # depth -> (units per stage, bottleneck?)
    imagenet_first: bool = False  # a depth of both forms (ResNeXt-101 = 9*11+2) means the ImageNet model

    def cifar_ok(self, depth: int) -> bool:
        return depth >= self.cifar_min_depth and (depth - 2) % (3 * self.cifar_unit_layers) == 0

    def uses_cifar_form(self, depth: int, image_side: int) -> bool:
        """Small images take the CIFAR form whenever the depth has one (so resnet-56/110 mean what papers mean)."""
        if self.imagenet_first and depth in self.imagenet_units:
            return False
        return image_side <= CIFAR_MAX_SIDE and self.cifar_ok(depth)

    def is_valid(self, depth: int, image_side: int) -> bool:
        return self.uses_cifar_form(depth, image_side) or depth in self.imagenet_units

    def valid_depths_text(self, image_side: int) -> str:
        imagenet = ", ".join(map(str, self.imagenet_units))
        if image_side <= CIFAR_MAX_SIDE:
            return f"{self.cifar_examples} for the CIFAR form, or {imagenet} for the ImageNet form"
        return imagenet


RESNET = Forms(
    cifar_unit_layers=2, cifar_min_depth=8, cifar_examples="6n+2 (8, 14, 20, 32, 44, 56, 110, ...)",
    imagenet_units={18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True),
                    101: ((3, 4, 23, 3), True), 152: ((3, 8, 36, 3), True), 200: ((3, 24, 36, 3), True)},
)
RESNEXT = Forms(
    cifar_unit_layers=3, cifar_min_depth=11, cifar_examples="9n+2 (11, 20, 29, 38, ...)",
    imagenet_units={50: ((3, 4, 6, 3), True), 101: ((3, 4, 23, 3), True), 152: ((3, 8, 36, 3), True)},
    imagenet_first=True,
)
FORMS = {"resnet": RESNET, "resnext": RESNEXT}
