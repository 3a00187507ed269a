"""Parsed options -> `FitConfig`, refusing in one line (UsageError, exit 2) what cannot train as asked.

Pure and light (no MXNet, no file access): the trainer runs it before training and `contract.describe` runs it
to read a command line. `environment=False` leaves out what depends on the machine that runs the command (the
job's DMLC_* variables, whether it has GPUs), which a launcher reading the command cannot know.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

from mxlaunch.errors import UsageError
from mxlaunch.trainer import networks
from mxlaunch.trainer import options as opts
from mxlaunch.trainer.config import DIST_ROLE_VAR, FitConfig, finite
from mxlaunch.trainer.profiling import check_suffixes
from mxlaunch.trainer.schedule import parse_step_epochs

BENCHMARK_EXAMPLES = 50000  # train_cifar10.py's --num-examples: `fit --benchmark 1` has no data file to count
FLOATS = ("max_random_aspect_ratio", "max_random_shear_ratio", "max_random_scale", "min_random_scale",
          "max_random_area", "min_random_area", "brightness", "contrast", "saturation", "pca_noise")


def int_tuple(option: str, text: Optional[str], length=None) -> Tuple[int, ...]:
    try:
        values = tuple(int(x) for x in (text or "").split(",") if x.strip() != "")
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected comma-separated integers") from None
    if length is not None and len(values) != length:
        raise UsageError(f"{option} {text!r}: expected {length} comma-separated integers, e.g. 3,28,28")
    return values


def float_triple(option: str, text: str, nonzero: bool = False) -> Tuple[float, float, float]:
    try:
        values = tuple(finite(option, float(x)) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or (nonzero and 0.0 in values):
        what = "3 comma-separated non-zero numbers" if nonzero else "3 comma-separated numbers"
        raise UsageError(f"{option} {text!r}: expected {what} (R,G,B)")
    return values  # type: ignore[return-value]


def _choice(option: str, value: str, choices) -> str:
    if value not in choices:
        raise UsageError(f"unknown {option} {value!r}: choose one of {', '.join(choices)}")
    return value


def _losses(text: str) -> Tuple[str, ...]:
    """common/fit.py's --loss: comma-separated ce, nll (nll_loss); it skipped unknown names with a warning."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in opts.LOSSES:
            raise UsageError(f"--loss {text!r}: {name!r} is not a loss the trainer reports: ce (cross-entropy) or "
                             f"nll (negative log-likelihood)")
    return tuple(dict.fromkeys(opts.LOSSES[name] for name in names))


def _numbers(kw: dict) -> None:
    for name, least in (("lr", 0.0), ("lr_factor", 0.0), ("mom", 0.0), ("wd", 0.0), ("gc_threshold", 0.0)):
        finite("--" + name.replace("_", "-"), kw[name], least)
    for name in FLOATS + ("min_random_aspect_ratio",):
        if kw.get(name) is not None:
            finite("--" + name.replace("_", "-"), kw[name])
    if kw["top_k"] == 1:
        raise UsageError("--top-k 1 is the accuracy, which is always reported: give 0 (no top-k) or 2 or more")
    if kw["use_imagenet_data_augmentation"]:
        raise UsageError("--use-imagenet-data-augmentation 1: MXNet 1.9's scripts define it but never read it (it "
                         "changed nothing there); ask for augmentations by name: --random-resized-crop, --random-crop, "
                         "--random-mirror, --max-random-*, --brightness, ...")


def _schedule(kw: dict) -> None:
    steps, power = parse_step_epochs(kw["lr_step_epochs"])
    if kw["lr_factor"] > 1 and (steps or power is not None):
        raise UsageError(f"--lr-factor {kw['lr_factor']:g} with --lr-step-epochs {kw['lr_step_epochs']}: each step "
                         f"multiplies the learning rate by the factor, so it must be below 1 (1 keeps the rate "
                         f"constant; MXNet's fit.py dropped the schedule without a word)")
    kw["lr_step_epochs"], kw["lr_power"] = steps, power


def _devices(kw: dict) -> None:
    kw["image_shape"] = int_tuple("--image-shape", kw["image_shape"], 3)
    if min(kw["image_shape"]) < 1:
        raise UsageError(f"--image-shape {','.join(map(str, kw['image_shape']))}: channels, height and width "
                         f"must each be at least 1, e.g. 3,28,28")
    kw["gpus"] = int_tuple("--gpus", kw["gpus"])
    if len(set(kw["gpus"])) != len(kw["gpus"]) or any(g < 0 for g in kw["gpus"]):
        raise UsageError(f"--gpus {','.join(map(str, kw['gpus']))}: name each GPU once, numbered from 0 "
                         f"(e.g. 0,1,2,3)")
    if kw["gpus"] and kw["cpus"] is not None:
        raise UsageError("--gpus and --cpus exclude each other: split each batch over GPUs or over CPU contexts")
    kw["cpus"] = kw["cpus"] or 1
    if kw["kv_store"] and kw["kv_store"] not in opts.KV_STORES:
        raise UsageError(f"unknown --kv-store {kw['kv_store']!r}: choose one of {', '.join(opts.KV_STORES)}")


def _data(command: str, kw: dict) -> None:
    kw["rgb_mean"] = float_triple("--rgb-mean", kw["rgb_mean"])
    kw["rgb_std"] = float_triple("--rgb-std", kw["rgb_std"], nonzero=True)
    for name in ("random_crop", "random_mirror", "random_resized_crop", "benchmark", "test_io"):
        kw[name] = bool(kw[name])
    if not kw["data_train"] and not kw["benchmark"]:
        raise UsageError("Missing option '--data-train' (the training .rec; --benchmark 1 trains on synthetic "
                         "data without one)")
    if kw["benchmark"] and not kw["data_train"] and kw["num_examples"] is None:
        if command != opts.FIT:
            raise UsageError("--benchmark 1 without --data-train needs --num-examples (there are no records to count)")
        kw["num_examples"] = BENCHMARK_EXAMPLES


def _optimizer(kw: dict) -> None:
    kw["optimizer"] = kw["optimizer"].lower()
    kw["dtype"] = _choice("--dtype", kw["dtype"], opts.DTYPES)
    kw["gc_type"] = _choice("--gc-type", kw["gc_type"], opts.GC_TYPES)
    kw["initializer"] = _choice("--initializer", kw["initializer"], opts.INITIALIZERS)
    kw["warmup_strategy"] = _choice("--warmup-strategy", kw["warmup_strategy"], opts.WARMUP_STRATEGIES)
    kw["loss"] = _losses(kw["loss"])


def _environment(cfg: FitConfig) -> None:
    """What depends on where the command runs: a dist_* job's variables, GPUs for float16."""
    kv_store = cfg.resolved_kv_store()
    if kv_store.startswith("dist") and not os.environ.get(DIST_ROLE_VAR):
        raise UsageError(f"--kv-store {kv_store} needs a parameter-server job: run this command under "
                         f"`launch train`, e.g. launch train --local -n 2 -- trainer fit ... (which sets "
                         f"{DIST_ROLE_VAR} and the other DMLC_* variables)")
    if cfg.dtype == "float16" and not cfg.gpus:
        raise UsageError("--dtype float16 needs --gpus: MXNet 1.9 has no float16 matrix multiply on the CPU "
                         "(\"FP16 gemm on cpu not implemented\")")
    if cfg.gc_type != "none" and not (kv_store.startswith("dist") or (kv_store == "device" and cfg.num_devices > 1)):
        raise UsageError(f"--gc-type {cfg.gc_type} compresses the gradients a kvstore sends: it needs a dist_* "
                         f"kvstore (under `launch train`) or device with several --gpus/--cpus, not {kv_store}")
    if cfg.profile_server_suffix and not kv_store.startswith("dist"):
        raise UsageError(f"--profile-server-suffix profiles the parameter servers of a dist_* kvstore: this run "
                         f"({kv_store}) has none")


def build(command: str, kw: dict, explicit=frozenset(), environment: bool = True) -> FitConfig:
    """The run's FitConfig from click's values (`kw`: option name -> value, as parsed)."""
    kw = dict(kw)
    _devices(kw)
    _numbers(kw)
    _schedule(kw)
    _data(command, kw)
    _optimizer(kw)
    if kw.get("load_batch") is not None and kw.get("load_epoch") is None:
        raise UsageError(f"--load-batch {kw['load_batch']} needs --load-epoch: the epoch that checkpoint is inside "
                         f"(PREFIX-EEEE-BBBBBB.params is --load-epoch E --load-batch B)")
    kw["network"] = kw["network"].lower() if kw.get("network") else kw.get("network")
    kw.pop("use_imagenet_data_augmentation", None)
    cfg = FitConfig(command=command, explicit=frozenset(explicit), **kw)
    # from a checkpoint, the network is the checkpoint's (MXNet's fine-tune.py took any --network): a line says so
    if not (cfg.pretrained_model or cfg.resumes):
        networks.check_groups(networks.check(cfg.network, cfg.num_layers, cfg.image_shape), cfg.num_group)
    if cfg.top_k > cfg.num_classes:
        raise UsageError(f"--top-k {cfg.top_k} is more than the {cfg.num_classes} classes (--num-classes)")
    check_suffixes(cfg.profile_worker_suffix, cfg.profile_server_suffix)
    if cfg.batch_size < cfg.num_devices:
        raise UsageError(f"--batch-size {cfg.batch_size} cannot be split over {cfg.num_devices} devices "
                         f"(each needs at least one sample)")
    if environment:
        _environment(cfg)
    return cfg
