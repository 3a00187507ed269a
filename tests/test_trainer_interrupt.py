"""SIGUSR1 = "checkpoint now and stop" (trainer/stop.py), and the resume from that batch: no work redone.

Bit-for-bit: MXNet's CPU training repeats exactly with one engine thread (NaiveEngine), one OpenMP thread and a
fixed seed; the data order of an epoch is a pure function of (seed, rank, epoch). So an interrupted run resumed
with --load-epoch E --load-batch B must end with the very parameters of an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_trainer, trainer_env
from mxlaunch.infra.transport.remote import checkpoint_scan
from testkit.streams import Output
from mxlaunch.trainer.stop import STOPPED_FOR_CHECKPOINT

BATCH, EXAMPLES = 32, 320  # 10 updates per epoch: the digits shard (45 batches) is longer than an epoch
UPDATES = EXAMPLES // BATCH
BASE_LR, FACTOR = 0.1, 0.1  # a step at epoch 1: a resume inside epoch 1 must continue at the stepped rate
REPRODUCIBLE = dict(MXNET_ENGINE_TYPE="NaiveEngine", OMP_NUM_THREADS="1", MXNET_CPU_WORKER_NTHREADS="1")
STOPPED = re.compile(r"Epoch\[(\d+)\] Batch \[(\d+)\] checkpoint (\S+) written on request; stopping")

pytestmark = pytest.mark.timeout(120)


def fit_args(digits_dir, prefix, *extra, epochs=2) -> list:
    """`trainer fit` on the digits: 2 short epochs, every batch logged, the lr stepped down at epoch 1."""
    args = ["fit", "--network", "resnet", "--num-layers", 8,
            "--data-train", os.path.join(digits_dir, "digits_train.rec"),
            "--data-val", os.path.join(digits_dir, "digits_val.rec"), "--image-shape", "3,28,28",
            "--pad-size", 0, "--random-mirror", 0, "--batch-size", BATCH, "--num-examples", EXAMPLES,
            "--num-epochs", epochs, "--lr", BASE_LR, "--lr-factor", FACTOR, "--lr-step-epochs", 1, "--seed", 1,
            "--data-nthreads", 1, "--disp-batches", 1, "--model-prefix", prefix, *extra]
    return [str(a) for a in args]


def start(args, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mxlaunch.trainer", *args], stdout=subprocess.DEVNULL,
                            stderr=stderr, env=trainer_env(**REPRODUCIBLE))


def signal_after(process: subprocess.Popen, pattern: str, timeout: float = 60) -> str:
    """Send SIGUSR1 once the trainer logs a line matching `pattern`; its whole log once it exits."""
    output, seen = Output(process.stderr), b""
    while not re.search(pattern.encode(), seen):
        seen += output.readline(timeout)  # bounded; EOFError if it exits first
    process.send_signal(signal.SIGUSR1)
    seen += output.read_to_end(timeout)
    process.wait(timeout)
    return seen.decode()


def metric_lines(path) -> list:
    with open(path) as stream:
        return [json.loads(line) for line in stream]


def load_params(path) -> dict:
    import mxnet as mx

    return {name: array.asnumpy() for name, array in mx.nd.load(str(path)).items()}


def assert_usage_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("trainer: error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def interrupted(digits_dir, tmp_path):
    """One uninterrupted 2-epoch run (in parallel), and the same command stopped by SIGUSR1 early in epoch 1."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir()
    with open(whole / "trainer.log", "wb") as reference_stderr:
        reference = start(fit_args(digits_dir, whole / "m"), stderr=reference_stderr)
    stopped = start(fit_args(digits_dir, cut / "m"))
    try:
        log = signal_after(stopped, r"Epoch\[1\] Batch \[\d+-\d+\]")
        reference.wait(90)
    finally:
        for process in (reference, stopped):
            process.kill()
            process.wait()
    reference_log = (whole / "trainer.log").read_text()
    assert reference.returncode == 0, reference_log[-3000:]
    return whole, cut, stopped.returncode, log, reference_log


@pytest.mark.slow
def test_sigusr1_checkpoints_mid_epoch_and_the_resume_ends_bit_identical(digits_dir, tmp_path):
    whole, cut, status, log, reference_log = interrupted(digits_dir, tmp_path)
    assert status == STOPPED_FOR_CHECKPOINT == 75, log[-3000:]
    (epoch, batch, path), = STOPPED.findall(log)
    epoch, batch = int(epoch), int(batch)
    assert epoch == 1 and 1 <= batch < UPDATES, log[-3000:]
    assert path == "%s-%04d-%06d.params" % (cut / "m", epoch, batch)
    # complete: the whole params file, its optimizer states and the symbol, no temporary left
    assert checkpoint_scan.local_complete(path)
    assert set(load_params(path)) == set(load_params(whole / "m-0002.params"))
    with open("%s-%04d-%06d.states" % (cut / "m", epoch, batch), "rb") as stream:
        assert pickle.load(stream)
    assert (cut / "m-symbol.json").is_file()
    assert not list(cut.glob("*.tmp-*"))
    assert not (cut / "m-0002.params").exists()
    assert [m["epoch"] for m in metric_lines(cut / "metrics.jsonl")] == [0]  # epoch 1 is not done yet

    # beside the resume: a job whose epochs are shorter than the batch the checkpoint was taken after is refused
    shorter = start(fit_args(digits_dir, cut / "m", "--load-epoch", epoch, "--load-batch", batch,
                             "--num-examples", batch * BATCH))
    try:
        resumed = run_trainer(*fit_args(digits_dir, cut / "m", "--load-epoch", epoch, "--load-batch", batch),
                              env=trainer_env(**REPRODUCIBLE), timeout=90)
        _, refusal = shorter.communicate(timeout=60)
    finally:
        shorter.kill()
        shorter.wait()
    assert_usage_error(subprocess.CompletedProcess(shorter.args, shorter.returncode, "", refusal.decode()),
                       f"--load-batch {batch}", f"has {batch} updates")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the whole checkpoints written after it supersede the mid-epoch one: it is removed (params and states)
    assert not list(cut.glob("m-0001-*")), sorted(p.name for p in cut.iterdir())
    assert f"Removed 2 superseded mid-epoch checkpoint file(s): {path}, {path[:-len('params')]}states" in resumed.stderr
    # the schedule continues exactly: the first update after the resume is number 1 * UPDATES + batch + 1
    assert f"Update[{UPDATES + batch + 1}]: Change learning rate to 1.00000e-02" in resumed.stderr
    assert re.findall(r"Epoch\[1\] Learning rate=\S+", resumed.stderr) == \
        re.findall(r"Epoch\[1\] Learning rate=\S+", reference_log) == ["Epoch[1] Learning rate=0.01"]
    metrics = metric_lines(cut / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [0, 1]  # every epoch exactly once
    for record in metrics:
        assert record["lr"] == pytest.approx(BASE_LR * FACTOR ** (record["epoch"] >= 1), rel=1e-9), record
    # no work redone and none lost: the very parameters of the uninterrupted run
    expected, got = load_params(whole / "m-0002.params"), load_params(cut / "m-0002.params")
    for name in expected:
        assert np.array_equal(expected[name], got[name]), name
    assert [m["validation-accuracy"] for m in metrics] == \
        [m["validation-accuracy"] for m in metric_lines(whole / "metrics.jsonl")]


@pytest.mark.slow
def test_a_request_after_an_epochs_last_batch_finishes_that_epoch_and_checkpoints_it(digits_dir, tmp_path):
    """One update per epoch: a request is served at the epoch's end, with PREFIX-(E+1) although --save-period
    would skip it (resuming from it is an ordinary --load-epoch), and before validation: the launcher waits a
    bounded time, and validating a large set could outlast it. (Sent before the only batch ends.)"""
    prefix = tmp_path / "m"
    one_batch = ["--num-examples", BATCH, "--save-period", 5]
    process = start(fit_args(digits_dir, prefix, *one_batch, epochs=3))
    try:
        log = signal_after(process, r"rank 0 of 1")
    finally:
        process.kill()
        process.wait()
    assert process.returncode == STOPPED_FOR_CHECKPOINT, log[-3000:]
    (epoch, batch, path), = STOPPED.findall(log)
    done = int(epoch) + 1
    assert int(batch) == 1 and done < 3 and path == "%s-%04d.params" % (prefix, done)
    assert f"Epoch[{epoch}] validation skipped: a stop was requested" in log and "Validation-accuracy" not in log
    assert checkpoint_scan.local_complete(path)
    assert [m["epoch"] for m in metric_lines(tmp_path / "metrics.jsonl")] == list(range(done))


@pytest.mark.slow
def test_a_request_when_training_completes_ends_it_as_usual(digits_dir, tmp_path):
    """Nothing is left to resume: status 0, not 75 (the request lands before the only batch ends)."""
    process = start(fit_args(digits_dir, tmp_path / "m", "--num-examples", BATCH, epochs=1))
    try:
        log = signal_after(process, r"rank 0 of 1")
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, log[-3000:]
    assert "Epoch[0] Batch [1] stop requested: training is complete (%s-0001.params written)" % (tmp_path / "m") in log
    assert checkpoint_scan.local_complete("%s-0001.params" % (tmp_path / "m"))


def test_bad_load_batch_is_one_line_and_status_2(digits_dir, tmp_path):
    def trainer(*extra):
        return run_trainer(*fit_args(digits_dir, tmp_path / "m", *extra), timeout=60)

    assert_usage_error(trainer("--load-batch", 3), "--load-batch 3 needs --load-epoch")
    assert_usage_error(trainer("--load-epoch", 1, "--load-batch", 0), "--load-batch")
    (tmp_path / "m-symbol.json").write_text("{}")  # the symbol is there; the params of that batch are not
    assert_usage_error(trainer("--load-epoch", 1, "--load-batch", 7), "no checkpoint file", "m-0001-000007.params")
    assert [p.name for p in tmp_path.iterdir()] == ["m-symbol.json"]  # nothing written


def test_an_epochs_batches_depend_on_seed_rank_and_epoch_only(tmp_path):
    """Epoch 2 read after epochs 0 and 1 equals epoch 2 read by a process that starts there; skipping B batches
    continues with the same batch; other epochs and ranks differ."""
    from mxlaunch.trainer.config import FitConfig
    from mxlaunch.trainer.data import FixedBatches, Shard, epoch_seed, train_iter
    from mxlaunch.trainer.records import encode_png, index_path, write_records

    path = str(tmp_path / "numbered.rec")
    pattern = np.arange(8 * 8 * 3).reshape(8, 8, 3)  # not flat: crops and mirrors show in the pixels
    write_records(path, ((i, encode_png(((pattern + i) % 256).astype(np.uint8))) for i in range(101)))

    def batches(rank, first_epoch, epoch, skip=0):
        cfg = FitConfig(data_train=path, image_shape=(3, 6, 6), batch_size=8, pad_size=1, random_crop=True,
                        random_mirror=True)

        def make(e):
            return train_iter(cfg, index_path(path), Shard(rank, 2), threads=1, seed=epoch_seed(7, rank, e))

        data = FixedBatches(make, 9, first_epoch)  # a shard of 51 records: 7 batches, wrapped to 9
        for earlier in range(first_epoch, epoch):
            list(data.epoch(earlier))
        return [(b.label[0].asnumpy().copy(), b.data[0].asnumpy().copy()) for b in data.epoch(epoch, skip)]

    def same(a, b):
        return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))

    after_two = batches(0, 0, 2)
    assert len(after_two) == 9
    assert same(after_two, batches(0, 2, 2))
    assert same(after_two[4:], batches(0, 2, 2, skip=4))
    assert not same(after_two, batches(0, 1, 1))
    assert not same(after_two, batches(1, 2, 2))


def test_other_ranks_log_the_request_and_go_on_rank_0_without_a_prefix_stops_without_a_checkpoint(caplog):
    from mxlaunch.trainer.fit import _OnRequest
    from mxlaunch.trainer.stop import StoppedForCheckpoint, StopRequest

    def save(epoch, batch=None):
        raise AssertionError("no checkpoint is written here")

    caplog.set_level("INFO", logger="trainer")
    request = StopRequest()
    request.pending = True
    worker = _OnRequest(request, rank=1, save=save)
    worker.inside_epoch(3, 7)
    worker.at_epoch_end(3, 10, saved=None, complete=False)  # taken once: nothing more to say
    assert not request.pending
    assert [r.getMessage() for r in caplog.records] == \
        ["Epoch[3] Batch [7] stop requested: that is for rank 0 (it checkpoints); going on"]

    caplog.clear()
    request.pending = True
    with pytest.raises(StoppedForCheckpoint):
        _OnRequest(request, rank=0, save=None).inside_epoch(3, 7)
    assert [r.getMessage() for r in caplog.records] == \
        ["Epoch[3] Batch [7] stop requested: no --model-prefix, so no checkpoint; stopping"]
