"""Every option of `trainer fit` and `trainer fine-tune`, with each command's default.

The options of MXNet 1.9's example/image-classification scripts keep their names, meaning and defaults:
`fit` is train_cifar10.py and `fine-tune` is fine-tune.py, each over common/fit.py and common/data.py. The
defaults that deliberately differ are in `DIFFERENCES`, with the reason (docs/trainer.md shows the same table);
the trainer's own options are in `EXTENSIONS`. No MXNet here: `--help` and `contract.describe` stay light.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import click

FIT, FINE_TUNE = "fit", "fine-tune"
SAME = object()  # fine-tune's default is fit's

IMAGENET_MEAN, UNIT_STD = "123.68,116.779,103.939", "1,1,1"  # common/data.py: --rgb-mean, --rgb-std
INITIALIZERS = ("default", "xavier", "msra", "orthogonal", "normal", "uniform", "one", "zero")
DTYPES = ("float32", "float16")
GC_TYPES = ("none", "2bit")
WARMUP_STRATEGIES = ("linear", "power2", "sqrt", "lars")  # LBSGD's; another name meant no warm-up in MXNet
LOSSES = {"ce": "ce", "nll": "nll_loss", "nll_loss": "nll_loss"}  # --loss: common/fit.py's names
KV_STORES = ("local", "device", "nccl", "dist_sync", "dist_async", "dist_sync_device", "dist_async_device",
             "dist_device_sync")


@dataclass(frozen=True)
class Option:
    decls: Tuple[str, ...]
    type: Any
    help: str
    fit: Any = None
    fine_tune: Any = SAME
    required: Tuple[str, ...] = ()  # the commands that need it
    commands: Tuple[str, ...] = (FIT, FINE_TUNE)

    @property
    def name(self) -> str:
        return self.decls[0]

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")

    def default(self, command: str):
        return self.fit if command == FIT or self.fine_tune is SAME else self.fine_tune


def _flag(help_text: str) -> dict:
    return {"type": click.IntRange(0, 1), "help": help_text}


NONNEG, POSITIVE = click.IntRange(min=0), click.IntRange(min=1)

# common/fit.py (add_fit_args), in its order; then common/data.py (add_data_args, add_data_aug_args); then
# fine-tune.py's own; then the trainer's extensions
OPTIONS = (
    Option(("--network",), str, "resnet or resnext (fine-tune, and a resume: the checkpoint's network)", "resnet",
           None),
    Option(("--num-layers",), POSITIVE, "depth: see docs/trainer.md for the depths of each image size", 110, None),
    Option(("--gpus",), str, "GPUs to use, e.g. 0 or 0,2,5 (empty: CPU)"),
    Option(("--kv-store",), str, f"{', '.join(KV_STORES)} (default: dist_sync under `launch train`; alone, device "
                                 f"with several --gpus or --cpus, else local)"),
    Option(("--num-epochs", "--num-epoch"), POSITIVE, "epochs to train (the last is --num-epochs - 1)", 300, 30),
    Option(("--lr",), float, "initial learning rate", 0.05, 0.01),
    Option(("--lr-factor",), float, "the factor of each step (below 1; 1 or more: no steps)", 0.1),
    Option(("--lr-step-epochs",), str, "epochs at which lr *= lr-factor, e.g. 30,60 or 25,50,...,300; "
                                       "powN: a polynomial decay of power N to 0 at --num-epochs", "200,250", "20"),
    Option(("--initializer",), str, f"{', '.join(INITIALIZERS)} (default: Xavier, gaussian, 'in', magnitude 2)",
           "default"),
    Option(("--optimizer",), str, "any optimizer MXNet registers: sgd, nag, adam, adadelta, lbsgd, ...", "sgd"),
    Option(("--mom",), float, "momentum (sgd, nag, signum, dcasgd, lbsgd)", 0.9, 0.0),
    Option(("--wd",), float, "weight decay", 0.0001, 0.0),
    Option(("--batch-size",), POSITIVE, "per worker, split over its devices (--gpus or --cpus)", 128),
    Option(("--disp-batches",), NONNEG, "log speed and metrics every this many batches (0: only per epoch)", 20),
    Option(("--model-prefix",), str, "checkpoint prefix: PREFIX-symbol.json, PREFIX-%04d.params"),
    Option(("--save-period",), POSITIVE, "checkpoint every this many epochs (and the last)", 1),
    Option(("--monitor",), NONNEG, "log statistics of every array every this many batches (0: never)", 0),
    Option(("--load-epoch",), NONNEG, "fit: resume from PREFIX-%04d.params of --model-prefix (0: PREFIX-0000); "
                                      "fine-tune: the epoch of the pretrained checkpoint", required=(FINE_TUNE,)),
    Option(("--top-k",), NONNEG, "also report the top-k accuracy (0: no; at least 2)", 0),
    Option(("--loss",), str, "also report losses: ce (cross-entropy), nll (negative log-likelihood), "
                             "comma-separated", ""),
    Option(("--test-io",), click.IntRange(0, 1), "1: read one epoch of training data and report its speed; "
                                                 "no training", 0),
    Option(("--dtype",), str, "float32, or float16 (GPU only: casts in the network, float32 master weights)",
           "float32"),
    Option(("--gc-type",), str, "gradient compression of a dist_* kvstore: none or 2bit", "none"),
    Option(("--gc-threshold",), float, "threshold of 2bit gradient compression", 0.5),
    Option(("--macrobatch-size",), NONNEG, "lbsgd: the effective batch (gradients accumulated up to it)", 0),
    Option(("--warmup-epochs",), NONNEG, "lbsgd: epochs of the learning-rate ramp", 5),
    Option(("--warmup-strategy",), str, f"lbsgd: {', '.join(WARMUP_STRATEGIES)}", "linear"),
    Option(("--profile-worker-suffix",), str, "write each worker's MXNet profile (rankR_SUFFIX with several "
                                              "workers) where metrics.jsonl goes", ""),
    Option(("--profile-server-suffix",), str, "dist_*: each server writes its MXNet profile rankR_SUFFIX into "
                                              "its run directory", ""),
    Option(("--use-imagenet-data-augmentation",), click.IntRange(0, 1), "MXNet 1.9 defines it and never reads "
                                                                        "it: 1 is refused", 0),
    # common/data.py
    Option(("--data-train",), str, "training .rec (required unless --benchmark 1)"),
    Option(("--data-train-idx",), str, "its index (default: the .idx beside it, else one is built)", ""),
    Option(("--data-val",), str, "validation .rec"),
    Option(("--data-val-idx",), str, "its index (default: the .idx beside it)", ""),
    Option(("--rgb-mean",), str, "subtracted from R,G,B", IMAGENET_MEAN),
    Option(("--rgb-std",), str, "then R,G,B divided by these", UNIT_STD),
    Option(("--pad-size",), NONNEG, "pixels of --fill-value around each training image", 4, 0),
    Option(("--fill-value",), click.IntRange(0, 255), "the padding's value", 127),
    Option(("--image-shape",), str, "the network's input: channels,height,width", "3,28,28", "3,224,224"),
    Option(("--num-classes",), POSITIVE, "classes of the data (labels 0..N-1)", 10, None, required=(FINE_TUNE,)),
    Option(("--num-examples",), POSITIVE, "training examples per epoch (default: the record count)"),
    Option(("--data-nthreads",), POSITIVE, "threads decoding and augmenting images, per data iterator (default: "
                                           "the CPU count, at most 4)"),
    Option(("--benchmark",), click.IntRange(0, 1), "1: train on synthetic data (no files): speed without I/O", 0),
    # common/data.py, add_data_aug_args: ImageRecordIter's augmentations
    Option(("--random-crop",), **_flag("crop at a random place (0: the centre)"), fit=0),
    Option(("--random-mirror",), **_flag("flip horizontally at random"), fit=0),
    Option(("--max-random-h",), click.IntRange(0, 180), "max change of hue", 0),
    Option(("--max-random-s",), click.IntRange(0, 255), "max change of saturation", 0),
    Option(("--max-random-l",), click.IntRange(0, 255), "max change of intensity", 0),
    Option(("--min-random-aspect-ratio",), float, "min aspect ratio (default: 1 - max)"),
    Option(("--max-random-aspect-ratio",), float, "max aspect ratio (or change of it, without the min)", 0.0),
    Option(("--max-random-rotate-angle",), click.IntRange(0, 360), "max rotation, degrees", 0),
    Option(("--max-random-shear-ratio",), float, "max shear ratio, 0..1", 0.0),
    Option(("--max-random-scale",), float, "max scale", 1.0),
    Option(("--min-random-scale",), float, "min scale (>= image size / input size, else use --pad-size)", 1.0),
    Option(("--max-random-area",), float, "random resized crop: max area, 0..1", 1.0),
    Option(("--min-random-area",), float, "random resized crop: min area, 0..1", 1.0),
    Option(("--min-crop-size",), int, "crop to a random size from this ...", -1),
    Option(("--max-crop-size",), int, "... to this", -1),
    Option(("--brightness",), float, "brightness jitter, 0..1", 0.0),
    Option(("--contrast",), float, "contrast jitter, 0..1", 0.0),
    Option(("--saturation",), float, "saturation jitter, 0..1", 0.0),
    Option(("--pca-noise",), float, "PCA noise, 0..1", 0.0),
    Option(("--random-resized-crop",), **_flag("random resized crop (--min/max-random-area, aspect ratios)"),
           fit=0),
    # fine-tune.py
    Option(("--pretrained-model",), str, "checkpoint prefix of the model to start from", commands=(FINE_TUNE,),
           required=(FINE_TUNE,)),
    Option(("--layer-before-fullc",), str, "the layer whose output feeds the new classifier", "flatten0",
           commands=(FINE_TUNE,)),
)

# the trainer's own options
EXTENSIONS = (
    Option(("--num-group",), POSITIVE, "ResNeXt cardinality (default 32; 8 for ResNeXt-29)"),
    Option(("--bottleneck-width",), POSITIVE, "ResNeXt-29's channels per group (default 64)"),
    Option(("--cpus",), POSITIVE, "CPU contexts to split each batch over as --gpus does (default 1; not with "
                                  "--gpus)"),
    Option(("--load-batch",), POSITIVE, "with --load-epoch E: resume inside epoch E from PREFIX-EEEE-BBBBBB.params "
                                        "(written on SIGUSR1)", commands=(FIT,)),
    Option(("--seed",), int, "seeds each epoch's data order and augmentation (a function of seed, rank and epoch) "
                             "and MXNet's generator (seed + rank: the initial weights); without it, seed 0's order "
                             "and MXNet's fixed default generator"),
)

# Defaults that are not MXNet's, per command: option -> (MXNet's, the trainer's, why)
DIFFERENCES: Dict[Tuple[str, str], Tuple[str, str, str]] = {
    (FIT, "--kv-store"): ("device", "local alone (device with several --gpus/--cpus), dist_sync under `launch train`",
                          "the same command trains alone or as a worker of a parameter-server job"),
    (FINE_TUNE, "--kv-store"): ("device", "as fit", "as fit"),
    (FIT, "--data-train"): ("data/cifar10_train.rec, downloaded from data.mxnet.io", "none: required",
                            "training never downloads (that site is gone): `trainer data cifar10 --out data` makes it"),
    (FIT, "--data-val"): ("data/cifar10_val.rec, downloaded", "none: no validation",
                          "the training data's own validation set is the user's to name"),
    (FIT, "--num-examples"): ("50000", "the record count of --data-train",
                              "50,000 on another data set would train a wrong epoch length without a word"),
    (FINE_TUNE, "--num-examples"): ("none (fails without it)", "the record count of --data-train", "as fit"),
    (FIT, "--data-nthreads"): ("4", "the CPU count, at most 4",
                               "no more decoding threads than cores; the augmentation is the same for any count"),
    (FINE_TUNE, "--data-nthreads"): ("4", "as fit", "as fit"),
}


def options_for(command: str) -> Tuple[Option, ...]:
    return tuple(o for o in OPTIONS + EXTENSIONS if command in o.commands)


def apply(command: str):
    """The click options of `command`, each with that command's default."""
    def decorate(function):
        for option in reversed(options_for(command)):
            # a required option gets no default at all: click takes an explicit None for a value given
            extra = ({"required": True} if command in option.required else
                     {"default": option.default(command), "show_default": option.default(command) not in (None, "")})
            function = click.option(*option.decls, option.dest, type=option.type, help=option.help,
                                    **extra)(function)
        return function
    return decorate
