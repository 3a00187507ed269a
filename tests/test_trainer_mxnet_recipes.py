"""The post's two experiments as written: from their own command lines the trainer builds the optimizer, the
learning-rate schedule and the data iterators MXNet's fine-tune.py / train_cifar10.py build over common/fit.py
and common/data.py, on 1 and 2 workers and on a resume at epoch 100; LBSGD's warm-up continues exactly on a
resume inside an epoch.

MXNet's values: tests/data/trainer_mxnet19_post.json (its `lines` name the statements that built them)."""
from __future__ import annotations

import json
import os
import shlex

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
POST = json.load(open(os.path.join(HERE, "data", "trainer_mxnet19_post.json")))
NETWORKS = json.load(open(os.path.join(HERE, "data", "trainer_mxnet19_networks.json")))["networks"]
SCRIPTS = {"fine-tune.py": "fine-tune", "train_cifar10.py": "fit"}
# keys the trainer adds to MXNet's ImageRecordIter arguments: each epoch's order and augmentation from
# (seed, rank, epoch), and a last batch filled from the start (then cut off in validation)
ADDED = {"seed", "shuffle_chunk_seed", "seed_aug", "round_batch"}


def trainer_config(experiment: str):
    from mxlaunch.trainer.contract import fit_config

    script, *words = shlex.split(POST["commands"][experiment])
    return fit_config([SCRIPTS[script], *words])


def scheduler_of(params: dict):
    scheduler = params.get("lr_scheduler")
    if scheduler is None:
        return None
    return {"class": type(scheduler).__name__, "base_lr": scheduler.base_lr, "step": list(scheduler.step),
            "factor": scheduler.factor}


@pytest.mark.parametrize("experiment", ["fine-tune", "adadelta"])
@pytest.mark.parametrize("workers", [1, 2])
def test_the_optimizer_and_its_schedule_are_mxnets(experiment, workers):
    from mxlaunch.trainer.optim import optimizer_params
    from mxlaunch.trainer.schedule import updates_per_epoch

    mxnet = POST["built"][f"{experiment}/{workers}"]
    cfg = trainer_config(experiment)
    epoch_updates = updates_per_epoch(cfg.num_examples, workers, cfg.batch_size)
    assert epoch_updates == mxnet["epoch_size"]
    assert cfg.optimizer == mxnet["optimizer"]
    params = optimizer_params(cfg, epoch_updates, workers)
    expected = dict(mxnet["optimizer_params"])
    assert scheduler_of(params) == expected.pop("lr_scheduler")
    assert params.pop("begin_num_update") == 0  # the trainer's: where a resumed run's schedule is
    params.pop("lr_scheduler")
    assert params == pytest.approx(expected)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_fine_tune_rate_of_every_epoch_is_mxnets_also_after_a_resume_at_epoch_100(workers):
    """MXNet's resume shifts its steps and pre-multiplies the rate; the trainer's counts absolute updates from
    begin_num_update: the rate of every epoch is the same."""
    from mxlaunch.trainer.optim import optimizer_params

    mxnet = POST["built"][f"fine-tune/{workers}"]
    cfg = trainer_config("fine-tune")
    size = mxnet["epoch_size"]
    for begin, rates in ((0, mxnet["lr_per_epoch"]), (100, mxnet["resume_100"]["lr_per_epoch"])):
        params = optimizer_params(cfg, size, workers, begin_epoch=begin)
        assert params["begin_num_update"] == begin * size
        scheduler = params["lr_scheduler"]
        assert [scheduler(epoch * size + 1) for epoch in range(begin, cfg.num_epochs)] == pytest.approx(rates)
    assert mxnet["lr_per_epoch"][24:26] == pytest.approx([0.05, 0.045])  # the first step, at epoch 25


@pytest.mark.parametrize("experiment", ["fine-tune", "adadelta"])
@pytest.mark.parametrize("workers", [1, 2])
def test_the_data_iterators_are_mxnets(experiment, workers):
    from mxlaunch.trainer.data import Shard, train_params, val_params

    mxnet_train, mxnet_val = POST["built"][f"{experiment}/{workers}"]["iterators"]
    cfg = trainer_config(experiment)
    train = train_params(cfg, "cifar10_train.idx", Shard(0, workers), threads=4, seed=7)
    val = val_params(cfg, "", threads=4)
    # MXNet passes an empty index (its CIFAR-10 files had none: no shuffle); the trainer the one it found or built
    assert (mxnet_train.pop("path_imgidx"), train.pop("path_imgidx")) == ("", "cifar10_train.idx")
    assert set(train) - set(mxnet_train) == ADDED
    assert {k: v for k, v in train.items() if k not in ADDED} == normalized(mxnet_train)
    # MXNet shards validation over the workers (each reports its part); the trainer's rank 0 validates it all
    assert (mxnet_val.pop("num_parts"), mxnet_val.pop("part_index"), val.pop("num_parts"), val.pop("part_index")) == \
        (workers, 0, 1, 0)
    assert set(val) - set(mxnet_val) == {"round_batch"}
    assert {k: v for k, v in val.items() if k != "round_batch"} == normalized(mxnet_val)


def normalized(kwargs: dict) -> dict:
    """JSON made MXNet's tuple a list; MXNet's int flags are the trainer's booleans."""
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()}


def test_the_adadelta_network_is_the_trainers_resnext101_where_mxnet_refuses_it():
    from mxlaunch.trainer import networks

    cfg = trainer_config("adadelta")
    assert (cfg.network, cfg.num_layers, cfg.image_shape) == ("resnext", 101, (3, 28, 28))
    assert "refused" in NETWORKS["resnext-101@28"]
    form = networks.check(cfg.network, cfg.num_layers, cfg.image_shape)
    assert not form.mxnet and form.units == (3, 4, 23, 3) and form.small_stem


def _lbsgd_run(updates, resume_at=None, forget=False, per_epoch=4):
    """A linear model trained by LBSGD (warm-up over 2 epochs of 4 updates, gradients of 2 batches per update):
    `updates` updates straight, or resumed from its weights after `resume_at` updates as the trainer resumes
    (`forget`: as if from the start of training, the warm-up begun again)."""
    import mxnet as mx

    from mxlaunch.trainer.config import FitConfig
    from mxlaunch.trainer.optim import create, optimizer_params

    cfg = FitConfig("x.rec", optimizer="lbsgd", lr=0.1, mom=0.0, wd=0.0, batch_size=4, macrobatch_size=8,
                    warmup_epochs=2, num_epochs=3, lr_step_epochs=())
    symbol = mx.sym.LinearRegressionOutput(mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=1, name="fc"),
                                           name="softmax")
    rng = np.random.RandomState(0)
    batches = [mx.io.DataBatch([mx.nd.array(rng.rand(4, 3))], [mx.nd.array(rng.rand(4))]) for _ in range(updates)]
    weights = {"fc_weight": mx.nd.array([[0.1, -0.2, 0.3]]), "fc_bias": mx.nd.zeros(1)}
    start = 0
    for stop in ([resume_at, updates] if resume_at else [updates]):
        module = mx.mod.Module(symbol, context=mx.cpu(), label_names=["softmax_label"])
        module.bind(data_shapes=[("data", (4, 3))], label_shapes=[("softmax_label", (4,))])
        module.init_params(arg_params=weights, aux_params={})
        epoch, batch = divmod(0 if forget else start, per_epoch)
        params = optimizer_params(cfg, per_epoch, 1, epoch, batch)
        module.init_optimizer(kvstore="local", optimizer=create(module, cfg, params, None, batch))
        for data in batches[start:stop]:
            module.forward_backward(data)
            module.update()
        weights, _ = module.get_params()
        start = stop
    return weights["fc_weight"].asnumpy()


def test_lbsgd_warm_up_continues_exactly_when_resumed_inside_an_epoch():
    straight = _lbsgd_run(10)
    assert np.array_equal(_lbsgd_run(10, resume_at=6), straight)  # inside epoch 1, at a macro-batch boundary
    assert np.array_equal(_lbsgd_run(10, resume_at=4), straight)  # at the start of epoch 1
    assert not np.array_equal(_lbsgd_run(10, resume_at=6, forget=True), straight)  # where the count matters
