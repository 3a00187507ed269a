"""The workload's command line: everything the launcher reads from it or adds to it, with one option rule.

    data_files(cmd)          input files the preflight looks for on worker hosts (values of --data-*)
    script_files(cmd)        the program and a `python script.py`'s script (looked for on every host)
    with_gpus(cmd, n)        a trainer command on a cluster gets --gpus 0,...,n-1 unless it names its own
    model_prefix(cmd)        where --resume looks for checkpoints
    with_load_epoch(cmd, n, b)  the same command resuming from epoch n (after b batches of it: --load-batch)
    load_point(cmd)          the (epoch, batch) of its own --model-prefix the command itself loads, if any
    num_epochs(cmd)          the epochs a trainer command trains (its --num-epochs/--num-epoch, else the default)
    resolve_program(cmd)     `trainer`, `python` ... found beside this launcher's interpreter (--local)

An option's value is the next word (`--opt value`) or what follows '=' (`--opt=value`); when the option is
given more than once the last one counts. This is how click (the trainer) and argparse (MXNet's example
scripts) read an option that takes a value.
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import Iterator, Optional, Sequence, Tuple

Command = Sequence[str]
TRAINER_NUM_EPOCHS = 10  # `trainer fit`'s --num-epochs default (trainer/cli.py; tests/test_workload.py checks)
DATA_OPTION_PREFIX = "--data-"  # option values that name input files (MXNet's --data-train/--data-val)
NOT_DATA_FILES = ("--data-nthreads",)  # a --data-* option whose value is a count, not a file


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


def data_files(command: Command) -> Tuple[str, ...]:
    """Input files named in the command: values of --data-* options (`--data-train X`, `--data-train=X`)."""
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


def is_trainer(command: Command) -> bool:
    """`trainer ...`, `.venv/bin/trainer ...`, `python -m mxlaunch.trainer ...` or `python .../trainer ...`: the
    program itself, never a word it is given (`run.sh trainer` is not the trainer, and would die of a SIGUSR1)."""
    words = [os.path.basename(word) for word in command[:3]]
    if words[:1] == ["trainer"]:
        return True
    return bool(words) and words[0].startswith("python") and (words[1:2] == ["trainer"]
                                                               or words[1:3] == ["-m", "mxlaunch.trainer"])


def gpus_arg(gpus_per_host: int) -> str:
    """`--gpus` for every GPU of a host: 0,1,...,n-1 ('' without GPUs)."""
    return ",".join(str(i) for i in range(gpus_per_host))


def with_gpus(command: Command, gpus_per_host: int) -> Tuple[str, ...]:
    """A trainer command on a GPU cluster gets every GPU of its host unless it names its own devices
    (--gpus, or --cpus: the two exclude each other)."""
    command = tuple(command)
    if gpus_per_host < 1 or not is_trainer(command) or has_option(command, "--gpus") or has_option(command, "--cpus"):
        return command
    return command + ("--gpus", gpus_arg(gpus_per_host))


def model_prefix(command: Command) -> Optional[str]:
    """The checkpoint prefix (MXNet's PREFIX-symbol.json, PREFIX-NNNN.params), or None."""
    return option_value(command, "--model-prefix")


def with_load_epoch(command: Command, epoch: int, batch: int = 0) -> Tuple[str, ...]:
    """The same command, resuming from checkpoint `epoch` of its --model-prefix, or from its mid-epoch
    checkpoint after `batch` (> 0) batches of epoch `epoch` (`--load-batch`: the trainer's PREFIX-EEEE-BBBBBB);
    any --load-epoch/--load-batch it had is replaced. A `trainer fine-tune` resumes as `trainer fit`: its
    --load-epoch names the *pretrained* model's epoch, and `fit --load-epoch` on a fine-tuned checkpoint keeps
    the trained classifier and the schedule."""
    command = tuple(command)
    if is_trainer(command) and "fine-tune" in command[:4]:
        at = command.index("fine-tune")
        command = without_option(command[:at] + ("fit",) + command[at + 1:], "--pretrained-model")
    command = without_option(without_option(command, "--load-epoch"), "--load-batch") + ("--load-epoch", str(epoch))
    return command + (("--load-batch", str(batch)) if batch else ())


def load_point(command: Command) -> Optional[Tuple[int, int]]:
    """(E, B) of `--load-epoch E [--load-batch B]` (B 0 without it): the checkpoint of its own --model-prefix
    the command loads; None when it loads none, or a *pretrained* model's (--pretrained-model: a fine-tune's
    --load-epoch names that model's epoch), or the values are not numbers (the program refuses those)."""
    epoch, batch = option_value(command, "--load-epoch"), option_value(command, "--load-batch") or "0"
    if epoch is None or has_option(command, "--pretrained-model") or not (epoch.isdecimal() and batch.isdecimal()):
        return None
    return int(epoch), int(batch)


def num_epochs(command: Command) -> Optional[int]:
    """The epochs a `trainer` command trains: the last --num-epochs/--num-epoch given (as click reads it), else
    the trainer's default; None for another workload, or a value that is no number."""
    if not is_trainer(command):
        return None
    text = option_value(command, "--num-epochs", "--num-epoch")
    if text is None:
        return TRAINER_NUM_EPOCHS
    try:
        return int(text)
    except ValueError:
        return None


def resolve_program(command: Command) -> Tuple[str, ...]:
    """`trainer`, `python` ... found on PATH, or else beside this launcher's interpreter (an
    un-activated venv), so that `.venv/bin/launch train --local -- trainer fit ...` just works."""
    command = tuple(command)
    if not command or os.sep in command[0] or shutil.which(command[0]):
        return command
    sibling = os.path.join(os.path.dirname(sys.executable), command[0])
    return ((sibling,) + command[1:]) if os.access(sibling, os.X_OK) else command
