"""Several devices in one trainer: `--cpus N` runs the code path of `--gpus 0,...,N-1` on CPU contexts.

cpu(0), cpu(1) are distinct devices to MXNet (an executor and an engine worker pool each), so the batch
split, the per-device kvstore (`device` alone, `dist_sync` under the launcher), the training accuracy
counted on every device and the checkpoints of a multi-device module are tested here without a GPU.
Threads: two contexts x one OpenMP thread x one engine worker each keep a 2-core machine at two threads.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from conftest import run_trainer, trainer_env
from digits_recipe import EPOCHS, STEPS, fit_args, read_metrics
from testkit.jobs import read_log
from mxlaunch.trainer.config import FitConfig
from test_trainer_errors import assert_one_line_error, train_args

BATCH = 32  # the single-context recipe's batch: split 16+16 alone, 2 workers x (8+8) in the job
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1"}


# --- options -----------------------------------------------------------------------------------------

BAD_OPTIONS = [
    (["--gpus", "0", "--cpus", "2"], ["--gpus and --cpus exclude each other"]),
    (["--cpus", "2", "--batch-size", "1"], ["--batch-size 1 cannot be split over 2 devices"]),
    (["--cpus", "0"], ["--cpus"]),
    (["--gpus", "0,1,2,3"], ["no GPU support", "mxlaunch[gpu]"]),  # several GPUs on the CPU wheel: as one
]


@pytest.mark.parametrize("options, fragments", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_device_option(digits_dir, options, fragments):
    assert_one_line_error(run_trainer(*train_args(digits_dir, *options)), *fragments)


def test_kv_store_default_follows_the_device_count(monkeypatch):
    monkeypatch.delenv("DMLC_ROLE", raising=False)
    assert FitConfig("x.rec").resolved_kv_store() == "local"
    assert FitConfig("x.rec", cpus=2).resolved_kv_store() == "device"
    assert FitConfig("x.rec", gpus=(0, 1)).resolved_kv_store() == "device"
    assert FitConfig("x.rec", gpus=(3,)).resolved_kv_store() == "local"
    assert FitConfig("x.rec", cpus=2, kv_store="local").resolved_kv_store() == "local"
    monkeypatch.setenv("DMLC_ROLE", "worker")
    assert FitConfig("x.rec", cpus=2).resolved_kv_store() == "dist_sync"


def test_cpus_are_distinct_contexts():
    import mxnet as mx

    from mxlaunch.trainer.fit import contexts

    assert contexts(()) == [mx.cpu(0)]
    assert contexts((), 3) == [mx.cpu(0), mx.cpu(1), mx.cpu(2)]


# --- in process: what the trainer does with a multi-device module ---------------------------------------

def _module(symbol, devices, batch, features):
    import mxnet as mx

    module = mx.mod.Module(symbol, context=[mx.cpu(i) for i in range(devices)])
    module.bind(data_shapes=[("data", (batch, features))], label_shapes=[("softmax_label", (batch,))])
    return module


def test_training_accuracy_counts_the_samples_of_every_device():
    import mxnet as mx

    from mxlaunch.trainer.evaluation import Metrics
    from mxlaunch.trainer.fit import device_shares

    module = _module(mx.sym.SoftmaxOutput(mx.sym.var("data"), name="softmax"), 2, 6, 3)
    module.init_params()
    scores = np.eye(3)[[0, 1, 2, 0, 1, 2]]  # predicts 0,1,2,0,1,2
    labels = [0, 1, 2, 0, 0, 0]  # device 0's half all right, device 1's half one of three
    batch = mx.io.DataBatch([mx.nd.array(scores)], [mx.nd.array(labels)])
    module.forward(batch, is_train=False)
    assert device_shares(module) == [3, 3]
    metrics = Metrics()
    metrics.update(module.get_outputs(merge_multi_context=False)[0], batch.label[0])
    assert metrics.take() == ({"accuracy": 4 / 6}, 6)


@pytest.mark.parametrize("saved_on, resumed_on", [(2, 1), (1, 2), (2, 2)])
def test_optimizer_state_survives_a_change_of_device_count(tmp_path, saved_on, resumed_on):
    """A resumed module's next update equals the uninterrupted one's only if the momentum came along."""
    import mxnet as mx

    from mxlaunch.trainer import model as checkpoints

    symbol = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=3, name="fc"),
                                  name="softmax")
    rng = np.random.RandomState(0)
    batches = [mx.io.DataBatch([mx.nd.array(rng.rand(6, 4))], [mx.nd.array(rng.randint(0, 3, 6))])
               for _ in range(4)]

    def trainable(devices, arg_params=None):
        module = _module(symbol, devices, 6, 4)
        module.init_params(mx.init.Constant(0.1), arg_params=arg_params)
        module.init_optimizer(kvstore="device", optimizer="sgd",
                              optimizer_params={"learning_rate": 0.5, "momentum": 0.9})
        return module

    def step(module, batch):
        module.forward_backward(batch)
        module.update()

    uninterrupted = trainable(saved_on)
    for batch in batches[:3]:
        step(uninterrupted, batch)
    states = str(tmp_path / "m-0003.states")
    checkpoints.save_optimizer_states(states, uninterrupted, saved_on)
    resumed = trainable(resumed_on, {k: v.copy() for k, v in uninterrupted.get_params()[0].items()})
    checkpoints.load_optimizer_states(states, resumed, resumed_on)
    step(uninterrupted, batches[3])
    step(resumed, batches[3])
    expected = uninterrupted.get_params()[0]["fc_weight"].asnumpy()
    # without the momentum the two differ by about 0.09 here
    np.testing.assert_allclose(resumed.get_params()[0]["fc_weight"].asnumpy(), expected, atol=1e-5)


# --- digits on two CPU contexts: alone and as the workers of a dist_sync job ---------------------------

@pytest.fixture(scope="module")
def runs(digits_two_contexts, digits_job):
    """The session's run of the recipe on 2 CPU contexts alone (conftest.digits_two_contexts), and its
    `launch train --local -n 2 -s 1` job whose workers have 2 CPU contexts each (conftest.digits_job): both
    started with the session, in the background."""
    alone = digits_two_contexts.result(timeout=270)
    return {"alone": alone.prefix, "alone_log": alone.log, "job": digits_job["ckpt"], "run_dir": digits_job["run_dir"]}


@pytest.mark.slow
@pytest.mark.timeout(330)
def test_two_cpu_contexts_reach_97_percent_alone(runs):
    records = read_metrics(os.path.join(os.path.dirname(runs["alone"]), "metrics.jsonl"))
    assert [r["epoch"] for r in records] == list(range(EPOCHS))
    assert records[-1]["validation-accuracy"] >= 0.97, records[-1]
    assert records[-1]["train-accuracy"] >= 0.9, records[-1]  # counted over both devices' halves
    assert "kvstore device; batches of 32 split over cpu(0), cpu(1) (16+16 samples)" in runs["alone_log"]
    assert [r["lr"] for r in records] == pytest.approx([0.1 * 0.1 ** sum(e >= s for s in STEPS)
                                                        for e in range(EPOCHS)])


@pytest.mark.slow
@pytest.mark.timeout(330)
def test_workers_with_two_cpu_contexts_reach_97_percent_under_dist_sync(runs):
    records = read_metrics(os.path.join(runs["run_dir"], "metrics.jsonl"))
    assert [r["epoch"] for r in records] == list(range(EPOCHS))
    assert records[-1]["validation-accuracy"] >= 0.97, records[-1]
    for worker in ("worker-0", "worker-1"):
        text = read_log(runs["run_dir"], worker)
        assert "kvstore dist_sync; batches of 16 split over cpu(0), cpu(1) (8+8 samples)" in text, text[-2000:]
        assert "global batches of 2 x 16" in text


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["alone", "job"])
def test_checkpoint_of_a_multi_device_module_loads_and_classifies(runs, digits_dir, which):
    import mxnet as mx

    from mxlaunch.trainer.config import FitConfig
    from mxlaunch.trainer.data import val_iter
    from mxlaunch.trainer.evaluation import evaluate

    symbol, arg_params, aux_params = mx.model.load_checkpoint(runs[which], EPOCHS)
    assert arg_params["fc1_weight"].shape == (10, 64)
    module = mx.mod.Module(symbol, context=mx.cpu())
    cfg = FitConfig(data_val=os.path.join(digits_dir, "digits_val.rec"), image_shape=(3, 28, 28), batch_size=BATCH,
                    rgb_mean=(0.0, 0.0, 0.0))  # the recipe's
    make_val = lambda: val_iter(cfg, "", threads=1)  # noqa: E731
    probe = make_val()
    module.bind(data_shapes=probe.provide_data, label_shapes=probe.provide_label, for_training=False)
    module.set_params(arg_params, aux_params)
    assert evaluate(module, make_val)["accuracy"] >= 0.97  # one device, the parameters averaged over the job's devices


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("cpus", [2, 1])
def test_resume_from_a_two_context_checkpoint(runs, digits_dir, tmp_path, cpus):
    """On the same number of contexts, and on one (the optimizer state is kept by parameter name)."""
    resume_at = EPOCHS - 1
    copy = str(tmp_path / "d")
    for suffix in ("-symbol.json", "-%04d.params" % resume_at, "-%04d.states" % resume_at):
        shutil.copy(runs["alone"] + suffix, copy + suffix)
    result = run_trainer(*fit_args(digits_dir, copy, BATCH, "--cpus", cpus, "--load-epoch", resume_at),
                         env=trainer_env(**ONE_THREAD), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [resume_at]
    assert records[0]["lr"] == pytest.approx(0.001)
    assert records[0]["validation-accuracy"] >= 0.97, records[0]
    assert os.path.isfile("%s-%04d.params" % (copy, EPOCHS))
