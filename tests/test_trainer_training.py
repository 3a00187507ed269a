"""`trainer fit` on real handwritten digits: accuracy, the step schedule, checkpoints and resume."""
from __future__ import annotations

import math
import os
import re
import shutil

import pytest

from conftest import run_trainer
from digits_recipe import BASE_LR, EPOCHS, FACTOR, STEPS, TRAIN_EXAMPLES, RecipeRun, fit_args, read_metrics

BATCH = RecipeRun.BATCH  # 32: the shared run's batch, and the resumed run's
pytestmark = pytest.mark.slow


def expected_lr(epoch: int) -> float:
    """The multi-step formula, written out independently of the trainer."""
    return BASE_LR * FACTOR ** len([s for s in STEPS if epoch >= s])


@pytest.fixture(scope="module")
def full_run(digits_model):
    """One uninterrupted run of the recipe: the session's (conftest.digits_model), shared read-only."""
    return digits_model.prefix, digits_model.log, digits_model.metrics


@pytest.mark.timeout(300)
def test_resnet8_with_step_schedule_reaches_97_percent_on_digits(full_run):
    _, log, metrics = full_run
    assert [m["epoch"] for m in metrics] == list(range(EPOCHS))
    assert metrics[-1]["validation-accuracy"] >= 0.97, metrics[-1]
    # MXNet's own log formats, so that existing parsers keep working
    assert re.search(r"Epoch\[0\] Batch \[0-20\]\tSpeed: [\d.]+ samples/sec\taccuracy=[\d.]+", log)
    assert re.search(rf"Epoch\[{EPOCHS - 1}\] Train-accuracy=[\d.]+", log)
    assert re.search(rf"Epoch\[{EPOCHS - 1}\] Time cost=[\d.]+", log)
    assert re.search(rf"Epoch\[{EPOCHS - 1}\] Validation-accuracy=[\d.]+", log)


def test_checkpoints_are_mxnet_format(full_run):
    import mxnet as mx

    prefix, _, _ = full_run
    for epoch in range(1, EPOCHS + 1):
        assert os.path.isfile("%s-%04d.params" % (prefix, epoch))
    symbol, arg_params, aux_params = mx.model.load_checkpoint(prefix, EPOCHS)
    assert arg_params["fc1_weight"].shape == (10, 64)
    assert "softmax_output" in symbol.list_outputs()


def test_recorded_lr_follows_the_multistep_formula(full_run):
    _, log, metrics = full_run
    for record in metrics:
        assert record["lr"] == pytest.approx(expected_lr(record["epoch"]), rel=1e-6), record
    # the rate in effect is logged when it changes, and only then
    changes = re.findall(r"Epoch\[(\d+)\] Learning rate=([\d.e-]+)", log)
    assert [int(epoch) for epoch, _ in changes] == [0, *STEPS]


@pytest.mark.timeout(240)
def test_resume_between_two_steps_continues_the_schedule_exactly(full_run, digits_dir, tmp_path):
    prefix, _, uninterrupted = full_run
    resume_at = STEPS[0] + 1  # after the first step, before the second (epoch 5 at 0.01, 6 at 0.001)
    copy = str(tmp_path / "digits-resnet8")
    for suffix in ("-symbol.json", "-%04d.params" % resume_at, "-%04d.states" % resume_at):
        shutil.copy(prefix + suffix, copy + suffix)
    result = run_trainer(*fit_args(digits_dir, copy, BATCH, "--load-epoch", resume_at), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = read_metrics(tmp_path / "metrics.jsonl")
    assert [m["epoch"] for m in resumed] == list(range(resume_at, EPOCHS))
    assert [m["lr"] for m in resumed] == pytest.approx([m["lr"] for m in uninterrupted[resume_at:]], rel=1e-6)
    assert os.path.isfile("%s-%04d.params" % (copy, EPOCHS))
    assert not os.path.exists("%s-%04d.params" % (copy, EPOCHS + 1))
    # MXNet's own scheduler counts absolute updates: the step at epoch 6 happens at update 6 * 45 + 1
    updates_per_epoch = math.ceil(TRAIN_EXAMPLES / BATCH)
    assert f"Update[{STEPS[1] * updates_per_epoch + 1}]: Change learning rate to 1.00000e-03" in result.stderr
    assert resumed[-1]["validation-accuracy"] >= 0.97
