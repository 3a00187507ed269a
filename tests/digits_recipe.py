"""The job the end-to-end tests train: ResNet-8 on the real handwritten digits, 7 epochs, the learning rate
stepped down tenfold at epochs 4 and 6 (as `make demo`); every option it needs is given, the trainer's defaults
being MXNet's CIFAR recipe (no mean subtracted here: grey digits are far from ImageNet's mean, and its first
epochs validate better without). One home, so every test trains the same recipe.
Tests that only read a trained model share one run of it (conftest's `digits_model`) instead of training their own."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

# 7 epochs: one worker validated 0.994, two workers x batch 16 0.983 (one context) and 0.989 (two each), where
# 10 epochs (steps 6,9) gave 0.997 at 43 % more training for every test that trains it (and for `make demo`).
EPOCHS, STEPS = 7, (4, 6)
BASE_LR, FACTOR = 0.1, 0.1
TRAIN_EXAMPLES = 1438  # digits_train.rec: the 1797 digits less the 359 kept for validation


def fit_args(data_dir, prefix, batch, *extra) -> list:
    """`trainer fit` arguments for the recipe. With data_dir "" the record files stay relative (to --workdir)."""
    args = ["fit", "--network", "resnet", "--num-layers", 8,
            "--data-train", os.path.join(data_dir, "digits_train.rec"),
            "--data-val", os.path.join(data_dir, "digits_val.rec"),
            "--image-shape", "3,28,28", "--pad-size", 0, "--random-crop", 1, "--random-mirror", 0,
            "--rgb-mean", "0,0,0", "--batch-size", batch, "--num-epochs", EPOCHS, "--lr", BASE_LR,
            "--lr-factor", FACTOR, "--lr-step-epochs", ",".join(map(str, STEPS)), "--seed", 1,
            "--model-prefix", prefix, *extra]
    return [str(a) for a in args]


def read_metrics(path) -> list:
    """The records of metrics.jsonl, one per epoch in order (a resumed run appends: the newest record wins)."""
    by_epoch = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


@dataclass(frozen=True)
class TrainedDigits:
    """A finished run of the recipe (batch 32, one context): checkpoints PREFIX-0001..PREFIX-{EPOCHS:04d} (with
    .states), metrics.jsonl beside them, and the trainer's log (stderr and stdout)."""
    prefix: str
    log: str
    metrics: list

    @property
    def directory(self) -> str:
        return os.path.dirname(self.prefix)


class RecipeRun:
    """The recipe trained once in the background: started by the first test that asks, awaited by the tests
    that read it (`result`), so that a test can run its own job beside it. Its files are shared: copy, never
    change them."""

    BATCH = 32

    def __init__(self, data_dir, out_dir, env, *extra):
        """`extra`: more trainer options (e.g. `--cpus 2`: the same recipe on two CPU contexts)."""
        self.prefix = os.path.join(str(out_dir), "digits-resnet8")
        self._log_path = os.path.join(str(out_dir), "trainer.log")
        with open(self._log_path, "wb") as log:  # a file, not a pipe: nobody reads it while the run goes on
            self._proc = subprocess.Popen([sys.executable, "-m", "mxlaunch.trainer",
                                           *fit_args(data_dir, self.prefix, self.BATCH, *extra)],
                                          stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._result = None

    def result(self, timeout=300) -> TrainedDigits:
        if self._result is None:
            try:
                rc = self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                raise AssertionError(f"the digits recipe did not finish within {timeout}s") from None
            with open(self._log_path) as f:
                log = f.read()
            assert rc == 0, log[-3000:]
            self._result = TrainedDigits(self.prefix, log, read_metrics(os.path.join(os.path.dirname(self.prefix),
                                                                                     "metrics.jsonl")))
        return self._result

    def stop(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
