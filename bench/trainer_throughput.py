#!/usr/bin/env python3
"""Samples/sec of `trainer fit` against a bare MXNet Module loop: same network, batch, data and threads.

    .venv/bin/python bench/trainer_throughput.py [--network resnet --num-layers 20 --batch-size 128 --epochs 4]

Both do the same work per batch: a random 28x28 crop of the unpadded 32x32 digits, no mirror, no mean
subtracted, SGD with momentum 0.9 and wd 0.0001. The bare loop is the yardstick, so the trainer is told to do
what it does (`--random-crop 1 --rgb-mean 0,0,0`; its defaults are train_cifar10.py's centre crop and ImageNet
mean).
Both run in fresh processes, alternately, `--rounds` times; the first epoch of each run is warm-up and is not
counted. The ratio trainer/bare is the figure in docs/benchmarks.md (target >= 0.97).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

BARE_LOOP = r"""
import json, sys, time
import mxnet as mx
from mxlaunch.trainer.networks import get_symbol
cfg = json.loads(sys.argv[1])
shape = tuple(cfg["image_shape"])
source = mx.io.ImageRecordIter(path_imgrec=cfg["data"], path_imgidx=cfg["data"][:-4] + ".idx", data_shape=shape,
                               batch_size=cfg["batch_size"], shuffle=True, rand_crop=True, pad=0,
                               preprocess_threads=cfg["threads"], label_name="softmax_label", round_batch=True)
module = mx.mod.Module(get_symbol(cfg["network"], cfg["num_layers"], 10, shape), context=mx.cpu())
module.bind(data_shapes=source.provide_data, label_shapes=source.provide_label)
module.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
module.init_optimizer(kvstore="local", optimizer="sgd",
                      optimizer_params={"learning_rate": 0.05, "momentum": 0.9, "wd": 0.0001})
for epoch in range(cfg["epochs"]):
    tic = time.time()
    for _ in range(cfg["batches"]):
        try:
            batch = source.next()
        except StopIteration:
            source.reset()
            batch = source.next()
        module.forward_backward(batch)
        module.update()
    mx.nd.waitall()
    print(json.dumps({"epoch": epoch, "samples/sec": cfg["batches"] * cfg["batch_size"] / (time.time() - tic)}))
"""


def env() -> dict:
    threads = str(os.cpu_count() or 1)
    return dict(os.environ, OMP_NUM_THREADS=threads, PYTHONUNBUFFERED="1")


def run_trainer(args, data_dir, workdir) -> list:
    prefix = os.path.join(workdir, "bench")
    cmd = [sys.executable, "-m", "mxlaunch.trainer", "fit", "--network", args.network, "--num-layers", str(args.num_layers),
           "--data-train", os.path.join(data_dir, "digits_train.rec"), "--image-shape", args.image_shape,
           "--batch-size", str(args.batch_size), "--num-epochs", str(args.epochs), "--disp-batches", "0",
           "--data-nthreads", str(args.threads), "--model-prefix", prefix, "--save-period", str(args.epochs + 1),
           # the bare loop's work, whatever the trainer's defaults
           "--pad-size", "0", "--random-crop", "1", "--random-mirror", "0", "--rgb-mean", "0,0,0",
           "--lr", "0.05", "--mom", "0.9", "--wd", "0.0001"]
    subprocess.run(cmd, check=True, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
    with open(os.path.join(workdir, "metrics.jsonl")) as stream:
        return [json.loads(line)["samples/sec"] for line in stream][1:]


def run_bare(args, data_dir, batches) -> list:
    cfg = {"data": os.path.join(data_dir, "digits_train.rec"), "image_shape": [int(x) for x in args.image_shape.split(",")],
           "batch_size": args.batch_size, "network": args.network, "num_layers": args.num_layers,
           "epochs": args.epochs, "batches": batches, "threads": args.threads}
    out = subprocess.run([sys.executable, "-c", BARE_LOOP, json.dumps(cfg)], check=True, env=env(),
                         capture_output=True, text=True, timeout=1800).stdout
    return [json.loads(line)["samples/sec"] for line in out.splitlines() if line.startswith("{")][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", default="resnet")
    parser.add_argument("--num-layers", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-shape", default="3,28,28")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="decoding threads, both sides")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "digits")
        subprocess.run([sys.executable, "-m", "mxlaunch.trainer", "data", "digits", "--out", data_dir], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from mxlaunch.trainer.records import read_index_count
        from mxlaunch.trainer.schedule import updates_per_epoch

        batches = updates_per_epoch(read_index_count(os.path.join(data_dir, "digits_train.rec")), 1, args.batch_size)
        trainer_speeds, bare_speeds = [], []
        for round_ in range(args.rounds):
            workdir = os.path.join(tmp, f"run{round_}")
            os.makedirs(workdir)
            tic = time.time()
            trainer_speeds += run_trainer(args, data_dir, workdir)
            bare_speeds += run_bare(args, data_dir, batches)
            print(f"round {round_ + 1}/{args.rounds} done in {time.time() - tic:.0f} s", file=sys.stderr)
    trainer_rate, bare_rate = statistics.median(trainer_speeds), statistics.median(bare_speeds)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
          f"OMP_NUM_THREADS={env()['OMP_NUM_THREADS']}")
    print(f"{args.network}-{args.num_layers}, batch {args.batch_size}, {args.image_shape}, {batches} batches/epoch, "
          f"median of {len(trainer_speeds)} epochs each")
    print(f"| loop | samples/sec |\n|---|---|\n| bare MXNet Module | {bare_rate:.1f} |\n"
          f"| trainer fit | {trainer_rate:.1f} |\n| ratio | {trainer_rate / bare_rate:.3f} |")


if __name__ == "__main__":
    main()
