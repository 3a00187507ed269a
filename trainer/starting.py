"""Where a run starts: a new network, its own checkpoint (`fit --load-epoch`), or a pretrained one (`fine-tune`)."""
from __future__ import annotations

import os
from typing import Optional

from mxlaunch.errors import UsageError
from mxlaunch.trainer import architecture, networks
from mxlaunch.trainer import model as checkpoints
from mxlaunch.trainer.config import FitConfig
from mxlaunch.trainer.networks.precision import with_dtype
from mxlaunch.trainer.records import DataError

# common/modelzoo.py: names fine-tune.py downloaded from data.mxnet.io (gone) instead of reading local files
MODEL_ZOO = frozenset({"imagenet1k-inception-bn", "imagenet1k-resnet-18", "imagenet1k-resnet-34",
                       "imagenet1k-resnet-50", "imagenet1k-resnet-101", "imagenet1k-resnet-152",
                       "imagenet1k-resnext-50", "imagenet1k-resnext-101", "imagenet1k-resnext-101-64x4d",
                       "imagenet11k-resnet-152",
                       "imagenet11k-place365ch-resnet-152", "imagenet11k-place365ch-resnet-50"})


def _what(cfg: FitConfig) -> str:
    return "--load-batch" if cfg.load_batch else "--load-epoch"


def check_files(cfg: FitConfig) -> None:
    """The checkpoint a run starts from exists (before MXNet is imported: ~2 s saved on a typo)."""
    if cfg.pretrained_model:
        prefix = cfg.pretrained_model
        if prefix in MODEL_ZOO and not os.path.isfile(f"{prefix}-symbol.json"):
            raise DataError(f"--pretrained-model {prefix} is a name of MXNet's model zoo, which fine-tune.py "
                            f"downloaded from data.mxnet.io (gone): give the prefix of local files "
                            f"PREFIX-symbol.json and PREFIX-{cfg.load_epoch:04d}.params")
        checkpoints.check_checkpoint_files(prefix, cfg.load_epoch or 0, "--pretrained-model")
    elif cfg.resumes:
        if not cfg.model_prefix:
            raise UsageError("--load-epoch needs --model-prefix (where the checkpoints are)")
        checkpoints.check_checkpoint_files(cfg.model_prefix, cfg.load_epoch, _what(cfg), cfg.load_batch)


def _loaded(cfg: FitConfig, prefix: str, epoch: int, what: str, batch=None) -> checkpoints.Model:
    loaded = checkpoints.load_checkpoint(prefix, epoch, what, batch)
    loaded.symbol = with_dtype(loaded.symbol, cfg.dtype, f"{prefix}-symbol.json")
    return loaded


def initial_model(cfg: FitConfig) -> checkpoints.Model:
    if cfg.pretrained_model:
        loaded = _loaded(cfg, cfg.pretrained_model, cfg.load_epoch or 0, "--pretrained-model")
        return checkpoints.for_fine_tuning(loaded, cfg.num_classes, cfg.layer_before_fullc,
                                           "--layer-before-fullc" in cfg.explicit, cfg.dtype)
    if cfg.resumes:
        loaded = _loaded(cfg, cfg.model_prefix, cfg.load_epoch, _what(cfg), cfg.load_batch)
        classes = checkpoints.classifier_size(loaded.symbol)
        if classes != cfg.num_classes:
            raise UsageError(f"the checkpoint classifies {classes} classes, not --num-classes {cfg.num_classes}: "
                             f"use `trainer fine-tune` to change the classes")
        return loaded
    symbol = networks.get_symbol(cfg.network, cfg.num_layers, cfg.num_classes, cfg.image_shape, dtype=cfg.dtype,
                                 num_group=cfg.num_group, bottleneck_width=cfg.bottleneck_width)
    return checkpoints.Model(symbol)


def unused_architecture(cfg: FitConfig, start: checkpoints.Model) -> Optional[str]:
    """What to say of --network/--num-layers/--num-group/--bottleneck-width that this run does not use."""
    if start.arg_params is None:  # from scratch: the options build the network
        return architecture.form_ignores(cfg)
    prefix = cfg.pretrained_model or cfg.model_prefix
    return architecture.checkpoint_ignores(cfg, start.symbol, f"{prefix}-symbol.json")
