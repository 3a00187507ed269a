"""The workload's command line: everything the launcher reads from it or adds to it.

When the command is the trainer (`trainer ...`, `python -m mxlaunch.trainer ...`), the trainer says what it
means (mxlaunch.trainer.contract: its own options and defaults, never a copy); any other program (MXNet's
example scripts) is read by the option rule below.

    data_files(cmd)          input files the preflight looks for on worker hosts
    script_files(cmd)        the program and a `python script.py`'s script (looked for on every host)
    gpus(cmd), cpus(cmd)     the devices it names (None: it names none)
    with_gpus(cmd, n)        a trainer command on a cluster gets --gpus 0,...,n-1 unless it names its own
    model_prefix(cmd)        where --resume looks for checkpoints
    resumed(cmd, e, b)       the same run continued from checkpoint epoch e (after b batches of it)
    load_point(cmd)          the (epoch, batch) of its own --model-prefix the command itself loads, if any
    num_epochs(cmd)          the epochs a trainer command trains (None for another program)
    check_kv_store(cmd, n)   a trainer kvstore that cannot serve n workers, refused
    resolve_program(cmd)     `trainer`, `python` ... found beside this launcher's interpreter (--local)

The option rule: an option's value is the next word (`--opt value`) or what follows '=' (`--opt=value`); when
the option is given more than once the last one counts, as argparse (MXNet's scripts) reads it.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
from typing import Iterator, Optional, Sequence, Tuple

from mxlaunch.errors import UsageError
from mxlaunch.trainer.contract import TrainerCommand, describe

Command = Sequence[str]
DATA_OPTION_PREFIX = "--data-"  # option values that name input files (MXNet's --data-train/--data-val)
NOT_DATA_FILES = ("--data-nthreads",)  # a --data-* option whose value is a count, not a file
TRAINER_MODULE = "mxlaunch.trainer"


def _occurrences(command: Command, wanted) -> Iterator[Tuple[int, int, str, Optional[str]]]:
    """(first word, past last word, name, value or None) of every option whose name `wanted` accepts."""
    words = list(command)
    i = 0
    while i < len(words):
        name, eq, value = words[i].partition("=")
        if not (name.startswith("--") and wanted(name)):
            i += 1
        elif eq:
            yield i, i + 1, name, value
            i += 1
        elif i + 1 < len(words):
            yield i, i + 2, name, words[i + 1]
            i += 2
        else:  # the last word, with no value after it
            yield i, i + 1, name, None
            i += 1


def has_option(command: Command, name: str) -> bool:
    return any(_occurrences(command, lambda n: n == name))


def option_value(command: Command, name: str, *aliases: str) -> Optional[str]:
    """The value the program sees for `name` or any of its `aliases` (the last one given), or None."""
    names = (name, *aliases)
    values = [value for _, _, _, value in _occurrences(command, lambda n: n in names)]
    return values[-1] if values else None


def without_option(command: Command, name: str) -> Tuple[str, ...]:
    """The command with every `name` and its value taken out."""
    words, drop = list(command), set()
    for start, end, _, _ in _occurrences(words, lambda n: n == name):
        drop.update(range(start, end))
    return tuple(w for i, w in enumerate(words) if i not in drop)


def trainer_words(command: Command) -> int:
    """How many leading words of `command` start the trainer (`trainer` 1, `python -m mxlaunch.trainer` 3,
    `python .../trainer` 2); 0 when the program is another one. Only the program counts: `run.sh trainer` is
    not the trainer (and would die of the SIGUSR1 that asks the trainer for a checkpoint)."""
    words = [os.path.basename(word) for word in command[:3]]
    if words[:1] == ["trainer"]:
        return 1
    if words and words[0].startswith("python"):
        if words[1:2] == ["trainer"]:
            return 2
        if tuple(command[1:3]) == ("-m", TRAINER_MODULE):
            return 3
    return 0


def is_trainer(command: Command) -> bool:
    return trainer_words(command) > 0


@functools.lru_cache(maxsize=64)
def _described(args: Tuple[str, ...]) -> TrainerCommand:
    return describe(args)


def trainer(command: Command) -> Optional[TrainerCommand]:
    """What the trainer says the command means; None for another program. A command line the trainer would
    refuse is refused here (UsageError, the trainer's own message), before any role starts."""
    words = trainer_words(command)
    if not words:
        return None
    try:
        return _described(tuple(str(w) for w in command[words:]))
    except UsageError as exc:
        raise UsageError(f"the trainer would refuse this command: {exc.format_message()}") from None


def run_files(command: Command, num_workers: int, num_servers: int) -> Tuple[str, ...]:
    """The files the job's roles write into $LAUNCH_RUN_DIR, which SSH mode fetches into the run directory: the
    trainer's metrics.jsonl and profiles (its contract names them); another program's metrics.jsonl."""
    described = trainer(command)
    return described.run_files(num_workers, num_servers) if described else ("metrics.jsonl",)


def data_files(command: Command) -> Tuple[str, ...]:
    """Input files named in the command: the trainer's --data-train/--data-val (and the indexes it names);
    for another program the values of every --data-* option (`--data-train X`, `--data-train=X`)."""
    described = trainer(command)
    if described is not None:
        return described.data_files

    def is_data(name: str) -> bool:
        return name.startswith(DATA_OPTION_PREFIX) and name not in NOT_DATA_FILES

    found = [value for _, _, _, value in _occurrences(command, is_data) if value]
    return tuple(dict.fromkeys(found))


def script_files(command: Command) -> Tuple[str, ...]:
    """The program itself when it is a path (`/x/bin/trainer`) and a `python script.py`'s script."""
    found = []
    if command and os.sep in command[0]:
        found.append(command[0])
    if len(command) > 1 and os.path.basename(command[0]).startswith("python") and command[1].endswith(".py"):
        found.append(command[1])
    return tuple(found)


def gpus(command: Command) -> Optional[Tuple[int, ...]]:
    """The GPUs the command names (its --gpus; `--gpus ''` names none: the CPU), None when it gives no --gpus.
    Another program's --gpus is read as MXNet's scripts read it (comma-separated indices)."""
    described = trainer(command)
    if described is not None:
        return described.gpus if "--gpus" in described.given else None
    if not has_option(command, "--gpus"):
        return None
    return tuple(int(x) for x in (option_value(command, "--gpus") or "").split(",") if x.strip().isdigit())


def cpus(command: Command) -> Optional[int]:
    """The CPU contexts a trainer command drives (`--cpus N`), None when it names none or is another program."""
    described = trainer(command)
    return described.cpus if described is not None else None


def gpus_arg(gpus_per_host: int) -> str:
    """`--gpus` for every GPU of a host: 0,1,...,n-1 ('' without GPUs)."""
    return ",".join(str(i) for i in range(gpus_per_host))


def with_gpus(command: Command, gpus_per_host: int) -> Tuple[str, ...]:
    """A trainer command on a GPU cluster gets every GPU of its host unless it names its own devices
    (--gpus, or --cpus: the two exclude each other)."""
    command = tuple(command)
    described = trainer(command) if gpus_per_host > 0 else None
    if described is None or not described.trains or described.given & {"--gpus", "--cpus"}:
        return command
    return command + ("--gpus", gpus_arg(gpus_per_host))


def model_prefix(command: Command) -> Optional[str]:
    """The checkpoint prefix (MXNet's PREFIX-symbol.json, PREFIX-NNNN.params), or None."""
    described = trainer(command)
    if described is not None:
        return described.model_prefix
    return option_value(command, "--model-prefix")


def resumed(command: Command, epoch: int, batch: int = 0) -> Tuple[str, ...]:
    """The same run, continued from checkpoint `epoch` of its --model-prefix, or from its mid-epoch checkpoint
    after `batch` (> 0) batches of epoch `epoch`. The trainer says how (a fine-tune continues as `fit`, keeping
    its trained classifier and schedule); another program gets `--load-epoch E [--load-batch B]` in place of
    any it had."""
    command = tuple(command)
    described = trainer(command)
    if described is not None:
        return command[:trainer_words(command)] + described.resume_args(epoch, batch)
    command = without_option(without_option(command, "--load-epoch"), "--load-batch") + ("--load-epoch", str(epoch))
    return command + (("--load-batch", str(batch)) if batch else ())


def load_point(command: Command) -> Optional[Tuple[int, int]]:
    """(E, B) of `--load-epoch E [--load-batch B]` (B 0 without it): the checkpoint of its own --model-prefix
    the command loads; None when it loads none, or a *pretrained* model's (a fine-tune's --load-epoch names
    that model's epoch), or another program's values are not numbers."""
    described = trainer(command)
    if described is not None:
        if not described.trains or described.pretrained_model or described.load_epoch is None:
            return None
        return described.load_epoch, described.load_batch or 0
    epoch, batch = option_value(command, "--load-epoch"), option_value(command, "--load-batch") or "0"
    if epoch is None or has_option(command, "--pretrained-model") or not (epoch.isdecimal() and batch.isdecimal()):
        return None
    return int(epoch), int(batch)


def num_epochs(command: Command) -> Optional[int]:
    """The epochs a trainer command trains (its own --num-epochs, else the trainer's default for that command);
    None for another program."""
    described = trainer(command)
    return described.num_epochs if described is not None and described.trains else None


def check_kv_store(command: Command, num_workers: int) -> None:
    """Several workers of a trainer whose --kv-store is not a dist_* one would each train alone and write the
    same checkpoints: refused before any role starts."""
    described = trainer(command)
    store = described.kv_store if described is not None else None
    if num_workers > 1 and store and not store.startswith("dist"):
        raise UsageError(f"--kv-store {store}: {num_workers} workers share their updates only through a "
                         f"distributed kvstore (dist_sync, dist_async, dist_sync_device, dist_async_device, "
                         f"dist_device_sync); drop --kv-store (the launcher's default is dist_sync) or give one")


def resolve_program(command: Command) -> Tuple[str, ...]:
    """`trainer`, `python` ... found on PATH, or else beside this launcher's interpreter (an
    un-activated venv), so that `.venv/bin/launch train --local -- trainer fit ...` just works."""
    command = tuple(command)
    if not command or os.sep in command[0] or shutil.which(command[0]):
        return command
    sibling = os.path.join(os.path.dirname(sys.executable), command[0])
    return ((sibling,) + command[1:]) if os.access(sibling, os.X_OK) else command
