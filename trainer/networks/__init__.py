"""The networks `--network` names, and the one place that checks `--num-layers` against them."""
from __future__ import annotations

from mxlaunch.errors import UsageError
from mxlaunch.trainer.networks.forms import FORMS

NETWORKS = ("resnet", "resnext")


def _module(network: str):
    if network == "resnet":
        from mxlaunch.trainer.networks import resnet as module
    elif network == "resnext":
        from mxlaunch.trainer.networks import resnext as module
    else:
        raise UsageError(f"unknown --network {network!r}: choose one of {', '.join(NETWORKS)}")
    return module


def check(network: str, num_layers: int, image_shape) -> None:
    if network not in FORMS:
        raise UsageError(f"unknown --network {network!r}: choose one of {', '.join(NETWORKS)}")
    forms, side = FORMS[network], min(image_shape[1:])
    if not forms.is_valid(num_layers, side):
        raise UsageError(f"--network {network} has no {num_layers}-layer form at {side} px: valid --num-layers are "
                         f"{forms.valid_depths_text(side)}")


def get_symbol(network: str, num_layers: int, num_classes: int, image_shape, **options):
    check(network, num_layers, image_shape)
    return _module(network).get_symbol(num_classes=num_classes, num_layers=num_layers,
                                       image_shape=image_shape, **options)
