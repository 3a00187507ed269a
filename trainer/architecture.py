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


def _features(symbol) -> Optional[list]:
    """The graph that feeds the classifier, without names: operators, their settings and what feeds each (the
    names of unnamed operators, `_plus3`, count the symbols a process built before)."""
    internals = symbol.get_internals()
    if FEATURES not in internals.list_outputs():
        return None
    nodes = json.loads(internals[FEATURES].tojson())["nodes"]
    return [(node["op"], node.get("attrs", {}), [entry[:2] for entry in node["inputs"]]) for node in nodes]


def checkpoint_ignores(cfg: FitConfig, symbol, symbol_file: str) -> Optional[str]:
    """The line for architecture options typed for a run that starts from a checkpoint (`symbol`, read from
    `symbol_file`) when they build another network than the checkpoint's; None when they build the same
    features (a resumed command carrying its original options), or none were typed."""
    given = _given(cfg, OPTIONS)
    if not given:
        return None
    from mxlaunch.trainer import networks

    try:
        built = networks.get_symbol(cfg.network, cfg.num_layers, cfg.num_classes, cfg.image_shape,
                                    num_group=cfg.num_group, bottleneck_width=cfg.bottleneck_width)
    except UsageError as exc:  # e.g. a depth this network lacks
        described = f"none ({exc.format_message()})"
    else:
        features = _features(symbol)
        if features is not None and features == _features(built):
            return None
        described = f"another one, {cfg.network}-{cfg.num_layers}"
    return f"{given} not used: the network is the one in {symbol_file}; the options describe {described}"
