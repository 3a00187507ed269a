"""`trainer`: fit, fine-tune and data commands, with the option names of MXNet's image-classification scripts."""
from __future__ import annotations

import logging
import os
import sys
import tempfile

import click

from mxlaunch.errors import UsageError, run_cli
from mxlaunch.files import OwnDirectory
from mxlaunch.exits import Exit
from mxlaunch.trainer import configure, options, ps_scheduler
from mxlaunch.trainer.config import DIST_ROLE_VAR, FitConfig
from mxlaunch.trainer.stop import STOPPED_FOR_CHECKPOINT, StoppedForCheckpoint, StopRequest

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


class MXNetOptionsCommand(click.Command):
    """Takes an option by any unambiguous prefix of its name, as argparse (MXNet's scripts) does:
    `--num-epoch 300`, `--lr-step 30,60`."""

    def parse_args(self, ctx, args):
        names = [name for param in self.get_params(ctx) for name in getattr(param, "opts", [])
                 if name.startswith("--")]
        end = args.index("--") if "--" in args else len(args)
        return super().parse_args(ctx, [_expand(word, names) for word in args[:end]] + list(args[end:]))


def _expand(word: str, names) -> str:
    name, eq, value = word.partition("=")
    if not name.startswith("--") or name in names:
        return word
    matches = sorted(n for n in names if n.startswith(name))
    if len(matches) > 1:
        raise click.UsageError(f"ambiguous option {name}: it could be {', '.join(matches)}")
    return matches[0] + eq + value if matches else word


def explicit_options(ctx: click.Context) -> frozenset:
    """The options typed on the command line (not defaults), as `--name`."""
    return frozenset("--" + name.replace("_", "-") for name in ctx.params
                     if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE)


def _config(ctx: click.Context, command: str, kw: dict) -> FitConfig:
    return configure.build(command, kw, explicit_options(ctx))


# SIGUSR1 = "checkpoint now and stop" (trainer/stop.py); installed first thing in main(), before importing mxnet
STOP_REQUEST = StopRequest()


def _train(cfg: FitConfig) -> None:
    """Run training; under dist_* a failure exits at once (MXNet's finalize barrier would block a clean exit)."""
    rank_filter = setup_logging()
    distributed = cfg.resolved_kv_store().startswith("dist")

    def set_rank(rank):
        rank_filter.rank = rank

    from mxlaunch.trainer import fit  # heavy

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
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    # MXNet's errors carry a C++ stack first and the reason last
    reason = lines[-1] if lines and lines[0].startswith("Traceback") else (lines or [""])[0]
    return 1, f"{type(exc).__name__}: {reason}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxlaunch", prog_name="trainer", message="%(prog)s (mxlaunch) %(version)s")
def cli() -> None:
    """Train ResNet/ResNeXt image classifiers on RecordIO data, alone or as a worker of `launch train`."""


@cli.command("fit", cls=MXNetOptionsCommand)
@options.apply(options.FIT)
@click.pass_context
def fit_command(ctx, **kw) -> None:
    """Train from scratch (MXNet's train_cifar10.py), or resume with --load-epoch (and --load-batch).

    SIGUSR1 asks rank 0 to checkpoint after the batch in flight and exit 75 (see --load-batch)."""
    _train(_config(ctx, options.FIT, kw))


@cli.command("fine-tune", cls=MXNetOptionsCommand)
@options.apply(options.FINE_TUNE)
@click.pass_context
def fine_tune_command(ctx, **kw) -> None:
    """Replace the classifier of a pretrained model with one of --num-classes and train (MXNet's fine-tune.py).

    The network is the pretrained model's: --network, --num-layers, --num-group and --bottleneck-width are not
    used (a line says so when they describe another network).

    Fine-tuning a model that this command already fine-tuned for the same --num-classes resumes it,
    keeping its trained classifier.
    """
    _train(_config(ctx, options.FINE_TUNE, kw))


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
    from mxlaunch.trainer import datasets  # heavy

    datasets.convert_cifar10(out, tarball, url or datasets.CIFAR10_URL, md5 or datasets.CIFAR10_MD5,
                             unverified=unverified)


@data_group.command("digits")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory")
def digits_command(out) -> None:
    """1,797 real handwritten digits (UCI, as in scikit-learn; shipped with the trainer) ->
    digits_train.rec/.idx and digits_val.rec/.idx (3x32x32)."""
    setup_logging()
    from mxlaunch.trainer import datasets  # heavy

    datasets.convert_digits(out)


def _into_run_dir() -> None:
    """A server writes its profile (--profile-server-suffix) into its working directory: make that the run
    directory the launcher gives it ($LAUNCH_RUN_DIR), where the run's other files go, once it is checked to be
    a directory no other user can plant a link in (MXNet opens the profile by name); else a private one."""
    run_dir = os.environ.get("LAUNCH_RUN_DIR")
    if not run_dir:
        return
    try:
        os.makedirs(run_dir, exist_ok=True)
        directory = OwnDirectory(run_dir)
        try:
            os.fchdir(directory.fd)  # the directory checked, not whatever the path names a moment later
        finally:
            directory.close()
    except (OSError, UsageError) as exc:
        private = tempfile.mkdtemp(prefix="trainer-server-")
        os.chdir(private)
        why = exc.format_message() if isinstance(exc, UsageError) else exc.strerror or exc
        logging.getLogger("trainer").warning("cannot work in %s (%s): a server profile goes to %s", run_dir, why,
                                             private)


def main(args=None) -> None:
    STOP_REQUEST.install()  # every role: SIGUSR1's default action would kill a process that is not rank 0
    role = os.environ.get(DIST_ROLE_VAR)
    if role == "scheduler":  # the same command serves every role of a job
        _run_scheduler()
    if role == "server":
        # importing mxnet runs a server and exits. Logging first, so that it reports the learning-rate
        # changes it makes.
        setup_logging()
        _into_run_dir()
        import mxnet  # noqa: F401  # heavy
    run_cli(cli, "trainer", args)


def _run_scheduler() -> None:
    try:
        ps_scheduler.run()
    except ps_scheduler.LibraryError as exc:
        sys.stderr.write(f"trainer: error: the scheduler could not run: {exc}\n")
        raise SystemExit(int(Exit.FAILED)) from None
