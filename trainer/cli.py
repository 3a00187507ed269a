"""`trainer`: fit, fine-tune and data commands, with the option names of MXNet's image-classification scripts."""
from __future__ import annotations

import logging
import math
import os
import sys

import click

from mxlaunch.errors import UsageError, run_cli
from mxlaunch.exits import Exit
from mxlaunch.trainer.config import DIST_ROLE_VAR, FitConfig
from mxlaunch.trainer.stop import STOPPED_FOR_CHECKPOINT, StoppedForCheckpoint, StopRequest

KV_STORES = ("local", "device", "nccl", "dist_sync", "dist_async", "dist_sync_device", "dist_async_device",
             "dist_device_sync")


class _RankFilter(logging.Filter):
    """Puts `Node[rank]` in every line, as MXNet's fit.py does; the rank is known once the kvstore connects."""

    rank = 0

    def filter(self, record):
        record.rank = self.rank
        return True


def setup_logging() -> _RankFilter:
    rank_filter = _RankFilter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)-15s Node[%(rank)s] %(message)s"))
    handler.addFilter(rank_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return rank_filter


def _int_tuple(option: str, text: str, length=None):
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip() != "")
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected comma-separated integers") from None
    if length is not None and len(values) != length:
        raise UsageError(f"{option} {text!r}: expected {length} comma-separated integers, e.g. 3,28,28")
    return values


def _shared_options(command):
    """The options of MXNet's common/fit.py and common/data.py, under the same names."""
    options = [
        click.option("--network", default="resnet", show_default=True,
                     help="resnet or resnext (a run from a checkpoint trains the checkpoint's network)"),
        click.option("--num-layers", type=click.IntRange(min=1), default=20, show_default=True,
                     help="depth: resnet 6n+2 (CIFAR form) or 18/34/50/101/152/200; resnext 9n+2 or 50/101/152"),
        click.option("--num-group", type=click.IntRange(min=1), default=None,
                     help="ResNeXt cardinality (groups; default 8 in the CIFAR form, 32 in the ImageNet form)"),
        click.option("--bottleneck-width", type=click.IntRange(min=1), default=None,
                     help="ResNeXt channels per group (default 64 in the CIFAR form, 4 in the ImageNet form)"),
        click.option("--gpus", default="", help="GPUs to use, e.g. 0,1,2,3 (empty: CPU)"),
        click.option("--cpus", type=click.IntRange(min=1), default=None,
                     help="CPU contexts to split each batch over as --gpus does (default 1; not with --gpus)"),
        click.option("--kv-store", default=None,
                     help=f"{', '.join(KV_STORES)} (default: dist_sync under `launch train`; alone, device "
                          f"with several --gpus or --cpus, else local)"),
        click.option("--num-epochs", "--num-epoch", "num_epochs", type=click.IntRange(min=1), default=10,
                     show_default=True),
        click.option("--lr", type=float, default=0.1, show_default=True),
        click.option("--lr-factor", type=float, default=0.1, show_default=True),
        click.option("--lr-step-epochs", default="", help="epochs at which lr *= lr-factor, e.g. 25,50,...,300"),
        click.option("--optimizer", default="sgd", show_default=True),
        click.option("--mom", type=float, default=0.9, show_default=True),
        click.option("--wd", type=float, default=0.0001, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
                     help="per worker, split over its devices (--gpus or --cpus)"),
        click.option("--disp-batches", type=click.IntRange(min=0), default=20, show_default=True,
                     help="log speed and accuracy every this many batches (0: only per epoch)"),
        click.option("--model-prefix", default=None, help="checkpoint prefix: PREFIX-symbol.json, PREFIX-%04d.params"),
        click.option("--save-period", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--data-train", required=True, help="training .rec"),
        click.option("--data-val", default=None, help="validation .rec"),
        click.option("--num-examples", type=click.IntRange(min=1), default=None,
                     help="training examples per epoch (default: the record count)"),
        click.option("--num-classes", type=click.IntRange(min=1), default=10, show_default=True),
        click.option("--image-shape", default="3,28,28", show_default=True),
        click.option("--pad-size", type=click.IntRange(min=0), default=4, show_default=True),
        click.option("--random-crop", type=click.IntRange(0, 1), default=1, show_default=True),
        click.option("--random-mirror", type=click.IntRange(0, 1), default=1, show_default=True),
        click.option("--data-nthreads", type=click.IntRange(min=1), default=None,
                     help="threads decoding and augmenting images, per data iterator (default: the CPU count, "
                          "at most 4)"),
        click.option("--seed", type=int, default=None,
                     help="seeds each epoch's data order and augmentation (a function of seed, rank and epoch) "
                          "and MXNet's random generator (seed + rank: the initial weights); without it the data "
                          "order is seed 0's and the generator keeps MXNet's fixed default, so every run starts "
                          "from the same weights and data order"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


# Real-valued options: NaN or infinity would train to NaN weights (or divide by zero) without a word.
FINITE = {"lr": ("--lr", 0.0), "lr_factor": ("--lr-factor", 0.0), "mom": ("--mom", 0.0), "wd": ("--wd", 0.0)}


def _check_numbers(kw) -> None:
    for name, (option, least) in FINITE.items():
        value = kw[name]
        if not math.isfinite(value) or value < least:
            raise UsageError(f"{option} {value!r}: expected a finite number >= {least:g}")


def _check_dist_kv_store(kv_store) -> None:
    """A dist_* kvstore needs the roles and DMLC_* variables of a parameter-server job: MXNet alone would
    stop with a bare MXNetError (or wait for a scheduler that never comes)."""
    if kv_store and kv_store.startswith("dist") and not os.environ.get(DIST_ROLE_VAR):
        raise UsageError(f"--kv-store {kv_store} needs a parameter-server job: run this command under "
                         f"`launch train`, e.g. launch train --local -n 2 -- trainer fit ... (which sets "
                         f"{DIST_ROLE_VAR} and the other DMLC_* variables)")


def _config(ctx: click.Context, **kw) -> FitConfig:
    from mxlaunch.trainer.schedule import parse_step_epochs

    explicit = frozenset("--" + name.replace("_", "-") for name in kw
                         if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE)
    if kw["kv_store"] and kw["kv_store"] not in KV_STORES:
        raise UsageError(f"unknown --kv-store {kw['kv_store']!r}: choose one of {', '.join(KV_STORES)}")
    _check_dist_kv_store(kw["kv_store"])
    _check_numbers(kw)
    kw["image_shape"] = _int_tuple("--image-shape", kw["image_shape"], 3)
    if min(kw["image_shape"]) < 1:
        raise UsageError(f"--image-shape {','.join(map(str, kw['image_shape']))}: channels, height and width "
                         f"must each be at least 1, e.g. 3,28,28")
    kw["gpus"] = _int_tuple("--gpus", kw["gpus"])
    if len(set(kw["gpus"])) != len(kw["gpus"]) or any(g < 0 for g in kw["gpus"]):
        raise UsageError(f"--gpus {','.join(map(str, kw['gpus']))}: name each GPU once, numbered from 0 "
                         f"(e.g. 0,1,2,3)")
    if kw["gpus"] and kw["cpus"] is not None:
        raise UsageError("--gpus and --cpus exclude each other: split each batch over GPUs or over CPU contexts")
    kw["cpus"] = kw["cpus"] or 1
    if kw.get("load_batch") is not None and kw.get("load_epoch") is None:
        raise UsageError(f"--load-batch {kw['load_batch']} needs --load-epoch: the epoch that checkpoint is inside "
                         f"(PREFIX-EEEE-BBBBBB.params is --load-epoch E --load-batch B)")
    kw["lr_step_epochs"] = parse_step_epochs(kw["lr_step_epochs"])
    kw["random_crop"], kw["random_mirror"] = bool(kw["random_crop"]), bool(kw["random_mirror"])
    kw["network"] = kw["network"].lower()
    from mxlaunch.trainer import networks

    cfg = FitConfig(explicit=explicit, **kw)
    # from a checkpoint, the network is the checkpoint's (MXNet's fine-tune.py took any --network): a line says so
    if cfg.network not in networks.NETWORKS and not (cfg.pretrained_model or cfg.resumes):
        raise UsageError(f"unknown --network {cfg.network!r}: choose one of {', '.join(networks.NETWORKS)}")
    if cfg.batch_size < cfg.num_devices:
        raise UsageError(f"--batch-size {cfg.batch_size} cannot be split over {cfg.num_devices} devices "
                         f"(each needs at least one sample)")
    return cfg


# SIGUSR1 = "checkpoint now and stop" (trainer/stop.py); installed first thing in main(), before importing mxnet
STOP_REQUEST = StopRequest()


def _train(cfg: FitConfig) -> None:
    """Run training; under dist_* a failure exits at once (MXNet's finalize barrier would block a clean exit)."""
    rank_filter = setup_logging()
    distributed = cfg.resolved_kv_store().startswith("dist")

    def set_rank(rank):
        rank_filter.rank = rank

    from mxlaunch.trainer import fit

    try:
        fit.run(cfg, on_rank=set_rank, stop=STOP_REQUEST)
    except StoppedForCheckpoint:  # rank 0 stopped on request (its line is logged): not a failure
        sys.stderr.flush()
        if distributed:  # the other workers are still in the job: the finalize barrier would never return
            os._exit(STOPPED_FOR_CHECKPOINT)
        sys.exit(STOPPED_FOR_CHECKPOINT)
    except BaseException as exc:
        if not distributed:
            raise
        code, message = _failure(exc)
        sys.stderr.write(f"trainer: error: {message}\n")
        sys.stderr.flush()
        os._exit(code)


def _failure(exc: BaseException):
    if isinstance(exc, click.ClickException):
        return exc.exit_code, " ".join(exc.format_message().split())
    if isinstance(exc, KeyboardInterrupt):
        return Exit.INTERRUPTED, "interrupted"
    if isinstance(exc, SystemExit):
        return (exc.code if isinstance(exc.code, int) else 1), f"exit {exc.code}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return 1, f"{type(exc).__name__}: {first}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxlaunch", prog_name="trainer", message="%(prog)s (mxlaunch) %(version)s")
def cli() -> None:
    """Train ResNet/ResNeXt image classifiers on RecordIO data, alone or as a worker of `launch train`."""


@cli.command("fit")
@_shared_options
@click.option("--load-epoch", type=click.IntRange(min=0), default=None,
              help="resume from PREFIX-%04d.params of --model-prefix (with the checkpoint's network)")
@click.option("--load-batch", type=click.IntRange(min=1), default=None,
              help="with --load-epoch E: resume inside epoch E from PREFIX-EEEE-BBBBBB.params (written on SIGUSR1)")
@click.pass_context
def fit_command(ctx, **kw) -> None:
    """Train from scratch, or resume with --load-epoch (and --load-batch).

    SIGUSR1 asks rank 0 to checkpoint after the batch in flight and exit 75 (see --load-batch)."""
    _train(_config(ctx, **kw))


@cli.command("fine-tune")
@click.option("--pretrained-model", required=True, help="checkpoint prefix of the model to start from")
@click.option("--load-epoch", type=click.IntRange(min=0), required=True, help="epoch of the pretrained checkpoint")
@_shared_options
@click.pass_context
def fine_tune_command(ctx, **kw) -> None:
    """Replace the classifier of a pretrained model with one of --num-classes and train.

    The network is the pretrained model's: --network, --num-layers, --num-group and --bottleneck-width are not
    used (a line says so when they describe another network).

    Fine-tuning a model that this command already fine-tuned for the same --num-classes resumes it,
    keeping its trained classifier.
    """
    _train(_config(ctx, **kw))


@cli.group("data")
def data_group() -> None:
    """Make RecordIO data sets."""


@data_group.command("cifar10")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory")
@click.option("--from", "tarball", default=None, type=click.Path(dir_okay=False),
              help="a local cifar-10-python.tar.gz instead of downloading it")
@click.option("--url", default=None, help="where to download from (default: the official address)")
@click.option("--md5", default=None, help="expected checksum of the tarball (default: the official one)")
@click.option("--unverified", is_flag=True,
              help="convert a --from tarball whose checksum is not the expected one (read as data only, "
                   "never as code)")
def cifar10_command(out, tarball, url, md5, unverified) -> None:
    """CIFAR-10 (python version) -> cifar10_train.rec/.idx (50,000) and cifar10_val.rec/.idx (10,000)."""
    setup_logging()
    from mxlaunch.trainer import datasets

    datasets.convert_cifar10(out, tarball, url or datasets.CIFAR10_URL, md5 or datasets.CIFAR10_MD5,
                             unverified=unverified)


@data_group.command("digits")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory")
def digits_command(out) -> None:
    """1,797 real handwritten digits (UCI, as in scikit-learn; shipped with the trainer) ->
    digits_train.rec/.idx and digits_val.rec/.idx (3x32x32)."""
    setup_logging()
    from mxlaunch.trainer import datasets

    datasets.convert_digits(out)


def main(args=None) -> None:
    STOP_REQUEST.install()  # every role: SIGUSR1's default action would kill a process that is not rank 0
    if os.environ.get(DIST_ROLE_VAR) in ("server", "scheduler"):
        # The same command serves every role of a job: importing mxnet runs a server or scheduler and
        # exits. Logging first, so that a server reports the learning-rate changes it makes.
        setup_logging()
        import mxnet  # noqa: F401  (does not return for these roles)
    run_cli(cli, "trainer", args)
