"""The architecture options (--network, --num-layers, --num-group, --bottleneck-width), and a word when they are
not used: a run from a checkpoint trains the checkpoint's network, and resnet has no groups.

MXNet's fine-tune.py accepted them and used them for nothing (its fit.py asserted that a resumed checkpoint's
symbol was the one they build). The trainer accepts them in both (a resumed command still carries them) and says
so when they describe a network other than the one it trains.
"""
from __future__ import annotations

import json
from typing import Optional

from mxlaunch.errors import UsageError
from mxlaunch.trainer import networks
from mxlaunch.trainer.config import FitConfig

OPTIONS = ("--network", "--num-layers", "--num-group", "--bottleneck-width")
RESNEXT_ONLY = ("--num-group", "--bottleneck-width")
FEATURES = "flatten0_output"  # the classifier's input in every network (trainer/networks/layers.py)


def _given(cfg: FitConfig, options) -> str:
    """`--network resnext --num-layers 101`: the options of `options` typed on the command line, with values."""
    return " ".join(f"{option} {getattr(cfg, option[2:].replace('-', '_'))}" for option in options
                    if option in cfg.explicit)


def resnet_ignores(cfg: FitConfig) -> Optional[str]:
    """The line for --num-group/--bottleneck-width given to a resnet built from scratch (it has no groups)."""
    given = _given(cfg, RESNEXT_ONLY)
    if cfg.network == "resnet" and given:
        return f"{given} not used: only --network resnext has groups (this is a resnet)"
    return None


def form_ignores(cfg: FitConfig) -> Optional[str]:
    """The line for --num-group/--bottleneck-width given to a network built from scratch that has no use for them:
    a resnet, a ResNeXt form without grouped convolutions, or (--bottleneck-width) one of MXNet's ResNeXt forms,
    whose bottlenecks are half of each unit's channels."""
    line = resnet_ignores(cfg)
    if line or cfg.network != "resnext":
        return line
    found = networks.check(cfg.network, cfg.num_layers, cfg.image_shape)
    if not found.grouped:
        unused, why = RESNEXT_ONLY, f"{found.name} at {cfg.image_shape[1]} px has no grouped convolutions"
    else:
        unused, why = ("--bottleneck-width",), (f"{found.name} at {cfg.image_shape[1]} px is MXNet's, whose "
                                                f"bottlenecks are half of each unit's channels")
        if found.paper_resnext:
            return None
    given = _given(cfg, unused)
    return f"{given} not used: {why}" if given else None


def _features(symbol) -> Optional[list]:
    """The graph that feeds the classifier, without names: operators, their settings and what feeds each (the
    names of unnamed operators, `_plus3`, count the symbols a process built before)."""
    internals = symbol.get_internals()
    if FEATURES not in internals.list_outputs():
        return None
    nodes = json.loads(internals[FEATURES].tojson())["nodes"]
    return [(node["op"], node.get("attrs", {}), [entry[:2] for entry in node["inputs"]]) for node in nodes]


def _built(cfg: FitConfig) -> list:
    """Every network the options build: at this run's image size and in each form their depth has, whatever the
    size (resnet-50 is also 6n+2: 32 px images build its CIFAR form, yet a checkpoint of its ImageNet form,
    fine-tuned on them, is the network the options name). Raises the UsageError of this size when none builds."""
    channels = cfg.image_shape[0]
    if cfg.network is None or cfg.num_layers is None:
        raise UsageError("--network and --num-layers together name a network")
    built, errors = [], []
    # the global pooling before flatten0 makes the graph the same at every size of one form
    for shape in (tuple(cfg.image_shape), (channels, 28, 28), (channels, 32, 32), (channels, 224, 224)):
        try:
            built.append(networks.get_symbol(cfg.network, cfg.num_layers, cfg.num_classes, shape, dtype=cfg.dtype,
                                             num_group=cfg.num_group, bottleneck_width=cfg.bottleneck_width))
        except UsageError as exc:  # e.g. a depth this network lacks (at this size)
            errors.append(exc)
    if not built:
        raise errors[0]
    return built


def checkpoint_ignores(cfg: FitConfig, symbol, symbol_file: str) -> Optional[str]:
    """The line for architecture options typed for a run that starts from a checkpoint (`symbol`, read from
    `symbol_file`) when they build another network than the checkpoint's; None when one of the networks they
    build has the same features (a resumed command carrying its original options), when the checkpoint has no
    `flatten0_output` to compare (it cannot tell), or when none were typed."""
    given = _given(cfg, OPTIONS)
    if not given:
        return None
    try:
        built = _built(cfg)
    except UsageError as exc:  # they build nothing: true whatever the checkpoint is
        described = f"none ({exc.format_message()})"
    else:
        features = _features(symbol)
        if features is None or any(features == _features(b) for b in built):
            return None
        described = f"another one, {cfg.network}-{cfg.num_layers}"
    return f"{given} not used: the network is the one in {symbol_file}; the options describe {described}"
