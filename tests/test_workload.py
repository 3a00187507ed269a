"""The workload's command line (launcher/jobs/workload.py): what the preflight, --cluster and --resume read from
it or add to it. A trainer command means what the trainer says (its contract: options, defaults, resume);
another program is read by the option rule (`--opt value` or `--opt=value`, the last one counts)."""
import os
import sys

import pytest

from mxlaunch.errors import UsageError
from mxlaunch.launcher.jobs import workload
from mxlaunch.launcher.jobs.plan import JobSpec
from mxlaunch.infra.transport.hosts import Host
pytestmark = pytest.mark.timeout(30)

FIT = ("trainer", "fit", "--data-train", "d/t.rec")


def test_files_named_in_the_command():
    cmd = ["/v/bin/python", "train.py", "--data-train", "d/t.rec", "--data-val=d/v.rec", "--lr", "0.1",
           "--data-nthreads", "-1", "--data-train", "d/t.rec"]
    assert workload.data_files(cmd) == ("d/t.rec", "d/v.rec")
    assert workload.script_files(cmd) == ("/v/bin/python", "train.py")
    assert workload.script_files(["trainer", "fit"]) == ()
    assert workload.script_files(["python3", "-m", "mxlaunch.trainer"]) == ()


def test_the_trainers_files_are_the_ones_it_reads():
    cmd = ["trainer", "fit", "--data-nthreads", "4", "--data-train", "t.rec", "--data-val=v.rec", "--data-nthreads=2"]
    assert workload.data_files(cmd) == ("t.rec", "v.rec")
    named = cmd + ["--data-train-idx", "t.idx"]  # an index the trainer would read is looked for too
    assert workload.data_files(named) == ("t.rec", "t.idx", "v.rec")


def test_an_options_value_is_the_next_word_or_after_the_equals_sign_and_the_last_one_counts():
    cmd = ("prog", "--model-prefix", "a/m", "--lr=0.1", "--model-prefix=b/m", "--flag")
    assert workload.option_value(cmd, "--lr") == "0.1"
    assert workload.option_value(cmd, "--model-prefix") == "b/m"
    assert workload.model_prefix(cmd) == "b/m"
    assert workload.option_value(cmd, "--flag") is None and workload.has_option(cmd, "--flag")
    assert workload.option_value(cmd, "--model") is None and not workload.has_option(cmd, "--model")
    # a value is a value even when it looks like an option (as click and argparse read it)
    assert workload.option_value(("p", "--model-prefix", "--lr"), "--model-prefix") == "--lr"
    assert workload.without_option(cmd, "--model-prefix") == ("prog", "--lr=0.1", "--flag")
    assert workload.without_option(("p", "--model-prefix"), "--model-prefix") == ("p",)


@pytest.mark.parametrize("program", [("trainer",), ("/x/.venv/bin/trainer",), ("python", "-m", "mxlaunch.trainer"),
                                     ("/v/bin/python3", "-m", "mxlaunch.trainer"), ("python3", "/v/bin/trainer")])
def test_the_trainer_is_recognised_however_it_is_invoked(program):
    command = program + FIT[1:]
    assert workload.is_trainer(command)
    assert workload.with_gpus(command, 4) == command + ("--gpus", "0,1,2,3")


def test_only_the_program_makes_a_command_the_trainer():
    for other in (("python", "train.py", "fit"), ("run.sh", "trainer", "fit"), ("python", "-m", "mxlaunch.other")):
        assert not workload.is_trainer(other)


def test_gpus_are_added_only_to_a_trainer_that_names_none_on_a_host_with_gpus():
    assert workload.with_gpus(["python", "train.py"], 4) == ("python", "train.py")
    assert workload.with_gpus(FIT, 0) == FIT
    assert workload.with_gpus(FIT + ("--gpus", "0"), 4) == FIT + ("--gpus", "0")
    assert workload.with_gpus(FIT + ("--gpus=1",), 4) == FIT + ("--gpus=1",)
    assert workload.with_gpus(FIT + ("--cpus", "2"), 4) == FIT + ("--cpus", "2")
    assert workload.with_gpus(("trainer", "data", "digits", "--out", "d"), 4) == ("trainer", "data", "digits",
                                                                                    "--out", "d")
    assert workload.gpus_arg(1) == "0" and workload.gpus_arg(0) == ""
    assert workload.gpus(FIT + ("--gpus", "0,2")) == (0, 2) and workload.gpus(FIT) is None
    assert workload.gpus(("python", "train.py", "--gpus", "1,3")) == (1, 3)
    assert workload.cpus(FIT + ("--cpus", "2")) == 2 and workload.cpus(FIT) is None


def test_resume_reads_the_model_prefix_and_the_trainer_says_how_to_continue():
    cmd = FIT + ("--model-prefix=ck/m", "--load-epoch", "1", "--lr", "0.1", "--load-epoch=3")
    assert workload.model_prefix(cmd) == "ck/m"
    assert workload.load_point(cmd) == (3, 0)
    assert workload.resumed(cmd, 10) == FIT + ("--model-prefix=ck/m", "--lr", "0.1", "--load-epoch", "10")
    assert workload.resumed(cmd, 10, 7)[-4:] == ("--load-epoch", "10", "--load-batch", "7")
    assert workload.model_prefix(FIT) is None
    assert workload.load_point(FIT + ("--model-prefix", "m", "--load-epoch", "0")) == (0, 0)  # PREFIX-0000 loads
    plain = ["python", "train.py", "--load-epoch", "3", "--model-prefix", "m"]  # not the trainer: the option rule
    assert workload.resumed(plain, 4, 2) == ("python", "train.py", "--model-prefix", "m", "--load-epoch", "4",
                                             "--load-batch", "2")


def test_a_fine_tune_resumes_as_fit_from_its_own_checkpoint_with_the_fine_tune_recipe():
    """fine-tune's --load-epoch is the pretrained model's epoch: resuming must not load PRETRAINED-<epoch>, and
    the resumed `fit` must keep training fine-tune's recipe (its defaults differ from fit's)."""
    cmd = (sys.executable, "-m", "mxlaunch.trainer", "fine-tune", "--pretrained-model", "/efs/r101", "--load-epoch",
           "0000", "--num-classes", "10", "--model-prefix", "/efs/ckpt/c", "--data-train", "t.rec")
    assert workload.load_point(cmd) is None
    again = workload.resumed(cmd, 25)
    assert again[:4] == (sys.executable, "-m", "mxlaunch.trainer", "fit")
    assert "--pretrained-model" not in again and again[-2:] == ("--load-epoch", "25")
    # the fine-tune defaults it relied on, as the trainer states them
    assert workload.num_epochs(again) == workload.num_epochs(cmd) == 30
    assert ("--lr", "0.01") in zip(again, again[1:]) and ("--mom", "0.0") in zip(again, again[1:])


def test_a_trainer_commands_epochs_are_what_the_trainer_says():
    from mxlaunch.trainer.contract import describe  # a test may look at both layers; nothing is copied between them

    assert workload.num_epochs(FIT) == describe(FIT[1:]).num_epochs
    assert workload.num_epochs(FIT + ("--num-epochs", "3", "--num-epoch=7")) == 7
    assert workload.num_epochs(("trainer", "fine-tune", "--pretrained-model", "p", "--load-epoch", "0",
                                "--num-classes", "10", "--data-train", "t.rec", "--num-epoch", "4")) == 4
    assert workload.num_epochs(["python", "train.py", "--num-epochs", "3"]) is None  # not second-guessed


def test_a_command_line_the_trainer_refuses_is_refused_in_one_line_naming_it():
    with pytest.raises(UsageError) as refused:
        workload.model_prefix(FIT + ("--num-epochs", "x"))
    message = refused.value.format_message()
    assert message.startswith("the trainer would refuse this command: ") and "--num-epochs" in message
    assert "\n" not in message


def test_several_workers_need_a_distributed_kvstore():
    def spec(*extra, workers=2):
        return JobSpec(command=FIT + extra, num_workers=workers, num_servers=1, hosts=(Host.loopback(),))

    for store in ("local", "device", "nccl"):
        with pytest.raises(UsageError, match=f"--kv-store {store}: 2 workers .* dist_sync"):
            spec("--kv-store", store).validate()
    spec("--kv-store", "local", workers=1).validate()
    spec("--kv-store", "dist_async").validate()
    spec().validate()
    JobSpec(command=("python", "train.py", "--kv-store", "local"), num_workers=2, num_servers=1,
            hosts=(Host.loopback(),)).validate()  # another program's options are its own


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
