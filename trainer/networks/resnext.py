"""ResNeXt (Xie et al. 2017) as MXNet 1.9's example/image-classification/symbols/resnext.py builds it (Apache
License 2.0; after Wei Wu's), for the forms of trainer/networks/forms.py; and the paper's CIFAR ResNeXt-29,
which MXNet's script refuses, in the same style and names."""
from __future__ import annotations

import mxnet as mx

from mxlaunch.trainer.networks.forms import MXNET_RESNEXT_GROUPS, RESNEXT29_GROUPS, RESNEXT29_WIDTH, Form
from mxlaunch.trainer.networks.layers import batch_norm, conv, head, inputs, relu, stem


def residual_unit(data, num_filter, stride, dim_match, name, bottle_neck, num_group, inner=None):
    """resnext.py's residual_unit: conv-BN-ReLU, grouped 3x3 in bottlenecks, ReLU after the sum. `inner`: the
    bottleneck's channels (MXNet's: half of num_filter)."""
    if bottle_neck:
        inner = inner or int(num_filter * 0.5)
        act1 = relu(batch_norm(conv(data, inner, 1, 1, 0, name + "_conv1"), name + "_bn1"), name + "_relu1")
        conv2 = conv(act1, inner, 3, stride, 1, name + "_conv2", num_group=num_group)
        act2 = relu(batch_norm(conv2, name + "_bn2"), name + "_relu2")
        body = batch_norm(conv(act2, num_filter, 1, 1, 0, name + "_conv3"), name + "_bn3")
    else:
        act1 = relu(batch_norm(conv(data, num_filter, 3, stride, 1, name + "_conv1"), name + "_bn1"), name + "_relu1")
        body = batch_norm(conv(act1, num_filter, 3, 1, 1, name + "_conv2"), name + "_bn2")
    if dim_match:
        shortcut = data
    else:
        shortcut_conv = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(1, 1), stride=(stride, stride),
                                           no_bias=True, workspace=256, name=name + "_sc")
        shortcut = batch_norm(shortcut_conv, name + "_sc_bn")
    return mx.sym.Activation(data=body + shortcut, act_type="relu", name=name + "_relu")


def get_symbol(form: Form, num_classes: int, dtype: str = "float32", num_group=None, bottleneck_width=None,
               **_ignored):
    body = stem(inputs(dtype), form.filters[0], form.small_stem)
    groups = num_group or (RESNEXT29_GROUPS if form.paper_resnext else MXNET_RESNEXT_GROUPS)
    width = bottleneck_width or RESNEXT29_WIDTH
    if form.paper_resnext:  # the paper's stem is conv-BN-ReLU
        body = relu(batch_norm(body, "bn0"), "relu0")
    for i, count in enumerate(form.units):
        inner = groups * width * 2 ** i if form.paper_resnext else None
        stride = 1 if i == 0 else 2
        for j in range(count):
            body = residual_unit(body, form.filters[i + 1], stride if j == 0 else 1, j > 0, f"stage{i + 1}_unit{j + 1}",
                                 form.bottleneck, groups, inner)
    return head(body, num_classes, dtype)
