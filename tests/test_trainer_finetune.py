"""`trainer fine-tune`: a new classifier on pretrained features; resuming keeps the trained classifier."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import run_trainer
from digits_recipe import EPOCHS


def data_args(digits_dir):
    return ["--data-train", os.path.join(digits_dir, "digits_train.rec"),
            "--data-val", os.path.join(digits_dir, "digits_val.rec"),
            "--image-shape", "3,28,28", "--pad-size", 0, "--random-mirror", 0, "--rgb-mean", "0,0,0",  # the recipe's
            "--batch-size", 32, "--seed", 3]


def head(prefix, epoch, name="fc_finetune"):
    import mxnet as mx

    _, arg_params, _ = mx.model.load_checkpoint(prefix, epoch)
    return arg_params[f"{name}_weight"].asnumpy(), arg_params[f"{name}_bias"].asnumpy()


def last_validation(directory):
    with open(os.path.join(directory, "metrics.jsonl")) as stream:
        return [json.loads(line) for line in stream][-1]["validation-accuracy"]


PRETRAINED_EPOCH = EPOCHS  # the pretrained model: the shared recipe run's last checkpoint


@pytest.fixture(scope="module")
def pretrained(digits_model):
    """A ResNet-8 trained on the digits: the shared recipe run's checkpoints (read, never written)."""
    return digits_model.prefix


@pytest.mark.timeout(240)
def test_fine_tune_to_more_classes_then_resume_keeps_the_trained_head(pretrained, digits_dir, tmp_path):
    import mxnet as mx

    tuned = str(tmp_path / "tuned")
    result = run_trainer("fine-tune", "--pretrained-model", pretrained, "--load-epoch", PRETRAINED_EPOCH,
                         "--num-classes", 12, "--num-epochs", 1, "--lr", 0.05, "--model-prefix", tuned,
                         *data_args(digits_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replaced classifier fc1 (10 classes) with fc_finetune (12 classes)" in result.stderr
    symbol, arg_params, _ = mx.model.load_checkpoint(tuned, 1)
    assert "fc1_weight" not in arg_params and arg_params["fc_finetune_weight"].shape == (12, 64)
    # the pretrained features were kept: one epoch on them is far above chance
    assert last_validation(tmp_path) >= 0.8
    trained_head = head(tuned, 1)

    # Resume with no learning rate and no momentum: a kept head stays as trained; a replaced one would not.
    # (64 examples an epoch: with no learning rate the number of updates cannot change the head)
    no_lr = ["--lr", 0, "--mom", 0, "--wd", 0, "--num-examples", 64]
    result = run_trainer("fine-tune", "--pretrained-model", tuned, "--load-epoch", 1, "--num-classes", 12,
                         "--num-epochs", 2, *no_lr, "--model-prefix", tuned, *data_args(digits_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming at epoch 1 with its trained classifier" in result.stderr
    for before, after in zip(trained_head, head(tuned, 2)):
        np.testing.assert_array_equal(before, after)
    with open(os.path.join(tmp_path, "metrics.jsonl")) as stream:
        assert [json.loads(line)["epoch"] for line in stream] == [0, 1]

    # `trainer fit --load-epoch` on the fine-tuned checkpoints resumes it too, head included
    result = run_trainer("fit", "--num-classes", 12, "--load-epoch", 2, "--num-epochs", 3, *no_lr,
                         "--model-prefix", tuned, *data_args(digits_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    for before, after in zip(trained_head, head(tuned, 3)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.timeout(120)
def test_the_articles_command_runs_as_written_paths_aside(pretrained, digits_dir, tmp_path):
    """The CIFAR article's fine-tune command; on this CPU-only build --gpus gets one line naming the gpu extra."""
    import mxnet as mx

    # the article starts from an epoch-0000 checkpoint
    symbol, arg_params, aux_params = mx.model.load_checkpoint(pretrained, PRETRAINED_EPOCH)
    mx.model.save_checkpoint(str(tmp_path / "pre"), 0, symbol, arg_params, aux_params)
    article = ["fine-tune", "--pretrained-model", tmp_path / "pre", "--load-epoch", "0000", "--gpus", "0,1,2,3",
               "--batch-size", 128, "--data-train", os.path.join(digits_dir, "digits_train.rec"),
               "--data-val", os.path.join(digits_dir, "digits_val.rec"), "--num-examples", 50000,
               "--num-classes", 10, "--image-shape", "3,28,28", "--num-epoch", 300, "--lr", 0.05,
               "--lr-factor", 0.9, "--lr-step-epochs", "25,50,...,300"]
    result = run_trainer(*article)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "no GPU support" in result.stderr and "mxlaunch[gpu]" in result.stderr

    # the same command on the CPU, shortened to one epoch of 256 examples, trains
    cpu = [a for a in article if a not in ("--gpus", "0,1,2,3")]
    cpu[cpu.index(50000)] = 256
    cpu[cpu.index(300)] = 1
    result = run_trainer(*cpu, "--model-prefix", tmp_path / "tuned")
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.isfile(tmp_path / "tuned-0001.params")
