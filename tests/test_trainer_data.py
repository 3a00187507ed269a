"""Data: digits and CIFAR-10 conversion, worker shards, and validation that counts every sample once."""
from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading

import numpy as np
import pytest

from conftest import run_trainer


def record_iter_pixels(path, shape=(3, 32, 32), batch_size=7):
    """Every image and label of a .rec as MXNet's own ImageRecordIter delivers them (the real consumer)."""
    import mxnet as mx

    source = mx.io.ImageRecordIter(path_imgrec=path, data_shape=shape, batch_size=batch_size, round_batch=True)
    images, labels = [], []
    for batch in source:
        real = batch_size - batch.pad
        images.append(batch.data[0].asnumpy()[:real])
        labels.append(batch.label[0].asnumpy()[:real])
    return np.concatenate(images), np.concatenate(labels)


def test_digits_are_real_handwritten_digits_at_cifar_size(digits_dir):
    from sklearn.datasets import load_digits

    train_x, train_y = record_iter_pixels(os.path.join(digits_dir, "digits_train.rec"))
    val_x, val_y = record_iter_pixels(os.path.join(digits_dir, "digits_val.rec"))
    assert len(train_y) + len(val_y) == len(load_digits().target) == 1797
    assert len(val_y) == 359 and train_x.shape[1:] == (3, 32, 32)
    assert set(np.unique(train_y)) == set(range(10)) and set(np.unique(val_y)) == set(range(10))
    assert np.bincount(np.concatenate([train_y, val_y]).astype(int)).tolist() == \
        np.bincount(load_digits().target).tolist()
    assert train_x.max() > 200 and (train_x[:, 0] == train_x[:, 2]).all()  # grey in three channels


def make_cifar_tarball(path, per_batch=4, test_count=5):
    """A small tarball in the official python-version format: data_batch_1..5, test_batch, batches.meta."""
    rng = np.random.RandomState(0)
    batches = {}
    with tarfile.open(path, "w:gz") as archive:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            count = test_count if name == "test_batch" else per_batch
            data = rng.randint(0, 256, size=(count, 3072), dtype=np.uint8)
            labels = rng.randint(0, 10, size=count).tolist()
            batches[name] = (data, labels)
            payload = pickle.dumps({b"data": data, b"labels": labels, b"batch_label": name.encode()})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        meta = pickle.dumps({b"label_names": [b"x"] * 10})
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        info.size = len(meta)
        archive.addfile(info, io.BytesIO(meta))
    return batches


def assert_round_trip(out, batches):
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("val", ["test_batch"])):
        expected = np.concatenate([batches[n][0] for n in names]).reshape(-1, 3, 32, 32)  # R, G, B planes
        labels = sum((batches[n][1] for n in names), [])
        images, got_labels = record_iter_pixels(os.path.join(out, f"cifar10_{split}.rec"))
        assert len(got_labels) == len(labels)
        assert got_labels.astype(int).tolist() == labels
        np.testing.assert_array_equal(images.astype(np.uint8), expected)
        with open(os.path.join(out, f"cifar10_{split}.idx")) as stream:
            assert len(stream.read().split("\n")) - 1 == len(labels)


def test_cifar10_conversion_round_trips_counts_labels_and_pixels(tmp_path):
    batches = make_cifar_tarball(tmp_path / "cifar-10-python.tar.gz")
    result = run_trainer("data", "cifar10", "--from", tmp_path / "cifar-10-python.tar.gz", "--unverified",
                         "--out", tmp_path / "out")  # a tarball of the official format, not the official one
    assert result.returncode == 0, result.stderr
    assert_round_trip(tmp_path / "out", batches)


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path on 127.0.0.1 (the only address a test may reach)."""
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=5)


def test_cifar10_download_is_checksum_verified(tmp_path, http_server):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    batches = make_cifar_tarball(tarball)
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    url = f"{http_server}/cifar-10-python.tar.gz"

    bad = run_trainer("data", "cifar10", "--url", url, "--md5", "0" * 32, "--out", tmp_path / "bad")
    assert bad.returncode == 2
    assert "corrupt" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad" / "cifar10_train.rec").exists()
    assert not list((tmp_path / "bad").glob("*.part"))

    good = run_trainer("data", "cifar10", "--url", url, "--md5", md5, "--out", tmp_path / "good")
    assert good.returncode == 0, good.stderr
    assert_round_trip(tmp_path / "good", batches)


@pytest.fixture(scope="module")
def numbered_records(tmp_path_factory):
    """101 records whose labels are their own ids, so that a shard's content can be read back."""
    from mxlaunch.trainer.records import encode_png, write_records

    path = str(tmp_path_factory.mktemp("numbered") / "numbered.rec")
    write_records(path, ((i, encode_png(np.full((8, 8, 3), i % 256, np.uint8))) for i in range(101)))
    return path


@pytest.mark.parametrize("workers", [2, 3])
def test_worker_shards_are_disjoint_cover_the_data_and_have_equal_batch_counts(numbered_records, workers):
    from mxlaunch.trainer.config import FitConfig
    from mxlaunch.trainer.data import FixedBatches, Shard, train_iter
    from mxlaunch.trainer.records import index_path
    from mxlaunch.trainer.schedule import updates_per_epoch

    batch_size = 8
    per_epoch = updates_per_epoch(101, workers, batch_size)
    seen, counts = [], []
    for rank in range(workers):
        cfg = FitConfig(data_train=numbered_records, image_shape=(3, 8, 8), batch_size=batch_size, pad_size=0)
        data = FixedBatches(lambda epoch: train_iter(cfg, index_path(numbered_records), Shard(rank, workers),
                                                     threads=1, seed=epoch), per_epoch)
        ids = set()
        for epoch in range(2):  # the second epoch sees the same shard again, the same number of batches
            batches = 0
            for batch in data.epoch(epoch):  # read each batch before the next reuses it
                ids |= {int(x) for x in batch.label[0].asnumpy()}
                batches += 1
            counts.append(batches)
        seen.append(ids)
    assert counts == [per_epoch] * (2 * workers)
    for i in range(workers):
        for j in range(i + 1, workers):
            assert not seen[i] & seen[j], f"workers {i} and {j} share records"
    assert set().union(*seen) == set(range(101))


def test_validation_accuracy_equals_numpy_on_the_models_own_predictions(digits_model, digits_dir):
    """Batch 32 does not divide the 359 validation images: the padding of the last batch must not count.
    The model is a checkpoint of the shared recipe run: the first one neither near chance nor perfect (the
    record of epoch e is made with checkpoint e + 1's parameters)."""
    import mxnet as mx

    from mxlaunch.trainer.records import iter_records

    logged = next(r for r in digits_model.metrics if 0.2 < r["validation-accuracy"] < 1.0)
    epoch = logged["epoch"] + 1

    labels, images = zip(*iter_records(os.path.join(digits_dir, "digits_val.rec")))
    crops = np.stack(images)[:, 2:30, 2:30, :].transpose(0, 3, 1, 2).astype(np.float32)  # centre 28x28, CHW
    symbol, arg_params, aux_params = mx.model.load_checkpoint(digits_model.prefix, epoch)
    module = mx.mod.Module(symbol, context=mx.cpu())
    module.bind(data_shapes=[("data", crops.shape)], label_shapes=[("softmax_label", (len(crops),))],
                for_training=False)
    module.set_params(arg_params, aux_params, allow_missing=False)
    module.forward(mx.io.DataBatch([mx.nd.array(crops)], [mx.nd.zeros(len(crops))]), is_train=False)
    predictions = module.get_outputs()[0].asnumpy().argmax(axis=1)
    expected = float((predictions == np.array(labels)).mean())
    # strictly between 0 and 1, counting the 25 padded samples would change the ratio (25 and 359 are coprime)
    assert 0.2 < expected < 1.0
    assert logged["validation-accuracy"] == pytest.approx(expected, abs=1e-12)
