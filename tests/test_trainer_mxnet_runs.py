"""MXNet's options at work, as a user runs them: --benchmark 1 without data files, --test-io 1, --top-k and
--loss in MXNet's log format and in metrics.jsonl, --monitor, --initializer, a worker's profile, an index built
for a .rec that has none, --load-epoch 0, and a run keeping another run's records in its directory; under
`launch train`, --gc-type 2bit to 97% and the servers' profiles."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_trainer, run_trainers, trainer_env
from digits_recipe import fit_args, read_metrics


def digits(digits_dir, *extra, val=True):
    return ["--data-train", os.path.join(digits_dir, "digits_train.rec"),
            *(["--data-val", os.path.join(digits_dir, "digits_val.rec")] if val else []),
            "--num-layers", 8, "--image-shape", "3,28,28", "--pad-size", 0, "--batch-size", 16, *extra]


@pytest.mark.timeout(180)
def test_benchmark_trains_on_synthetic_data_and_test_io_reads_without_training(digits_dir, tmp_path):
    bench, io = run_trainers(
        ["fit", "--benchmark", 1, "--num-layers", 8, "--num-examples", 64, "--batch-size", 16, "--num-epochs", 1,
         "--model-prefix", tmp_path / "bench" / "m"],
        ["fit", *digits(digits_dir, "--test-io", 1, "--disp-batches", 30, "--model-prefix", tmp_path / "io" / "m")])
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert "--benchmark 1: synthetic data (3x28x28), no files read" in bench.stderr
    assert re.search(r"Epoch\[0\] Train-accuracy=[\d.]+", bench.stderr)
    assert os.path.isfile(tmp_path / "bench" / "m-0001.params")
    assert io.returncode == 0, io.stderr[-2000:]
    # common/fit.py's format: every --disp-batches batches of the 90 of an epoch (1438 records, batch 16)
    assert re.findall(r"Batch \[(\d+)\]\tSpeed: [\d.]+ samples/sec", io.stderr) == ["29", "59", "89"]
    assert "Train-accuracy" not in io.stderr and os.listdir(tmp_path / "io") == []  # nothing trained or written


@pytest.mark.timeout(180)
def test_top_k_loss_monitor_initializer_and_a_workers_profile(digits_dir, tmp_path):
    result = run_trainer("fit", *digits(digits_dir, "--num-examples", 64, "--num-epochs", 1, "--disp-batches", 2,
                                        "--top-k", 2, "--loss", "ce", "--monitor", 3, "--initializer", "msra",
                                        "--profile-worker-suffix", "worker.json", "--model-prefix", tmp_path / "m"))
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert re.search(r"Epoch\[0\] Batch \[2-4\]\tSpeed: [\d.]+ samples/sec\taccuracy=[\d.]+\t"
                     r"top_k_accuracy_2=[\d.]+\tcross-entropy=[\d.]+", log), log[-3000:]
    for line in ("Train-accuracy", "Train-top_k_accuracy_2", "Train-cross-entropy", "Validation-accuracy",
                 "Validation-top_k_accuracy_2", "Validation-cross-entropy"):
        assert re.search(rf"Epoch\[0\] {line}=[\d.]+", log), line
    record = read_metrics(tmp_path / "metrics.jsonl")[0]
    assert record["validation-top_k_accuracy_2"] >= record["validation-accuracy"] > 0
    assert record["train-cross-entropy"] > 0 and record["validation-cross-entropy"] > 0
    # --monitor 3: the statistics of every array of batches 1 and 4 (MXNet's Monitor counts from its first)
    assert {int(n) for n in re.findall(r"Batch:\s+(\d+) stage1_unit1_conv1_weight\s+\S", log)} == {1, 4}
    with open(tmp_path / "worker.json") as f:  # one worker: no rank prefix, beside metrics.jsonl
        assert json.load(f)["traceEvents"]


@pytest.mark.timeout(180)
def test_a_rec_without_an_index_gets_one_and_each_epoch_its_own_order(digits_dir, tmp_path):
    from mxlaunch.trainer.config import FitConfig
    from mxlaunch.trainer.data import FixedBatches, Shard, epoch_seed, train_iter
    from mxlaunch.trainer.index import training_index

    rec, blocked = tmp_path / "plain" / "train.rec", tmp_path / "blocked" / "train.rec"
    for path in (rec, blocked):
        path.parent.mkdir()
        shutil.copy(os.path.join(digits_dir, "digits_train.rec"), path)
    (tmp_path / "blocked" / "train.idx").mkdir()  # a directory that cannot hold the index: its name is taken
    test_io = digits(digits_dir, "--test-io", 1, "--num-examples", 160, val=False)[2:]
    plain, elsewhere = run_trainers(["fit", *test_io, "--data-train", rec], ["fit", *test_io, "--data-train", blocked])
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert f"{rec} has no index: wrote {tmp_path / 'plain' / 'train.idx'} (1438 records), so that every epoch is " \
           f"shuffled" in plain.stderr
    assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
    assert re.search(rf"{re.escape(str(blocked))} has no index and its directory cannot hold one \(.+\): built one "
                     rf"for this run in \S+train.idx \(1438 records\)", elsewhere.stderr), elsewhere.stderr[-2000:]

    cfg = FitConfig(str(rec), image_shape=(3, 28, 28), pad_size=0, batch_size=1438)
    index = training_index(str(rec), "")
    data = FixedBatches(lambda e: train_iter(cfg, index, Shard(), threads=1, seed=epoch_seed(0, 0, e)), 1)
    first, second = ([b.label[0].asnumpy().copy() for b in data.epoch(e)][0] for e in (0, 1))
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


@pytest.mark.timeout(180)
def test_load_epoch_0_resumes_from_prefix_0000_and_keeps_another_runs_records(digits_dir, tmp_path):
    import mxnet as mx

    from mxlaunch.trainer.networks import get_symbol

    symbol = get_symbol("resnet", 8, 10, (3, 28, 28))
    module = mx.mod.Module(symbol, context=mx.cpu())
    module.bind(data_shapes=[("data", (1, 3, 28, 28))], label_shapes=[("softmax_label", (1,))], for_training=False)
    module.init_params(mx.init.Xavier())
    args, aux = module.get_params()
    mx.model.save_checkpoint(str(tmp_path / "b"), 0, symbol, args, aux)  # as the post's resnext-101-0000
    earlier = '{"epoch": 0, "train-accuracy": 0.5, "by": "another run into this directory"}\n'
    (tmp_path / "metrics.jsonl").write_text(earlier)

    # --load-epoch 0000 with no learning rate: PREFIX-0000's weights come back unchanged (MXNet loads it too)
    result = run_trainer("fit", *digits(digits_dir, "--num-examples", 32, "--num-epochs", 1), "--load-epoch", "0000",
                         "--lr", 0, "--mom", 0, "--wd", 0, "--model-prefix", tmp_path / "b")
    assert result.returncode == 0, result.stderr[-2000:]
    _, resumed, _ = mx.model.load_checkpoint(str(tmp_path / "b"), 1)
    assert all(np.array_equal(resumed[k].asnumpy(), args[k].asnumpy()) for k in args)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines(keepends=True)
    assert lines[0] == earlier and [json.loads(line)["epoch"] for line in lines] == [0, 0]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_workers_with_2bit_gradient_compression_reach_97_percent(digits_dir, tmp_path):
    """The digits recipe of `make demo` (2 workers x batch 16, 1 server) with --gc-type 2bit, over 10 epochs
    (steps 6,9): 2-bit gradients learn slower, and the recipe's 7 validated 0.967."""
    run_dir = tmp_path / "run"
    command = fit_args(digits_dir, str(tmp_path / "ck" / "m"), 16, "--gc-type", "2bit", "--gc-threshold", 0.5,
                       "--num-epochs", 10, "--lr-step-epochs", "6,9")
    proc = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", "train", "--local", "-n", "2", "-s", "1",
                           "--run-dir", run_dir, "--", "trainer", *command], capture_output=True, text=True,
                          timeout=400, env=trainer_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == list(range(10))
    assert records[-1]["validation-accuracy"] >= 0.97, records[-1]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_each_role_writes_its_profile_into_the_run_directory(digits_dir, tmp_path):
    run_dir = tmp_path / "run"
    command = ["fit", *digits(digits_dir, "--num-examples", 64, "--num-epochs", 1, val=False),
               "--profile-worker-suffix", "worker.json", "--profile-server-suffix", "server.json"]
    proc = subprocess.run([sys.executable, "-m", "mxlaunch.launcher", "train", "--local", "-n", "2", "-s", "1",
                           "--run-dir", run_dir, "--", "trainer", *map(str, command)], capture_output=True,
                          text=True, timeout=200, env=trainer_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    for name in ("rank0_worker.json", "rank1_worker.json", "rank0_server.json"):
        with open(run_dir / name) as f:
            assert json.load(f)["traceEvents"], name


def test_rgb_mean_std_and_fill_value_reach_the_pixels_and_an_index_can_be_named(tmp_path):
    """common/data.py's normalization, (pixel - mean) / std per R, G, B, and --fill-value around the padded
    image; --data-train-idx names the index (one that is missing is refused)."""
    from mxlaunch.errors import UsageError
    from mxlaunch.trainer.config import FitConfig
    from mxlaunch.trainer.data import Shard, train_iter
    from mxlaunch.trainer.index import training_index
    from mxlaunch.trainer.records import encode_png, index_path, write_records

    rec = str(tmp_path / "flat.rec")
    write_records(rec, [(0, encode_png(np.full((4, 4, 3), (200, 100, 50), np.uint8)))])
    named = str(tmp_path / "named.idx")
    os.rename(index_path(rec), named)
    assert training_index(rec, named) == named
    with pytest.raises(UsageError, match="--data-train-idx .*missing.idx: no such file"):
        training_index(rec, str(tmp_path / "missing.idx"))
    cfg = FitConfig(rec, image_shape=(3, 8, 8), batch_size=1, pad_size=2, fill_value=30,
                    rgb_mean=(100.0, 50.0, 10.0), rgb_std=(2.0, 5.0, 10.0))
    image = train_iter(cfg, named, Shard(), threads=1, seed=0).next().data[0].asnumpy()[0]
    assert image[:, 4, 4].tolist() == [50.0, 10.0, 4.0]  # inside: (200-100)/2, (100-50)/5, (50-10)/10
    assert image[:, 0, 0].tolist() == [-35.0, -4.0, 2.0]  # the padding: (30-100)/2, (30-50)/5, (30-10)/10
