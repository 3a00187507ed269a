"""What every network shares: MXNet's input layers (`id` or a float16 cast, then `bn_data`), its two stems and
its classifier head, as example/image-classification/symbols/resnet.py and resnext.py of MXNet 1.9 build them
(same operators, attributes and names, so that checkpoints load both ways)."""
from __future__ import annotations

import mxnet as mx
import numpy as np

BN_EPS = 2e-5
BN_MOMENTUM = 0.9
WORKSPACE = 256  # MXNet's conv_workspace default: it is an attribute of every convolution in the saved symbol


def batch_norm(data, name, fix_gamma=False):
    return mx.sym.BatchNorm(data=data, fix_gamma=fix_gamma, eps=BN_EPS, momentum=BN_MOMENTUM, name=name)


def relu(data, name):
    return mx.sym.Activation(data=data, act_type="relu", name=name)


def conv(data, num_filter, kernel, stride, pad, name, num_group=None):
    """A convolution as MXNet's symbols write it (`num_group` only where they pass one)."""
    extra = {} if num_group is None else {"num_group": num_group}
    return mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(kernel, kernel), stride=(stride, stride),
                              pad=(pad, pad), no_bias=True, workspace=WORKSPACE, name=name, **extra)


def inputs(dtype: str):
    """`data`, cast to float16 for --dtype float16 (else MXNet's identity `id`), then MXNet's `bn_data`."""
    data = mx.sym.Variable(name="data")
    if dtype == "float16":
        data = mx.sym.Cast(data=data, dtype=np.float16)
    else:
        data = mx.sym.identity(data=data, name="id")
    return batch_norm(data, "bn_data", fix_gamma=True)


def stem(data, num_filter, small: bool):
    """3x3 stride-1 conv0 for images up to 32 px; else 7x7/2 conv0, BN, ReLU and 3x3/2 max-pooling."""
    if small:
        return mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(3, 3), stride=(1, 1), pad=(1, 1),
                                  no_bias=True, name="conv0", workspace=WORKSPACE)
    body = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(7, 7), stride=(2, 2), pad=(3, 3),
                              no_bias=True, name="conv0", workspace=WORKSPACE)
    body = relu(batch_norm(body, "bn0"), "relu0")
    return mx.sym.Pooling(data=body, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")


def head(body, num_classes: int, dtype: str):
    """Global average pooling, `flatten0`, `fc1` (cast back to float32 under float16) and `softmax`."""
    pool1 = mx.sym.Pooling(data=body, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    flat = mx.sym.Flatten(data=pool1)
    return classifier_head(flat, num_classes, "fc1", dtype)


def classifier_head(features, num_classes: int, fc_name: str, dtype: str = "float32", cast_name=None):
    fc = mx.sym.FullyConnected(data=features, num_hidden=num_classes, name=fc_name)
    if dtype == "float16":
        fc = mx.sym.Cast(data=fc, dtype=np.float32, **({"name": cast_name} if cast_name else {}))
    return mx.sym.SoftmaxOutput(data=fc, name="softmax")
