"""The workload's command line (launcher/jobs/workload.py): what the preflight, --cluster and --resume read from
it or add to it, all with one option rule (`--opt value` or `--opt=value`, the last one counts)."""
import os
import sys

import pytest

from mxlaunch.launcher.jobs import workload
pytestmark = pytest.mark.timeout(30)


def test_files_named_in_the_command():
    cmd = ["/v/bin/python", "train.py", "--data-train", "d/t.rec", "--data-val=d/v.rec", "--lr", "0.1",
           "--data-nthreads", "-1", "--data-train", "d/t.rec"]
    assert workload.data_files(cmd) == ("d/t.rec", "d/v.rec")
    assert workload.script_files(cmd) == ("/v/bin/python", "train.py")
    assert workload.script_files(["trainer", "fit"]) == ()
    assert workload.script_files(["python3", "-m", "mxlaunch.trainer"]) == ()


def test_a_thread_count_is_not_a_data_file():
    cmd = ["trainer", "fit", "--data-nthreads", "4", "--data-train", "t.rec", "--data-nthreads=2"]
    assert workload.data_files(cmd) == ("t.rec",)


def test_an_options_value_is_the_next_word_or_after_the_equals_sign_and_the_last_one_counts():
    cmd = ("prog", "--model-prefix", "a/m", "--lr=0.1", "--model-prefix=b/m", "--flag")
    assert workload.option_value(cmd, "--lr") == "0.1"
    assert workload.option_value(cmd, "--model-prefix") == "b/m"
    assert workload.option_value(cmd, "--flag") is None and workload.has_option(cmd, "--flag")
    assert workload.option_value(cmd, "--model") is None and not workload.has_option(cmd, "--model")
    # a value is a value even when it looks like an option (as click and argparse read it)
    assert workload.option_value(("p", "--model-prefix", "--lr"), "--model-prefix") == "--lr"
    assert workload.without_option(cmd, "--model-prefix") == ("prog", "--lr=0.1", "--flag")
    assert workload.without_option(("p", "--model-prefix"), "--model-prefix") == ("p",)


@pytest.mark.parametrize("command", [("trainer", "fit"), ("/x/.venv/bin/trainer", "fit"),
                                     ("python", "-m", "mxlaunch.trainer", "fit"),
                                     ("/v/bin/python3", "-m", "mxlaunch.trainer", "fit")])
def test_the_trainer_is_recognised_however_it_is_invoked(command):
    assert workload.is_trainer(command)
    assert workload.with_gpus(command, 4) == command + ("--gpus", "0,1,2,3")


def test_gpus_are_added_only_to_a_trainer_that_names_none_on_a_host_with_gpus():
    assert not workload.is_trainer(("python", "train.py"))
    assert workload.with_gpus(["python", "train.py"], 4) == ("python", "train.py")
    assert workload.with_gpus(["trainer", "fit"], 0) == ("trainer", "fit")
    assert workload.with_gpus(["trainer", "fit", "--gpus", "0"], 4) == ("trainer", "fit", "--gpus", "0")
    assert workload.with_gpus(["trainer", "fit", "--gpus=1"], 4) == ("trainer", "fit", "--gpus=1")
    assert workload.with_gpus(["trainer", "fit", "--cpus", "2"], 4) == ("trainer", "fit", "--cpus", "2")
    assert workload.gpus_arg(1) == "0" and workload.gpus_arg(0) == ""


def test_resume_reads_the_model_prefix_and_replaces_the_load_epoch():
    cmd = ["trainer", "fit", "--model-prefix=ck/m", "--load-epoch", "1", "--lr", "0.1", "--load-epoch=3"]
    assert workload.model_prefix(cmd) == "ck/m"
    assert workload.with_load_epoch(cmd, 10) == ("trainer", "fit", "--model-prefix=ck/m", "--lr", "0.1",
                                                 "--load-epoch", "10")
    assert workload.model_prefix(["trainer", "fit"]) is None
    assert workload.with_load_epoch(["trainer", "fit"], 0) == ("trainer", "fit", "--load-epoch", "0")


def test_a_fine_tune_resumes_as_fit_from_its_own_checkpoint():
    """fine-tune's --load-epoch is the pretrained model's epoch: resuming must not load PRETRAINED-<epoch>."""
    cmd = [sys.executable, "-m", "mxlaunch.trainer", "fine-tune", "--pretrained-model", "/efs/r101", "--load-epoch",
           "0", "--num-classes", "10", "--model-prefix", "/efs/ckpt/c"]
    assert workload.with_load_epoch(cmd, 25) == (sys.executable, "-m", "mxlaunch.trainer", "fit", "--num-classes",
                                                 "10", "--model-prefix", "/efs/ckpt/c", "--load-epoch", "25")
    plain = ["python", "tune.py", "fine-tune", "--load-epoch", "3"]  # not the trainer: only --load-epoch changes
    assert workload.with_load_epoch(plain, 4) == ("python", "tune.py", "fine-tune", "--load-epoch", "4")


def test_a_local_program_is_found_beside_this_interpreter_when_not_on_path(tmp_path, monkeypatch):
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    tool = bindir / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bindir / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert workload.resolve_program(("mytool", "-x")) == (str(tool), "-x")
    assert workload.resolve_program(("absent", "-x")) == ("absent", "-x")
    assert workload.resolve_program(("./mytool",)) == ("./mytool",)  # a path is the user's own
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ["PATH"])
    assert workload.resolve_program(("mytool",)) == ("mytool",)  # on PATH: as given


def test_a_trainer_commands_epochs_are_its_last_num_epochs_else_the_trainers_own_default():
    from mxlaunch.trainer.cli import fit_command  # a test may look at both layers; the launcher may not

    default = next(p.default for p in fit_command.params if p.name == "num_epochs")
    assert workload.TRAINER_NUM_EPOCHS == default
    assert workload.num_epochs(["trainer", "fit", "--lr", "0.1"]) == default
    assert workload.num_epochs(["trainer", "fit", "--num-epochs", "3", "--num-epoch=7"]) == 7
    assert workload.num_epochs(["trainer", "fine-tune", "--num-epoch", "+4"]) == 4
    assert workload.num_epochs(["trainer", "fit", "--num-epochs", "x"]) is None
    assert workload.num_epochs(["python", "train.py", "--num-epochs", "3"]) is None  # not second-guessed
