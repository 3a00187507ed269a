"""Checkpoints in MXNet's own format, and the classifier swap of fine-tuning.

`PREFIX-symbol.json` + `PREFIX-%04d.params` (loadable by `mx.model.load_checkpoint`); the number is
the count of epochs completed, so `--load-epoch N` continues at epoch N. In single-process training
the optimizer state is saved beside them as `PREFIX-%04d.states` so that momentum survives a resume,
also on another number of devices. A checkpoint taken on request inside an epoch (trainer/stop.py) is
`PREFIX-EEEE-BBBBBB.params` (+ `.states`): epoch E in progress with B of its batches done, resumed by
`--load-epoch E --load-batch B`; same format, and no search for `PREFIX-NNNN.params` takes it for one. Once a
newer checkpoint is written (whole or mid-epoch), it is removed.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from mxlaunch.files import replaced
from mxlaunch.trainer.records import DataError

log = logging.getLogger("trainer")

FINETUNE_FC = "fc_finetune"  # the classifier `trainer fine-tune` adds; its presence marks a fine-tuned model


@dataclass
class Model:
    symbol: object
    arg_params: Optional[Dict] = None
    aux_params: Optional[Dict] = None
    begin_epoch: int = 0
    begin_batch: int = 0  # batches of begin_epoch already trained (a checkpoint taken inside the epoch)


def _tag(epoch: int, batch: Optional[int]) -> str:
    return "%04d" % epoch if not batch else "%04d-%06d" % (epoch, batch)


def params_path(prefix: str, epoch: int, batch: Optional[int] = None) -> str:
    return f"{prefix}-{_tag(epoch, batch)}.params"


def states_path(prefix: str, epoch: int, batch: Optional[int] = None) -> str:
    return f"{prefix}-{_tag(epoch, batch)}.states"


def _load_params(path: str):
    """(arg_params, aux_params) of a params file, as `mx.model.load_checkpoint` splits them."""
    import mxnet as mx  # heavy

    arg_params, aux_params = {}, {}
    for key, value in mx.nd.load(path).items():
        kind, _, name = key.partition(":")
        {"arg": arg_params, "aux": aux_params}.get(kind, {})[name] = value
    return arg_params, aux_params


def check_checkpoint_files(prefix: str, epoch: int, what: str, batch: Optional[int] = None) -> str:
    """The params file of a checkpoint whose files exist (no MXNet needed: a typo is refused at once)."""
    params = params_path(prefix, epoch, batch)
    for path in (f"{prefix}-symbol.json", params):
        if not os.path.isfile(path):
            raise DataError(f"{what}: no checkpoint file {path}")
    return params


def load_checkpoint(prefix: str, epoch: int, what: str, batch: Optional[int] = None) -> Model:
    import mxnet as mx  # heavy

    params = check_checkpoint_files(prefix, epoch, what, batch)
    try:
        symbol = mx.sym.load(f"{prefix}-symbol.json")
        arg_params, aux_params = _load_params(params)
    except mx.base.MXNetError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{what}: cannot load checkpoint {params}: {first}") from exc
    return Model(symbol, arg_params, aux_params, begin_epoch=epoch, begin_batch=batch or 0)


def save_checkpoint(prefix: str, epoch: int, module, states_devices: Optional[int] = None,
                    batch: Optional[int] = None) -> str:
    """MXNet's checkpoint (`mx.model.save_checkpoint`'s files, keys and format), never half-written and never
    through a planted link: each file is written under a private temporary name and renamed (files.replaced),
    the params file last, so that PREFIX-NNNN.params existing means its symbol (and optimizer states, with
    `states_devices`: single-process training) are in place.
    With `batch`: the checkpoint of epoch `epoch` after `batch` of its batches, PREFIX-EEEE-BBBBBB.params.
    Returns the params file's path."""
    import mxnet as mx  # heavy

    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    symbol_path = f"{prefix}-symbol.json"
    with replaced(symbol_path) as tmp:
        module.symbol.save(tmp)
    if states_devices is not None:
        with replaced(states_path(prefix, epoch, batch)) as tmp:
            save_optimizer_states(tmp, module, states_devices)
    arg_params, aux_params = module.get_params()
    saved = {**{f"arg:{k}": v.as_in_context(mx.cpu()) for k, v in arg_params.items()},
             **{f"aux:{k}": v.as_in_context(mx.cpu()) for k, v in aux_params.items()}}
    params = params_path(prefix, epoch, batch)
    with replaced(params) as tmp:
        mx.nd.save(tmp, saved)
    log.info('Saved checkpoint to "%s"', params)
    return params


UNFINISHED_AGE = 600.0  # seconds: a private folder of a save older than this belongs to a writer that was killed


def sweep_unfinished(prefix: str, now: Optional[float] = None) -> List[str]:
    """Remove the private folders (files.Replacement) that killed writers left beside the checkpoints of
    `prefix`, each holding a partial checkpoint file as large as a whole one: a job restarted many times would
    pile them up. Only this user's, only older than UNFINISHED_AGE (a live save takes seconds). Housekeeping: a
    folder that cannot be removed is left, silently. Returns the removed paths."""
    directory, base = os.path.split(os.path.abspath(prefix))
    pattern = re.compile(r"\." + re.escape(base) + r"-(symbol\.json|\d{4}(-\d{6})?\.(params|states))\.[^./]{8}$")
    now = time.time() if now is None else now
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in filter(pattern.match, names):
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and now - st.st_mtime > UNFINISHED_AGE:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def prune_mid_epoch(prefix: str, epoch: int, batch: int = 0) -> List[str]:
    """Remove the mid-epoch checkpoints (`PREFIX-EEEE-BBBBBB` .params and .states) older than the checkpoint just
    written at (epoch, batch) (batch 0: a whole one): each is as large as a whole checkpoint, and a run
    interrupted many times would pile them up; restarts and --resume always take the newest. A .states left
    without its .params (a writer killed between the two) goes too. Housekeeping only: a file that cannot be
    removed is a warning, never the end of the run. Returns the removed paths."""
    directory, base = os.path.split(os.path.abspath(prefix))
    pattern = re.compile(re.escape(base) + r"-(\d{4})-(\d{6})\.(params|states)$")
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    removed, kept = [], set()
    for name in names:  # sorted: a point's .params comes before its .states
        match = pattern.match(name)
        point = (int(match.group(1)), int(match.group(2))) if match else None
        if point is None or point >= (epoch, batch) or point in kept:
            continue
        path = os.path.join(directory, name)
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        except OSError as exc:  # its .states stays too: never a .params whose states are gone
            log.warning('could not remove the superseded checkpoint file "%s": %s', path, exc.strerror or exc)
            kept.add(point)
            continue
        removed.append(path)
    if removed:
        log.info("Removed %d superseded mid-epoch checkpoint file(s): %s", len(removed), ", ".join(removed))
    return removed


def _param_names(module) -> List[str]:
    """The module's parameters in its own order (MXNet's Module numbers them so)."""
    inputs = set(module.data_names) | set(module.label_names)
    return [name for name in module.symbol.list_arguments() if name not in inputs]


def _states_by_name(states: dict, names: List[str], devices: int) -> dict:
    """MXNet keys optimizer states by parameter name where the kvstore runs the optimizer (several devices)
    and by `index * devices + device` where the module does (one device, or MXNET_UPDATE_ON_KVSTORE=0):
    keyed by name, one file fits any device count."""
    return {(names[key // devices] if isinstance(key, int) else key): state for key, state in states.items()
            if not isinstance(key, int) or key % devices == 0}


def save_optimizer_states(path: str, module, devices: int) -> None:
    """The optimizer's state (momentum ...) keyed by parameter name, so that a resume on another number of
    devices keeps it (MXNet's own files silently start from zero state there)."""
    module.save_optimizer_states(path)
    with open(path, "rb") as stream:
        states = pickle.load(stream)
    with open(path, "wb") as stream:
        pickle.dump(_states_by_name(states, _param_names(module), devices), stream)


def load_optimizer_states(path: str, module, devices: int) -> None:
    """A file of `save_optimizer_states` (or MXNet's own, from one device) into a module on `devices` devices."""
    names = _param_names(module)
    with open(path, "rb") as stream:
        saved = stream.read()
    if module._update_on_kvstore:
        states = _states_by_name(pickle.loads(saved), names, 1)
    else:  # the module's own updater: one state per parameter and device
        position, states = {name: i for i, name in enumerate(names)}, {}
        for device in range(devices):  # each device updates its state in place: unpickle a copy for each
            for name, state in _states_by_name(pickle.loads(saved), names, 1).items():
                states[position[name] * devices + device] = state
    with tempfile.TemporaryDirectory() as tmp:  # MXNet reads states only from a file
        converted = os.path.join(tmp, "converted.states")
        with open(converted, "wb") as stream:
            pickle.dump(states, stream)
        module.load_optimizer_states(converted)


def _last_fully_connected(symbol) -> dict:
    nodes = json.loads(symbol.tojson())["nodes"]
    fcs = [node for node in nodes if node["op"] == "FullyConnected"]
    if not fcs:
        raise DataError("the pretrained model has no FullyConnected classifier to replace")
    fc = fcs[-1]
    fc["input_name"] = nodes[fc["inputs"][0][0]]["name"]
    return fc


def classifier_size(symbol) -> int:
    return int(_last_fully_connected(symbol)["attrs"]["num_hidden"])


def is_fine_tuned(symbol) -> bool:
    return _last_fully_connected(symbol)["name"] == FINETUNE_FC


def _features(model: Model, layer: str, explicit: bool, fc: dict):
    """The output of `layer` (--layer-before-fullc), or, when the default `flatten0` is not in this network, the
    input of its last classifier (MXNet's fine-tune.py failed there)."""
    internals = model.symbol.get_internals()
    if layer + "_output" in internals.list_outputs():
        return internals[layer + "_output"]
    if explicit:
        raise DataError(f"--layer-before-fullc {layer}: the pretrained network has no layer {layer} (its last "
                        f"classifier {fc['name']} reads {fc['input_name']})")
    log.info("fine-tune: the pretrained network has no %s: the new classifier reads %s, as %s did", layer,
             fc["input_name"], fc["name"])
    return internals[fc["input_name"] + "_output"]


def replace_classifier(model: Model, num_classes: int, layer: str = "flatten0", explicit: bool = False,
                       dtype: str = "float32") -> Model:
    """A new `num_classes` classifier on the output of `layer`; what the network computed after it goes."""
    from mxlaunch.trainer.networks.layers import classifier_head  # heavy

    fc = _last_fully_connected(model.symbol)
    features = _features(model, layer, explicit, fc)
    symbol = classifier_head(features, num_classes, FINETUNE_FC, dtype, cast_name=f"{FINETUNE_FC}_float32")
    kept = set(symbol.list_arguments())
    old_head = fc["name"] + "_"  # may share the new head's name when a fine-tuned model is fine-tuned again
    arg_params = {k: v for k, v in model.arg_params.items() if k in kept and not k.startswith(old_head)}
    aux_kept = set(symbol.list_auxiliary_states())
    aux_params = {k: v for k, v in (model.aux_params or {}).items() if k in aux_kept}
    log.info("fine-tune: replaced classifier %s (%s classes) with %s (%d classes)",
             fc["name"], fc["attrs"]["num_hidden"], FINETUNE_FC, num_classes)
    return Model(symbol, arg_params, aux_params, begin_epoch=0)


def for_fine_tuning(model: Model, num_classes: int, layer: str = "flatten0", explicit: bool = False,
                    dtype: str = "float32") -> Model:
    """Fine-tuning a pretrained model swaps its classifier; resuming a fine-tuned one keeps the trained head.

    (MXNet's fine-tune.py swaps it again on every resume, throwing away what the head learned.)
    """
    if is_fine_tuned(model.symbol) and classifier_size(model.symbol) == num_classes:
        log.info("fine-tune: %s is already fine-tuned for %d classes: resuming at epoch %d with its trained "
                 "classifier", FINETUNE_FC, num_classes, model.begin_epoch)
        return model
    return replace_classifier(model, num_classes, layer, explicit, dtype)
