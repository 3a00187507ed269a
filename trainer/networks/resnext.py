"""ResNeXt (Xie et al. 2017): CIFAR form with 9n+2 layers (ResNeXt-29), ImageNet form 50/101/152.

Unlike MXNet's example, the ImageNet form works on CIFAR-size images (global pooling after the last
stage), so that an ImageNet-form checkpoint can be fine-tuned on 28-32 px images.
"""
from __future__ import annotations

import mxnet as mx

from mxlaunch.trainer.networks.forms import RESNEXT
from mxlaunch.trainer.networks.layers import batch_norm, classifier, conv, imagenet_stem, relu

# cardinality x width: 8x64d for ResNeXt-29 (the paper's CIFAR model), 32x4d for the ImageNet form
DEFAULTS = {"cifar": {"num_group": 8, "bottleneck_width": 64}, "imagenet": {"num_group": 32, "bottleneck_width": 4}}


def _unit(data, out_filter, inner, num_group, stride, project, name):
    """Aggregated-transform bottleneck: 1x1, grouped 3x3 (the cardinality), 1x1; post-activation."""
    body = relu(batch_norm(conv(data, inner, 1, 1, f"{name}_conv1"), f"{name}_bn1"), f"{name}_relu1")
    body = conv(body, inner, 3, stride, f"{name}_conv2", num_group=num_group)
    body = relu(batch_norm(body, f"{name}_bn2"), f"{name}_relu2")
    body = batch_norm(conv(body, out_filter, 1, 1, f"{name}_conv3"), f"{name}_bn3")
    shortcut = batch_norm(conv(data, out_filter, 1, stride, f"{name}_sc"), f"{name}_sc_bn") if project else data
    return relu(body + shortcut, f"{name}_relu")


def get_symbol(num_classes: int, num_layers: int, image_shape, num_group=None, bottleneck_width=None,
               **_ignored) -> mx.sym.Symbol:
    side = min(image_shape[1:])
    data = mx.sym.Variable("data")
    if RESNEXT.uses_cifar_form(num_layers, side):
        form, units = "cifar", ((num_layers - 2) // 9,) * 3
        body = relu(batch_norm(conv(data, 64, 3, 1, "conv0"), "bn0"), "relu0")
        outputs = (256, 512, 1024)
    else:
        form, units = "imagenet", RESNEXT.imagenet_units[num_layers][0]
        body = imagenet_stem(data, 64)
        outputs = (256, 512, 1024, 2048)
    groups = DEFAULTS[form]["num_group"] if num_group is None else num_group
    width = DEFAULTS[form]["bottleneck_width"] if bottleneck_width is None else bottleneck_width
    for stage, (count, out_filter) in enumerate(zip(units, outputs)):
        inner = groups * width * 2 ** stage
        for unit in range(count):
            stride = 2 if unit == 0 and stage > 0 else 1
            body = _unit(body, out_filter, inner, groups, stride, unit == 0, f"stage{stage + 1}_unit{unit + 1}")
    return classifier(body, num_classes)
