"""The job the end-to-end tests train: ResNet-8 on the real handwritten digits, 10 epochs, the learning rate
stepped down tenfold at epochs 6 and 9 (as `make demo`). One home, so every test trains the same recipe."""
from __future__ import annotations

import json
import os

EPOCHS, STEPS = 10, (6, 9)
BASE_LR, FACTOR = 0.1, 0.1
TRAIN_EXAMPLES = 1438  # digits_train.rec: the 1797 digits less the 359 kept for validation


def fit_args(data_dir, prefix, batch, *extra) -> list:
    """`trainer fit` arguments for the recipe. With data_dir "" the record files stay relative (to --workdir)."""
    args = ["fit", "--network", "resnet", "--num-layers", 8,
            "--data-train", os.path.join(data_dir, "digits_train.rec"),
            "--data-val", os.path.join(data_dir, "digits_val.rec"),
            "--image-shape", "3,28,28", "--pad-size", 0, "--random-mirror", 0,
            "--batch-size", batch, "--num-epochs", EPOCHS, "--lr", BASE_LR, "--lr-factor", FACTOR,
            "--lr-step-epochs", ",".join(map(str, STEPS)), "--seed", 1, "--model-prefix", prefix, *extra]
    return [str(a) for a in args]


def read_metrics(path) -> list:
    """The records of metrics.jsonl, one per epoch in order (a resumed run appends: the newest record wins)."""
    by_epoch = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            by_epoch[record["epoch"]] = record
    return [by_epoch[e] for e in sorted(by_epoch)]
