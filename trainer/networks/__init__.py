"""The networks `--network` names, and the one place that checks `--num-layers` against them.

  forms      which network --network and --num-layers build at an image height (pure rules, no MXNet)
  layers     what every network shares: MXNet's input layers, stems and classifier head
  precision  --dtype on a network read from a checkpoint: the float16 casts added or removed
  resnet     ResNet as MXNet's symbols/resnet.py builds it
  resnext    ResNeXt as MXNet's symbols/resnext.py builds it
"""
from __future__ import annotations

from mxlaunch.errors import UsageError
from mxlaunch.trainer.networks.forms import NETWORKS, Form, form, valid_depths_text


def check(network: str, num_layers: int, image_shape) -> Form:
    """The form these options build at this image height (MXNet's symbols decide by the height alone)."""
    if network not in NETWORKS:
        raise UsageError(f"unknown --network {network!r}: choose one of {', '.join(NETWORKS)}")
    height = image_shape[1]
    found = form(network, num_layers, height)
    if found is None:
        raise UsageError(f"--network {network} has no {num_layers}-layer form at {height} px: valid --num-layers are "
                         f"{valid_depths_text(network, height)}")
    return found


def check_groups(found: Form, num_group) -> None:
    """--num-group must divide the channels of every grouped convolution of MXNet's ResNeXt (half of each
    stage's output); the paper's ResNeXt-29 sizes them from the groups."""
    if not num_group or not found.grouped or found.paper_resnext:
        return
    for stage, channels in enumerate(found.filters[1:], start=1):
        inner = int(channels * 0.5)
        if inner % num_group:
            raise UsageError(f"--num-group {num_group}: {found.name}'s grouped convolutions of stage {stage} have "
                             f"{inner} channels, which {num_group} groups do not divide")


def get_symbol(network: str, num_layers: int, num_classes: int, image_shape, dtype: str = "float32", **options):
    """The network's symbol, named as MXNet's scripts name it when they build it in a fresh process (the
    unnamed operators count from 0: `_plus0`, `flatten0` ...), so that its JSON is theirs whatever this process
    built before."""
    import mxnet as mx  # heavy

    found = check(network, num_layers, image_shape)
    check_groups(found, options.get("num_group"))
    if network == "resnet":
        from mxlaunch.trainer.networks import resnet as module  # heavy
    else:
        from mxlaunch.trainer.networks import resnext as module  # heavy
    with mx.name.NameManager():
        return module.get_symbol(found, num_classes, dtype=dtype, **options)
