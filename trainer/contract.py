"""What a `trainer` command line means, for programs that start the trainer (the launcher): read with the
trainer's own click commands and defaults, never trained, and without importing MXNet.

    describe(["fit", "--model-prefix", "ck/m", "--num-epoch", "20"])
        -> TrainerCommand(command="fit", model_prefix="ck/m", num_epochs=20, load_epoch=None, ...)
    describe([...]).resume_args(epoch, batch)
        -> the trainer arguments that continue that run from its checkpoint (epoch, batch) of its own prefix

A command line the trainer would refuse raises mxlaunch.errors.UsageError with the trainer's own message (what
it prints after "trainer: error: "). What depends on the machine that runs it (the job's DMLC_* variables,
GPUs for --dtype float16) is not checked here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Optional, Sequence, Tuple

import click

from mxlaunch.errors import UsageError
from mxlaunch.trainer import configure, metrics_file, options, profiling
from mxlaunch.trainer.cli import _expand, cli, explicit_options, fine_tune_command, fit_command

TRAINING = ("fit", "fine-tune")
_LOAD = ("--load-epoch", "--load-batch")
_FINE_TUNE_ONLY = ("--pretrained-model", "--layer-before-fullc")
_ARCHITECTURE = ("--network", "--num-layers")  # a resumed run trains its checkpoint's network


@dataclass(frozen=True)
class TrainerCommand:
    """A trainer command line, with the trainer's defaults applied. `command` is "fit", "fine-tune", "data"
    (`data cifar10|digits`: `data_set` says which) or "help" (--help, --version: nothing runs)."""

    command: str
    args: Tuple[str, ...]
    model_prefix: Optional[str] = None
    num_epochs: Optional[int] = None
    load_epoch: Optional[int] = None
    load_batch: Optional[int] = None
    pretrained_model: Optional[str] = None
    gpus: Tuple[int, ...] = ()
    cpus: Optional[int] = None
    kv_store: Optional[str] = None
    data_files: Tuple[str, ...] = ()  # the input files it names (--data-train, --data-val and their indexes)
    data_set: Optional[str] = None
    given: FrozenSet[str] = frozenset()  # the options the command line gave (long names), defaults aside
    profile_worker_suffix: str = ""
    profile_server_suffix: str = ""

    @property
    def trains(self) -> bool:
        return self.command in TRAINING

    def run_files(self, num_workers: int, num_servers: int) -> Tuple[str, ...]:
        """The files its roles write into $LAUNCH_RUN_DIR in a job of that size: rank 0's metrics.jsonl and, with
        --profile-*-suffix, each role's profile."""
        if not self.trains:
            return ()
        return (metrics_file.FILE_NAME,) + profiling.file_names(self.profile_worker_suffix, self.profile_server_suffix,
                                                                 num_workers, num_servers)

    def resume_args(self, epoch: int, batch: int = 0) -> Tuple[str, ...]:
        """The arguments that continue this run from PREFIX-EEEE (or, batch > 0, the mid-epoch PREFIX-EEEE-BBBBBB)
        of its own --model-prefix: `fit ... --load-epoch E [--load-batch B]`. A fine-tune resumes as `fit`, which
        keeps the fine-tuned classifier and the schedule; the fine-tune defaults it relied on are written out."""
        if not self.trains:
            raise UsageError(f"`trainer {self.command}` trains nothing: there is no checkpoint to resume from")
        if not self.model_prefix:
            raise UsageError("this trainer command has no --model-prefix: it writes no checkpoints to resume from")
        if epoch < 0 or batch < 0:
            raise UsageError(f"no checkpoint at epoch {epoch}, batch {batch}")
        kept = _without(self.args[1:], _LOAD + (_FINE_TUNE_ONLY if self.command == "fine-tune" else ()))
        if self.command == "fine-tune":
            kept += _fine_tune_defaults(self.args[1:])
        return ("fit",) + kept + ("--load-epoch", str(epoch)) + (("--load-batch", str(batch)) if batch else ())


def _option_names(command: click.Command) -> list:
    return [name for param in command.params for name in getattr(param, "opts", []) if name.startswith("--")]


def _without(words: Sequence[str], dropped: Sequence[str]) -> Tuple[str, ...]:
    """`words` less every option of `dropped` and its value (`--opt value`, `--opt=value`, or a prefix of it)."""
    names = sorted(set(_option_names(fit_command) + _option_names(fine_tune_command)))
    kept, i = [], 0
    while i < len(words):
        word = words[i]
        name = _expand(word, names).partition("=")[0] if word.startswith("--") else None
        width = 1 if name is None or "=" in word else 2
        if name not in dropped:
            kept.extend(words[i:i + width])
        i += width
    return tuple(kept)


def _fine_tune_defaults(words: Sequence[str]) -> Tuple[str, ...]:
    """`--opt value` for each option that `fine-tune` defaults otherwise than `fit` and the command left out."""
    given = set(_parse(options.FINE_TUNE, words).params_given)
    added = []
    for option in options.OPTIONS:
        fit_value, tune_value = option.default(options.FIT), option.default(options.FINE_TUNE)
        if (options.FIT in option.commands and option.name not in _ARCHITECTURE and option.dest not in given
                and tune_value is not None and tune_value != fit_value):
            added += [option.name, str(tune_value)]
    return tuple(added)


@dataclass
class _Parsed:
    params: dict
    params_given: Tuple[str, ...]
    explicit: frozenset


def _parse(name: str, words: Sequence[str]) -> _Parsed:
    command = cli.commands[name]
    try:
        ctx = command.make_context(f"trainer {name}", list(words), resilient_parsing=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        raise UsageError(" ".join(exc.format_message().split()) + hint) from None
    explicit = explicit_options(ctx)
    return _Parsed(dict(ctx.params), tuple(k for k in ctx.params if "--" + k.replace("_", "-") in explicit),
                   explicit)


def fit_config(args: Sequence[str]):
    """The whole configuration (`FitConfig`) a `fit` or `fine-tune` command line trains with, as `describe` reads
    it: what the trainer builds its optimizer, schedule and data iterators from."""
    args = tuple(str(a) for a in args)
    if not args or args[0] not in TRAINING:
        raise UsageError(f"not a training command: {' '.join(args[:1]) or '(none)'} (fit or fine-tune)")
    parsed = _parse(args[0], args[1:])
    return configure.build(args[0], parsed.params, parsed.explicit, environment=False)


def describe(args: Sequence[str]) -> TrainerCommand:
    """What `trainer ARGS...` means (ARGS: the words after the program name)."""
    args = tuple(str(a) for a in args)
    if not args or args[0] in ("--help", "-h", "--version") or "--help" in args or "-h" in args:
        return TrainerCommand("help", args)
    name = args[0]
    if name.startswith("-"):
        raise UsageError(f"No such option: {name} (see 'trainer --help')")
    if name not in cli.commands:
        raise UsageError(f"No such command '{name}'. (see 'trainer --help')")
    if name == "data":
        data_set = args[1] if len(args) > 1 else None
        if data_set not in cli.commands["data"].commands:
            raise UsageError(f"No such command '{data_set}'. (see 'trainer data --help')")
        return TrainerCommand("data", args, data_set=data_set)
    cfg = fit_config(args)
    files = (cfg.data_train, cfg.data_train_idx, cfg.data_val, cfg.data_val_idx)
    return TrainerCommand(name, args, model_prefix=cfg.model_prefix, num_epochs=cfg.num_epochs,
                          load_epoch=cfg.load_epoch, load_batch=cfg.load_batch, pretrained_model=cfg.pretrained_model,
                          gpus=cfg.gpus, cpus=cfg.cpus if "--cpus" in cfg.explicit else None, kv_store=cfg.kv_store,
                          data_files=tuple(f for f in files if f), given=frozenset(cfg.explicit),
                          profile_worker_suffix=cfg.profile_worker_suffix,
                          profile_server_suffix=cfg.profile_server_suffix)
