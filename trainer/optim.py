"""The optimizer, its parameters and the initializer, as common/fit.py builds them, plus the update count a
resumed run starts from (the schedule's position)."""
from __future__ import annotations

import logging
import math

from mxlaunch.errors import UsageError
from mxlaunch.trainer.config import FitConfig
from mxlaunch.trainer.schedule import IGNORES_LR, make_scheduler

log = logging.getLogger("trainer")

HAS_MOMENTUM = frozenset({"sgd", "dcasgd", "nag", "signum", "lbsgd"})  # common/fit.py: the only ones given --mom
HAS_WARMUP = frozenset({"lbsgd", "lbnag"})  # common/fit.py: the ones given the warm-up and macro-batch options
WARMUP_OPTIONS = ("--warmup-epochs", "--warmup-strategy", "--macrobatch-size")


def optimizer_class(name: str):
    import mxnet as mx  # heavy

    registry = mx.optimizer.Optimizer.opt_registry
    if name.lower() not in registry:
        choices = ", ".join(sorted(n for n in registry if n != "test"))
        raise UsageError(f"unknown --optimizer {name!r}: choose one of {choices}")
    return registry[name.lower()]


def _warn_unused(cfg: FitConfig) -> None:
    name = cfg.optimizer
    if name in IGNORES_LR:
        given = [o for o in ("--lr", "--lr-factor", "--lr-step-epochs") if o in cfg.explicit]
        if given:
            log.warning("%s has no learning rate: %s ignored", name, ", ".join(given))
    if name not in HAS_MOMENTUM and "--mom" in cfg.explicit:
        log.warning("%s is not given --mom (common/fit.py gives it to %s only): --mom ignored", name,
                    ", ".join(sorted(HAS_MOMENTUM)))
    given = [o for o in WARMUP_OPTIONS if o in cfg.explicit]
    if name not in HAS_WARMUP and given:
        log.warning("%s ignored: they apply to --optimizer lbsgd only (as in common/fit.py)", ", ".join(given))


def optimizer_params(cfg: FitConfig, epoch_updates: int, num_workers: int, begin_epoch: int = 0,
                     begin_batch: int = 0) -> dict:
    """common/fit.py's optimizer_params for this run; `begin_num_update` puts the schedule where a resumed run
    is (MXNet's fit.py shifted the steps instead)."""
    _warn_unused(cfg)
    params = {"learning_rate": cfg.lr, "wd": cfg.wd, "multi_precision": True,
              "begin_num_update": begin_epoch * epoch_updates + begin_batch}
    scheduler = make_scheduler(cfg.lr, cfg.lr_factor, cfg.lr_step_epochs, epoch_updates, cfg.lr_power,
                               cfg.num_epochs)
    if scheduler is not None:
        params["lr_scheduler"] = scheduler
    if cfg.optimizer in HAS_MOMENTUM:
        params["momentum"] = cfg.mom
    if cfg.optimizer in HAS_WARMUP:
        macrobatch = max(cfg.macrobatch_size, cfg.batch_size * num_workers)
        params.update(updates_per_epoch=epoch_updates, begin_epoch=begin_epoch,
                      batch_scale=math.ceil(macrobatch / cfg.batch_size / num_workers),
                      warmup_strategy=cfg.warmup_strategy, warmup_epochs=cfg.warmup_epochs, num_epochs=cfg.num_epochs)
    return params


def create(module, cfg: FitConfig, params: dict, kv, begin_batch: int = 0):
    """The optimizer as Module.init_optimizer would create it from its name; a resumed LBSGD's warm-up and
    gradient accumulation then continue at the update the run is at (its `begin_epoch` counts whole epochs only)."""
    import mxnet as mx  # heavy

    batch = cfg.batch_size * (kv.num_workers if kv is not None and "_sync" in kv.type else 1)
    names = dict(enumerate(module._exec_group.param_names))  # the kvstore (or one device) updates by parameter
    optimizer = mx.optimizer.create(cfg.optimizer, sym=module.symbol, param_idx2name=names,
                                    rescale_grad=1.0 / batch, **params)
    if cfg.optimizer in HAS_WARMUP:
        optimizer.init_updates += begin_batch
        # LBSGD's first accumulation keeps a reference to the gradient buffer (the next batch overwrites it);
        # a count already going, as in the uninterrupted run, adds to 0 instead. Keyed by index here, by name on
        # the servers.
        seeded = {"cum_grad": 0, "num_cums": optimizer.init_updates}
        optimizer.cumgrads = {key: dict(seeded) for i, name in names.items() for key in (i, name)}
    return optimizer


def initializer(cfg: FitConfig):
    """common/fit.py's --initializer (default: Xavier, gaussian, factor 'in', magnitude 2)."""
    import mxnet as mx  # heavy

    return {"default": lambda: mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
            "xavier": mx.init.Xavier, "msra": mx.init.MSRAPrelu, "orthogonal": mx.init.Orthogonal,
            "normal": mx.init.Normal, "uniform": mx.init.Uniform, "one": mx.init.One,
            "zero": mx.init.Zero}[cfg.initializer]()
