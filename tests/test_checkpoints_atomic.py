"""Checkpoints are never half-written (the trainer writes each file under a temporary name and renames it,
params last), and resume picks the newest whole one: a params file cut short is skipped for the previous
whole checkpoint, by --resume and by restarts alike (launcher/jobs/rundir.py, infra/transport/remote/checkpoint_scan.py)."""
import io
import os

import pytest

from mxlaunch.launcher.jobs import resume
from mxlaunch.launcher.jobs import checkpoints, rundir
from mxlaunch.launcher.jobs.checkpoints import Checkpoint
from mxlaunch.infra.transport.remote import checkpoint_scan as paramsfile
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.trainer import model


@pytest.fixture(scope="module")
def module():
    """A small bound MXNet module with an SGD optimizer (momentum: it has optimizer state)."""
    import mxnet as mx

    data = mx.sym.Variable("data")
    net = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(mx.sym.Flatten(data), num_hidden=3, name="fc"), name="softmax")
    mod = mx.mod.Module(net, context=mx.cpu())
    mod.bind(data_shapes=[("data", (2, 4))], label_shapes=[("softmax_label", (2,))])
    mod.init_params()
    mod.init_optimizer(optimizer="sgd", optimizer_params={"momentum": 0.9})
    return mod


def saved(tmp_path, module, epochs=(1, 2)):
    prefix = str(tmp_path / "ck" / "m")
    for epoch in epochs:
        model.save_checkpoint(prefix, epoch, module, states_devices=1)
    return prefix


def test_save_writes_mxnet_checkpoints_and_leaves_no_temporary_file(tmp_path, module):
    import mxnet as mx

    prefix = saved(tmp_path, module)
    assert sorted(os.listdir(tmp_path / "ck")) == ["m-0001.params", "m-0001.states", "m-0002.params",
                                                  "m-0002.states", "m-symbol.json"]
    _, args, _ = mx.model.load_checkpoint(prefix, 2)  # MXNet's own loader reads it
    assert set(args) == {"fc_weight", "fc_bias"}
    assert paramsfile.local_complete(model.params_path(prefix, 2))


def test_a_save_killed_before_its_rename_leaves_the_previous_files_whole(tmp_path, module, monkeypatch):
    prefix = saved(tmp_path, module, epochs=(1,))
    real_replace = os.replace

    def killed(src, dst):  # the writer dies once the params are written, before they are renamed
        if dst.endswith(".params"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        model.save_checkpoint(prefix, 2, module, states_devices=1)
    monkeypatch.undo()
    assert not os.path.exists(model.params_path(prefix, 2))  # no PREFIX-0002.params at all
    assert checkpoints.newest_local(prefix) == Checkpoint(1)


def test_the_params_check_accepts_mxnet_files_and_refuses_every_truncation(tmp_path, module):
    import mxnet as mx

    prefix = saved(tmp_path, module, epochs=(1,))
    mx.nd.save(str(tmp_path / "mixed.params"), {"a": mx.nd.ones((2, 3)), "b": mx.nd.zeros((4,), dtype="float16"),
                                               "c": mx.nd.ones((3,), dtype="int64")})
    for path in (model.params_path(prefix, 1), str(tmp_path / "mixed.params")):
        with open(path, "rb") as f:
            data = f.read()
        assert paramsfile.is_complete(io.BytesIO(data), len(data))
        assert not [n for n in range(len(data)) if paramsfile.is_complete(io.BytesIO(data[:n]), n)]
        assert not paramsfile.is_complete(io.BytesIO(data + b"\0"), len(data) + 1)
    assert not paramsfile.local_complete(str(tmp_path / "missing.params"))


def test_a_truncated_newest_checkpoint_is_skipped_for_the_previous_whole_one(tmp_path, module):
    prefix = saved(tmp_path, module, epochs=(1, 2, 3))
    newest = model.params_path(prefix, 3)
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) - 7)  # a writer that wrote in place and was killed
    with open(prefix + "-0004.params.tmp-123", "wb") as f:  # a killed writer's temporary file: never a checkpoint
        f.write(b"partial")
    assert checkpoints.newest_local(prefix) == Checkpoint(2)
    # --resume picks it too, and the trainer loads it
    spec = JobSpec(command=("trainer", "fit", "--data-train", "t.rec", "--model-prefix", "ck/m"), num_workers=1,
                   num_servers=1,
                   hosts=(Host.loopback(slots=1),), local=True)
    run_dir = str(tmp_path / "run")
    rundir.prepare(run_dir)
    rundir.write_plan_files(plan_job(spec, "j", run_dir, 20001), workdir=str(tmp_path))
    resumed, _ = resume.resume_spec(run_dir)
    assert resumed.command[-2:] == ("--load-epoch", "2")
    assert model.load_checkpoint(prefix, 2, "--load-epoch").begin_epoch == 2


def test_no_symbol_file_means_no_checkpoint(tmp_path, module):
    prefix = saved(tmp_path, module, epochs=(1,))
    os.remove(prefix + "-symbol.json")
    assert checkpoints.newest_local(prefix) is None


def test_metrics_of_a_killed_writer_keep_every_whole_epoch_before_the_resume(tmp_path):
    from mxlaunch.trainer.metrics_file import MetricsFile, read

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "lr": 0.')  # killed mid-line
    metrics = MetricsFile(str(path), begin_epoch=2)
    metrics.append({"epoch": 2, "lr": 0.1})
    assert read(str(path)) == [{"epoch": 0}, {"epoch": 1}, {"epoch": 2, "lr": 0.1}]
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]
