"""ResNet (pre-activation, He et al. 2016): CIFAR form with 6n+2 layers, ImageNet form 18..200."""
from __future__ import annotations

import mxnet as mx

from mxlaunch.trainer.networks.forms import RESNET
from mxlaunch.trainer.networks.layers import batch_norm, classifier, conv, imagenet_stem, relu


def _unit(data, num_filter, stride, project, bottleneck, name):
    """Pre-activation residual unit: BN-ReLU before each convolution, identity (or 1x1) shortcut."""
    act = relu(batch_norm(data, f"{name}_bn1"), f"{name}_relu1")
    if bottleneck:
        inner = num_filter // 4
        body = conv(act, inner, 1, 1, f"{name}_conv1")
        body = conv(relu(batch_norm(body, f"{name}_bn2"), f"{name}_relu2"), inner, 3, stride, f"{name}_conv2")
        body = conv(relu(batch_norm(body, f"{name}_bn3"), f"{name}_relu3"), num_filter, 1, 1, f"{name}_conv3")
    else:
        body = conv(act, num_filter, 3, stride, f"{name}_conv1")
        body = conv(relu(batch_norm(body, f"{name}_bn2"), f"{name}_relu2"), num_filter, 3, 1, f"{name}_conv2")
    shortcut = conv(act, num_filter, 1, stride, f"{name}_sc") if project else data
    return body + shortcut


def _stages(body, units, filters, first_stride, bottleneck):
    for stage, (count, num_filter) in enumerate(zip(units, filters)):
        for unit in range(count):
            stride = (first_stride if stage == 0 else 2) if unit == 0 else 1
            project = unit == 0  # channel count or resolution changes at each stage entry
            body = _unit(body, num_filter, stride, project, bottleneck, f"stage{stage + 1}_unit{unit + 1}")
    return relu(batch_norm(body, "bn1"), "relu1")


def get_symbol(num_classes: int, num_layers: int, image_shape, **_ignored) -> mx.sym.Symbol:
    side = min(image_shape[1:])
    data = mx.sym.Variable("data")
    if RESNET.uses_cifar_form(num_layers, side):
        per_stage = (num_layers - 2) // 6
        body = conv(data, 16, 3, 1, "conv0")
        body = _stages(body, (per_stage,) * 3, (16, 32, 64), 1, bottleneck=False)
    else:
        units, bottleneck = RESNET.imagenet_units[num_layers]
        filters = (256, 512, 1024, 2048) if bottleneck else (64, 128, 256, 512)
        body = _stages(imagenet_stem(data, 64), units, filters, 1, bottleneck)
    return classifier(body, num_classes)
