"""Every worker of a dist_sync job runs the same number of batches per epoch even when its shard holds far fewer
records than another's (MXNet issue 9611: unequal counts hang the job at the epoch end). MXNet splits a `.rec`
without an `.idx` by bytes, so records of very different sizes give shards of very different record counts: the
small shard must wrap around to its start, the large one stop early. The trainer runs as a user runs it,
`launch train --local` with `trainer fit`, with a bound: a hang is a failure, not a stuck test."""
from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

from testkit.jobs import read_log, run_launch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
BATCH, WORKERS, BIG, SMALL = 4, 2, 6, 40


@pytest.fixture(scope="module")
def unequal_shards(tmp_path_factory):
    """A training `.rec` without an index: BIG large noise images first, then SMALL tiny flat ones; and a small
    validation set. Returns (train path, validation path, records per shard as MXNet reads them)."""
    import mxnet as mx
    from mxlaunch.trainer.records import encode_png, write_records

    folder = tmp_path_factory.mktemp("unequal")
    rng = np.random.default_rng(0)
    big = [(i % 10, encode_png(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))) for i in range(BIG)]
    small = [(i % 10, encode_png(np.full((28, 28, 3), 10 * (i % 10), np.uint8))) for i in range(SMALL)]
    train, val = str(folder / "train.rec"), str(folder / "val.rec")
    write_records(train, big + small)
    os.remove(os.path.splitext(train)[0] + ".idx")  # split by bytes, as MXNet does without one
    write_records(val, small[:12])
    counts = []
    for part in range(WORKERS):
        it = mx.io.ImageRecordIter(path_imgrec=train, data_shape=(3, 28, 28), batch_size=1, num_parts=WORKERS,
                                   part_index=part, round_batch=False)
        counts.append(sum(1 for _ in it))
    return train, val, counts


def test_the_shards_really_differ_in_how_many_batches_they_hold(unequal_shards):
    _, _, counts = unequal_shards
    assert sum(counts) == BIG + SMALL
    per_epoch = -(-(BIG + SMALL) // (WORKERS * BATCH))  # the trainer's updates per epoch (fit.py's rule)
    natural = [-(-n // BATCH) for n in counts]
    assert min(natural) < per_epoch < max(natural), (counts, natural, per_epoch)  # one wraps, one stops early


def test_a_dist_sync_job_over_unequal_shards_ends_and_every_worker_ran_the_same_batches(unequal_shards, tmp_path):
    train, val, _ = unequal_shards
    run_dir = tmp_path / "run"
    code, out, err = run_launch(
        "train", "--local", "-n", str(WORKERS), "-s", "1", "--run-dir", str(run_dir), "--timeout", "300",
        "--env", "OMP_NUM_THREADS=1", "--", sys.executable, "-m", "mxlaunch.trainer", "fit", "--network", "resnet",
        "--num-layers", "8", "--data-train", train, "--data-val", val, "--image-shape", "3,28,28",
        "--pad-size", "0", "--random-mirror", "0", "--num-classes", "10", "--batch-size", str(BATCH),
        "--num-epochs", "2", "--disp-batches", "1", "--lr", "0.05", "--data-nthreads", "1", timeout=360)
    assert code == 0, (out[-3000:], err[-3000:])  # a worker left waiting at an epoch's end would time out (124)
    per_epoch = -(-(BIG + SMALL) // (WORKERS * BATCH))
    for worker in range(WORKERS):
        log = read_log(str(run_dir), f"worker-{worker}")
        for epoch in range(2):
            batches = [int(b) for b in re.findall(rf"Epoch\[{epoch}\] Batch \[\d+-(\d+)\]", log)]
            assert batches and max(batches) == per_epoch, (worker, epoch, batches)
