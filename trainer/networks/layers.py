"""Building blocks shared by the residual networks (MXNet symbols)."""
from __future__ import annotations

import mxnet as mx

BN_EPS = 2e-5
BN_MOMENTUM = 0.9


def batch_norm(data, name):
    return mx.sym.BatchNorm(data=data, fix_gamma=False, eps=BN_EPS, momentum=BN_MOMENTUM, name=name)


def relu(data, name):
    return mx.sym.Activation(data=data, act_type="relu", name=name)


def conv(data, num_filter, kernel, stride, name, num_group=1):
    pad = (kernel // 2, kernel // 2)
    return mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(kernel, kernel), stride=(stride, stride),
                              pad=pad, num_group=num_group, no_bias=True, name=name)


def imagenet_stem(data, num_filter):
    """7x7/2 convolution and 3x3/2 max-pooling: the ImageNet entry, /4 in each dimension."""
    body = conv(data, num_filter, 7, 2, "conv0")
    body = relu(batch_norm(body, "bn0"), "relu0")
    return mx.sym.Pooling(data=body, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max", name="pool0")


def classifier(body, num_classes):
    """Global average pooling, so that any input size works, then the classifier.

    The head is `flatten0` -> `fc1` -> `softmax`, the names MXNet's own examples use, so that
    fine-tuning finds the features under the same name in checkpoints of either origin.
    """
    pool = mx.sym.Pooling(data=body, global_pool=True, kernel=(1, 1), pool_type="avg", name="pool1")
    flat = mx.sym.Flatten(data=pool, name="flatten0")
    return classifier_head(flat, num_classes, "fc1")


def classifier_head(features, num_classes, fc_name):
    fc = mx.sym.FullyConnected(data=features, num_hidden=num_classes, name=fc_name)
    return mx.sym.SoftmaxOutput(data=fc, name="softmax")
