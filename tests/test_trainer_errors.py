"""Bad input: one clear line on stderr, exit status 2, never a traceback, nothing half-written."""
from __future__ import annotations

import os
import shlex
import struct
import sys

import pytest

from conftest import run_trainer, run_trainers, trainer_env
from testkit.jobs import PUSHPULL, read_log, run_launch


def train_args(digits_dir, *extra, train=None):
    return ["fit", "--num-layers", 8, "--num-epochs", 1, "--batch-size", 32,
            "--data-train", train or os.path.join(digits_dir, "digits_train.rec"),
            "--data-val", os.path.join(digits_dir, "digits_val.rec"), *extra]


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("trainer: error: "), errors[0]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


@pytest.fixture
def corrupt_copies(digits_dir, tmp_path):
    """A truncated copy, a copy with a damaged header, and a file that is not RecordIO at all."""
    source = os.path.join(digits_dir, "digits_train.rec")
    data = open(source, "rb").read()
    length = struct.unpack("<I", data[4:8])[0] & ((1 << 29) - 1)
    second = 8 + length + (-length % 4)  # where the second record's header starts
    paths = {}
    for name, content in (("truncated", data[: len(data) // 2 + 3]),
                          ("bad-magic", data[:second] + b"\x00" * 8 + data[second + 8:]),
                          ("not-recordio", b"just some text\n" * 100)):
        paths[name] = str(tmp_path / f"{name}.rec")
        with open(paths[name], "wb") as stream:
            stream.write(content)
    return paths


BAD_OPTIONS = [
    (["--num-layers", "18", "--image-shape", "3,40,40"], ["--image-shape 3,40,40 does not match", "32x32"]),
    (["--image-shape", "3,28"], ["--image-shape", "3 comma-separated integers"]),
    (["--lr-step-epochs", "5,3"], ["strictly increasing"]),
    (["--network", "vgg"], ["unknown --network 'vgg'", "resnet, resnext"]),
    (["--optimizer", "adamw2"], ["unknown --optimizer 'adamw2'", "adadelta", "sgd"]),
    (["--num-classes", "5"], ["--num-classes 5 is too small", "label 9", ">= 10"]),
    (["--num-layers", "9"], ["no 9-layer form at 28 px", "6n+2", "18, 34, 50"]),
    (["--network", "resnext", "--num-layers", "30"], ["no 30-layer form", "9n+2", "50, 101, 152"]),
    (["--kv-store", "dist_nope"], ["unknown --kv-store"]),
    (["--gpus", "0"], ["no GPU support", "mxlaunch[gpu]"]),
    (["--gpus", "0,0"], ["--gpus 0,0", "each GPU once"]),
    (["--load-epoch", "3"], ["--load-epoch needs --model-prefix"]),
    (["--bogus-option", "1"], ["No such option", "--bogus-option"]),
    (["--batch-size", "0"], ["--batch-size"]),
    # counts below 1: MXNet failed inside simple_bind (exit 70), or 0 silently became the default
    (["--network", "resnext", "--num-layers", "11", "--num-group", "-3"], ["--num-group", "-3", "x>=1"]),
    (["--network", "resnext", "--num-layers", "11", "--num-group", "0"], ["--num-group", "0", "x>=1"]),
    (["--network", "resnext", "--num-layers", "11", "--bottleneck-width", "0"], ["--bottleneck-width", "x>=1"]),
    (["--num-layers", "-4"], ["--num-layers", "x>=1"]),
]


@pytest.mark.parametrize("options, fragments", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_option(digits_dir, options, fragments):
    assert_one_line_error(run_trainer(*train_args(digits_dir, *options)), *fragments)


def test_fine_tune_refuses_a_group_count_below_one(digits_dir, tmp_path):
    """Checked before the pretrained model is even looked for (it does not exist here)."""
    result = run_trainer("fine-tune", "--pretrained-model", tmp_path / "none", "--load-epoch", 0,
                         *train_args(digits_dir)[1:], "--num-group", -3)
    assert_one_line_error(result, "--num-group", "x>=1")


def option_help(command: str, option: str) -> str:
    from mxlaunch.trainer.cli import cli

    return next(p.help or "" for p in cli.commands[command].params if option in p.opts)


@pytest.mark.parametrize("command", ["fit", "fine-tune"])
def test_help_names_every_kv_store_and_what_seed_and_threads_do(command):
    from mxlaunch.trainer.options import KV_STORES

    kv_help = option_help(command, "--kv-store")
    assert all(kv in kv_help for kv in KV_STORES), kv_help
    assert "device with several --gpus or --cpus" in kv_help  # the default alone on several devices
    seed_help = option_help(command, "--seed")
    assert all(word in seed_help for word in ("data order", "rank", "epoch", "weights", "without it")), seed_help
    assert "threads" in option_help(command, "--data-nthreads")


def test_fine_tune_help_says_the_network_is_the_pretrained_models():
    from mxlaunch.trainer.cli import cli

    assert "The network is the pretrained model's" in cli.commands["fine-tune"].help


def test_missing_rec(digits_dir, tmp_path):
    result = run_trainer(*train_args(digits_dir, train=str(tmp_path / "nope.rec")))
    assert_one_line_error(result, "--data-train file not found", "nope.rec")


@pytest.mark.parametrize("kind", ["truncated", "bad-magic", "not-recordio"])
def test_corrupt_rec(digits_dir, corrupt_copies, kind):
    result = run_trainer(*train_args(digits_dir, train=corrupt_copies[kind]))
    assert_one_line_error(result, corrupt_copies[kind])


def test_missing_checkpoint_for_fine_tune(digits_dir, tmp_path):
    result = run_trainer("fine-tune", "--pretrained-model", tmp_path / "none", "--load-epoch", 3, "--num-classes", 10,
                         "--image-shape", "3,28,28", *train_args(digits_dir)[1:])
    assert_one_line_error(result, "--pretrained-model: no checkpoint file", "none-symbol.json")


def test_cifar10_bad_tarball(tmp_path):
    (tmp_path / "fake.tar.gz").write_bytes(b"not a tarball")
    result = run_trainer("data", "cifar10", "--from", tmp_path / "fake.tar.gz", "--out", tmp_path / "out")
    assert_one_line_error(result, "fake.tar.gz")


@pytest.mark.timeout(120)
def test_adadelta_says_once_that_it_has_no_learning_rate(digits_dir, tmp_path):
    result = run_trainer(*train_args(digits_dir, "--optimizer", "adadelta", "--lr", 0.5, "--lr-factor", 0.5,
                                     "--lr-step-epochs", "1", "--num-examples", 64, "--model-prefix", tmp_path / "m"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("adadelta has no learning rate") == 1
    assert "--lr, --lr-factor, --lr-step-epochs ignored" in result.stderr
    assert '"lr": null' in (tmp_path / "metrics.jsonl").read_text()


@pytest.mark.timeout(120)
def test_momentum_goes_only_to_optimizers_that_take_it(digits_dir, tmp_path):
    adam = ["--optimizer", "adam", "--lr", 0.001, "--num-examples", 64]
    given, default = run_trainers(train_args(digits_dir, *adam, "--mom", 0.8), train_args(digits_dir, *adam))
    # Adam rejects a momentum argument; with --mom given the trainer says it ignores it and trains
    assert given.returncode == 0, given.stderr[-2000:]
    assert given.stderr.count("adam is not given --mom (common/fit.py gives it to dcasgd, lbsgd, nag, sgd, signum "
                              "only): --mom ignored") == 1
    # default --mom with Adam: nothing to say
    assert default.returncode == 0 and "momentum" not in default.stderr, default.stderr[-2000:]


def test_the_scheduler_role_runs_on_mxnets_library_alone_and_says_in_one_line_when_it_is_missing(tmp_path):
    """The trainer's scheduler finds libmxnet.so as `import mxnet` does (mxnet/libinfo.py) but never runs MXNet's
    Python package: here an mxnet whose __init__ would leave a file, and whose library cannot be found."""
    fake = tmp_path / "site" / "mxnet"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    (fake / "libinfo.py").write_text("def find_lib_path():\n"
                                     "    raise RuntimeError('Cannot find the MXNet library.\\n"
                                     "List of candidates:\\n/x/libmxnet.so')\n")
    env = trainer_env(DMLC_ROLE="scheduler", PYTHONPATH=str(tmp_path / "site"))
    result = run_trainer("fit", "--num-layers", 8, env=env, timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "trainer: error: the scheduler could not run: Cannot find the MXNet library."
    assert not (tmp_path / "imported").exists()  # MXNet's Python package was never imported


@pytest.mark.timeout(120)
def test_a_server_on_mxnets_library_alone_that_is_sent_an_optimizer_ends_the_job_saying_so(tmp_path):
    """pushpull's servers run as the trainer's scheduler does (trainer/ps_scheduler.py), which cannot run an
    optimizer: under trainer workers, which send theirs, the server must end the job in one line, not keep the
    pushed gradients as weights."""
    roles = tmp_path / "roles.sh"
    python = shlex.quote(sys.executable)
    roles.write_text(f'#!/bin/sh\nif [ "$DMLC_ROLE" = worker ]; then exec {python} -m mxlaunch.trainer "$@"; fi\n'
                     f'exec {python} {shlex.quote(PUSHPULL)}\n')
    roles.chmod(0o755)
    run_dir = tmp_path / "run"
    job = ["fit", "--benchmark", "1", "--num-layers", "8", "--num-examples", "32", "--batch-size", "16"]
    rc, out, err = run_launch("train", "--local", "-n", "1", "-s", "1", "--run-dir", str(run_dir), "--env",
                              "OMP_NUM_THREADS=1", "--", str(roles), *job, timeout=100)
    assert rc == 1, err[-2000:]
    line = "trainer: error: a server command (0) reached a role without MXNet's Python package"
    assert line in read_log(str(run_dir), "server-0")
    assert "server 0" in err and "exit code 70" in err, err[-2000:]
