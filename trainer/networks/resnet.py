"""ResNet (pre-activation, He et al. 2016) as MXNet 1.9's example/image-classification/symbols/resnet.py builds it
(Apache License 2.0; after Wei Wu's), for the forms of trainer/networks/forms.py."""
from __future__ import annotations

import mxnet as mx

from mxlaunch.trainer.networks.forms import Form
from mxlaunch.trainer.networks.layers import batch_norm, conv, head, inputs, relu, stem


def residual_unit(data, num_filter, stride, dim_match, name, bottle_neck):
    """resnet.py's residual_unit: BN-ReLU before each convolution; a 1x1 projection where channels change."""
    act1 = relu(batch_norm(data, name + "_bn1"), name + "_relu1")
    if bottle_neck:
        conv1 = conv(act1, int(num_filter * 0.25), 1, 1, 0, name + "_conv1")
        conv2 = conv(relu(batch_norm(conv1, name + "_bn2"), name + "_relu2"), int(num_filter * 0.25), 3, stride, 1,
                     name + "_conv2")
        body = conv(relu(batch_norm(conv2, name + "_bn3"), name + "_relu3"), num_filter, 1, 1, 0, name + "_conv3")
    else:
        conv1 = conv(act1, num_filter, 3, stride, 1, name + "_conv1")
        body = conv(relu(batch_norm(conv1, name + "_bn2"), name + "_relu2"), num_filter, 3, 1, 1, name + "_conv2")
    shortcut = data if dim_match else mx.sym.Convolution(data=act1, num_filter=num_filter, kernel=(1, 1),
                                                         stride=(stride, stride), no_bias=True, workspace=256,
                                                         name=name + "_sc")
    return body + shortcut


def get_symbol(form: Form, num_classes: int, dtype: str = "float32", **_ignored):
    body = stem(inputs(dtype), form.filters[0], form.small_stem)
    for i, count in enumerate(form.units):
        stride = 1 if i == 0 else 2
        body = residual_unit(body, form.filters[i + 1], stride, False, f"stage{i + 1}_unit1", form.bottleneck)
        for j in range(count - 1):
            body = residual_unit(body, form.filters[i + 1], 1, True, f"stage{i + 1}_unit{j + 2}", form.bottleneck)
    body = relu(batch_norm(body, "bn1"), "relu1")
    return head(body, num_classes, dtype)
