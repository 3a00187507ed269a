"""mxlaunch.trainer.contract: what a trainer command line means, read with the trainer's own commands and defaults
(never trained, no MXNet): for the launcher, which must not parse trainer arguments or copy its defaults."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mxlaunch.errors import UsageError

POST = ("fine-tune --pretrained-model resnext-101 --load-epoch 0000 --gpus 0,1,2,3 --batch-size 128 "
        "--data-train cifar10_train.rec --data-val cifar10_val.rec --num-examples 50000 --num-classes 10 "
        "--image-shape 3,28,28 --num-epoch 300 --lr 0.05 --lr-factor 0.9 "
        "--lr-step-epochs 25,50,75,100,125,150,175,200,225,250,275,300").split()


def test_describe_reads_a_command_as_the_trainer_does():
    from mxlaunch.trainer.contract import describe

    command = describe([*POST, "--model-prefix", "ck/r101"])
    assert (command.command, command.trains, command.model_prefix, command.num_epochs) == \
        ("fine-tune", True, "ck/r101", 300)
    assert (command.load_epoch, command.pretrained_model, command.gpus, command.kv_store) == \
        (0, "resnext-101", (0, 1, 2, 3), None)
    assert command.data_files == ("cifar10_train.rec", "cifar10_val.rec")

    plain = describe(["fit", "--data-train", "t.rec", "--kv-store", "dist_sync", "--cpus", "2"])
    assert (plain.num_epochs, plain.kv_store, plain.cpus, plain.load_epoch, plain.model_prefix) == \
        (300, "dist_sync", 2, None, None)  # train_cifar10.py's 300 epochs; dist_sync needs no job to be read
    assert describe(["fine-tune", "--pretrained-model", "p", "--load-epoch", "1", "--num-classes", "3",
                     "--data-train", "t.rec"]).num_epochs == 30  # fine-tune.py's
    assert describe(["fit", "--data-train", "t.rec", "--num-epochs=4", "--num-epoch", "7"]).num_epochs == 7
    assert describe(["data", "digits", "--out", "d"]).command == "data"
    assert describe(["fit", "--help"]).command == "help" and describe([]).command == "help"


@pytest.mark.parametrize("args, message", [
    (["fit", "--data-train", "t.rec", "--lr-factor", "1.5"], "--lr-factor 1.5 with --lr-step-epochs 200,250"),
    (["fit", "--data-train", "t.rec", "--bogus", "1"], "No such option '--bogus'"),
    (["fit"], "Missing option '--data-train'"),
    (["fine-tune", "--data-train", "t.rec"], "Missing option"),
    (["fit", "--data-train", "t.rec", "--num-epochs", "x"], "'x' is not a valid integer"),
    (["train"], "No such command 'train'"),
])
def test_what_the_trainer_refuses_is_a_usage_error_with_its_message(args, message):
    from mxlaunch.trainer.contract import describe

    with pytest.raises(UsageError) as error:
        describe(args)
    assert message in error.value.format_message()


def test_resume_args_continue_fit_from_its_own_checkpoint():
    from mxlaunch.trainer.contract import describe

    fit = describe(["fit", "--model-prefix=ck/m", "--load-epoch", "1", "--lr", "0.1", "--load-ep=3",
                    "--data-train", "t.rec"])
    assert fit.resume_args(10) == ("fit", "--model-prefix=ck/m", "--lr", "0.1", "--data-train", "t.rec",
                                   "--load-epoch", "10")
    assert fit.resume_args(4, 17)[-4:] == ("--load-epoch", "4", "--load-batch", "17")
    with pytest.raises(UsageError, match="no --model-prefix"):
        describe(["fit", "--data-train", "t.rec"]).resume_args(3)


def test_a_fine_tune_resumes_as_fit_with_the_fine_tune_defaults_it_relied_on():
    """fine-tune's --load-epoch names the pretrained model's epoch: resuming must not load PRETRAINED-<epoch>, and
    `fit` must train on with fine-tune's rate, momentum, decay, epochs and shape, not train_cifar10.py's."""
    from mxlaunch.trainer.contract import describe, fit_config

    command = describe(["fine-tune", "--pretrained-model", "/efs/r101", "--load-epoch", "0", "--num-classes", "10",
                        "--data-train", "t.rec", "--model-prefix", "/efs/ckpt/c", "--lr", "0.05"])
    resumed = command.resume_args(25)
    assert resumed[:9] == ("fit", "--num-classes", "10", "--data-train", "t.rec", "--model-prefix", "/efs/ckpt/c",
                           "--lr", "0.05")
    assert "--pretrained-model" not in resumed and resumed[-2:] == ("--load-epoch", "25")
    tuned, continued = fit_config(command.args), fit_config(resumed)
    for name in ("lr", "mom", "wd", "num_epochs", "lr_step_epochs", "image_shape", "pad_size", "random_crop",
                 "random_mirror", "rgb_mean", "num_classes", "model_prefix", "batch_size", "lr_factor"):
        assert getattr(continued, name) == getattr(tuned, name), name
    assert continued.resumes and continued.load_epoch == 25 and continued.pretrained_model is None


HEAVY = ("mxnet", "numpy", "PIL", "matplotlib", "jinja2", "boto3", "botocore", "paramiko")
LOADED = "print(json.dumps(sorted(sys.modules)))\n"
HELP = "from mxlaunch.trainer.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\n"


def loaded_modules(code: str) -> list:
    proc = subprocess.run([sys.executable, "-c", "import json, sys\n" + code + LOADED], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().rpartition("\n")[2])


def test_importing_and_describing_loads_no_heavy_library():
    loaded = loaded_modules("import mxlaunch.trainer.contract\nfrom mxlaunch.trainer.contract import describe\n"
                            f"describe({[*POST, '--model-prefix', 'm']!r}).resume_args(3)\n")
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert "mxlaunch.trainer.contract" in loaded and not [m for m in loaded if m.startswith("mxlaunch.launcher")]


@pytest.mark.parametrize("args", [["--help"], ["fit", "--help"], ["fine-tune", "--help"], ["data", "--help"]])
def test_trainer_help_loads_no_heavy_library_not_even_numpy_or_pil(args):
    """The import check of the sources trusts `# heavy` to keep these off start-up: here it is proved."""
    loaded = loaded_modules(HELP.format(args=args))
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert "mxlaunch.trainer.cli" in loaded
