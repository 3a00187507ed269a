"""Training and validation batches from `.rec` files through MXNet's `ImageRecordIter`, with the arguments
common/data.py's get_rec_iter gives it (normalization, padding, every augmentation), or synthetic ones
(--benchmark 1).

Three defects of MXNet's example scripts are fixed here:
- Under `dist_sync` every worker must run the same number of batches per epoch, or the job hangs at
  the epoch end (MXNet issue 9611). `FixedBatches` runs exactly `updates_per_epoch` batches per epoch
  on every worker, whatever the size of its shard.
- An epoch's batches are a pure function of (seed, rank, epoch), whatever epoch the process began with, so
  that a run resumed inside an epoch (`--load-batch B`) skips exactly the B batches the interrupted run
  trained. One iterator reset between epochs cannot give that: its `seed` seeds one shuffle generator that
  every reset draws on again, so epoch E's order depends on how many epochs the process ran before it.
  Each epoch gets a fresh iterator with a seed of its own; its `seed_aug` makes the augmentation (crops,
  mirrors) independent of `--data-nthreads` too (MXNet otherwise draws from one generator per decoding
  thread, and records go to whichever thread is free). Shuffling needs an `.idx` (trainer/index.py makes one).
- Validation counts every real sample exactly once: the padding of the last batch is cut off, and
  the iterator is made anew for every pass (with `round_batch`, a reset iterator starts after the
  samples it borrowed to fill the previous last batch, so a reused one skips them).
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

from mxlaunch.trainer.records import DataError


def _mxnet_reason(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    return reason[len("MXNetError:"):].strip() if reason.startswith("MXNetError:") else reason


class _Guarded:
    """An MXNet data iterator whose C++ failures become one `DataError` line naming the file."""

    def __init__(self, path: str, make):
        import mxnet as mx  # heavy

        self.path, self._mxnet_error = path, mx.base.MXNetError
        self.inner = self._call(make)  # the first batch is read here already
        self.provide_data, self.provide_label = self.inner.provide_data, self.inner.provide_label
        self.batch_size = self.inner.batch_size

    def _call(self, function):
        try:
            return function()
        except self._mxnet_error as exc:
            raise DataError(f"{self.path}: cannot read a record (corrupt file or undecodable image): "
                            f"{_mxnet_reason(exc)}") from exc

    def next(self):
        return self._call(self.inner.next)

    def reset(self):
        self._call(self.inner.reset)

    def __iter__(self):
        while True:
            try:
                yield self.next()
            except StopIteration:
                return


@dataclass(frozen=True)
class Shard:
    """Which part of the training records this worker reads (kvstore rank of num_workers)."""

    index: int = 0
    count: int = 1


def _normalization(cfg) -> dict:
    (mean_r, mean_g, mean_b), (std_r, std_g, std_b) = cfg.rgb_mean, cfg.rgb_std
    return {"mean_r": mean_r, "mean_g": mean_g, "mean_b": mean_b, "std_r": std_r, "std_g": std_g, "std_b": std_b}


def _common(cfg, path: str, index: str, threads: int) -> dict:
    return {"path_imgrec": path, "path_imgidx": index, "label_width": 1, **_normalization(cfg), "data_name": "data",
            "label_name": "softmax_label", "data_shape": tuple(cfg.image_shape), "batch_size": cfg.batch_size,
            "preprocess_threads": threads, "round_batch": True}


def train_params(cfg, index: str, shard: Shard, threads: int, seed: int) -> dict:
    """ImageRecordIter's arguments for one epoch of training: common/data.py's get_rec_iter (the same keys and
    values), plus the seeds that make the epoch's order and augmentation a function of (seed, rank, epoch)."""
    return {**_common(cfg, cfg.data_train, index, threads),
            "rand_crop": cfg.random_crop, "max_random_scale": cfg.max_random_scale, "pad": cfg.pad_size,
            "fill_value": cfg.fill_value, "random_resized_crop": cfg.random_resized_crop,
            "min_random_scale": cfg.min_random_scale, "max_aspect_ratio": cfg.max_random_aspect_ratio,
            "min_aspect_ratio": cfg.min_random_aspect_ratio, "max_random_area": cfg.max_random_area,
            "min_random_area": cfg.min_random_area, "min_crop_size": cfg.min_crop_size,
            "max_crop_size": cfg.max_crop_size, "brightness": cfg.brightness, "contrast": cfg.contrast,
            "saturation": cfg.saturation, "pca_noise": cfg.pca_noise, "random_h": cfg.max_random_h,
            "random_s": cfg.max_random_s, "random_l": cfg.max_random_l, "max_rotate_angle": cfg.max_random_rotate_angle,
            "max_shear_ratio": cfg.max_random_shear_ratio, "rand_mirror": cfg.random_mirror, "shuffle": True,
            "num_parts": shard.count, "part_index": shard.index,
            "seed": seed, "shuffle_chunk_seed": seed, "seed_aug": seed}


def val_params(cfg, index: str, threads: int) -> dict:
    """Validation: no augmentation, every record once (rank 0 reads the whole set; see `real_batches`)."""
    return {**_common(cfg, cfg.data_val, index, threads), "rand_crop": False, "rand_mirror": False,
            "num_parts": 1, "part_index": 0}


def _record_iter(params: dict):
    import mxnet as mx  # heavy

    params = {k: v for k, v in params.items() if v is not None}  # ImageRecordIter takes no None
    return _Guarded(params["path_imgrec"], lambda: mx.io.ImageRecordIter(**params))


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of one rank's iterator for one epoch (a non-negative int32, as MXNet's parameter takes)."""
    return zlib.crc32(f"{seed}/{rank}/{epoch}".encode()) & 0x7FFFFFFF


def train_iter(cfg, index: str, shard: Shard, threads: int, seed: int):
    return _record_iter(train_params(cfg, index, shard, threads, seed))


def val_iter(cfg, index: str, threads: int):
    return _record_iter(val_params(cfg, index, threads))


class SyntheticBatches:
    """common/data.py's SyntheticDataIter (--benchmark 1): one batch of uniform(-1, 1) images and random labels,
    drawn once and served every time: the network's speed without reading or decoding anything."""

    def __init__(self, cfg, seed: int):
        import mxnet as mx  # heavy
        import numpy as np  # heavy

        rng = np.random.RandomState(seed)
        shape = (cfg.batch_size,) + tuple(cfg.image_shape)
        self.batch_size = cfg.batch_size
        data = mx.nd.array(rng.uniform(-1, 1, shape), dtype="float32")
        label = mx.nd.array(rng.randint(0, cfg.num_classes, (cfg.batch_size,)), dtype="float32")
        self.provide_data = [mx.io.DataDesc("data", shape, "float32")]
        self.provide_label = [mx.io.DataDesc("softmax_label", (cfg.batch_size,), "float32")]
        self._batch = mx.io.DataBatch(data=[data], label=[label], pad=0, provide_data=self.provide_data,
                                      provide_label=self.provide_label)

    def next(self):
        return self._batch

    def reset(self) -> None:
        pass


class FixedBatches:
    """Exactly `batches_per_epoch` batches per epoch, each epoch read from its own iterator `make(epoch)`.

    A shard with fewer batches than the epoch needs wraps around to its start (as MXNet's own
    `round_batch` does for the last batch); one with more leaves its tail unread in that epoch (the next
    epoch's shuffle draws anew). The iterator of `first_epoch` is made at once: it gives the data shapes.
    """

    def __init__(self, make: Callable[[int], object], batches_per_epoch: int, first_epoch: int = 0):
        self._make, self._next = make, (first_epoch, make(first_epoch))
        self.batches_per_epoch = batches_per_epoch
        source = self._next[1]
        self.provide_data = source.provide_data
        self.provide_label = source.provide_label
        self.batch_size = source.batch_size

    def _source(self, epoch: int):
        made_for, source = self._next
        self._next = (None, None)  # one pass per iterator: an epoch read twice starts again from make()
        return source if made_for == epoch else self._make(epoch)

    def epoch(self, epoch: int = 0, skip: int = 0) -> Iterator:
        """The batches of `epoch` after its first `skip` (those are read, not returned: resuming inside it)."""
        source = self._source(epoch)
        for number in range(self.batches_per_epoch):
            try:
                batch = source.next()
            except StopIteration:
                source.reset()
                batch = source.next()
            if number >= skip:
                yield batch


def real_batches(make_iter) -> Iterator[Tuple[object, int]]:
    """(batch, number of real samples in it) for one pass over a fresh iterator from `make_iter()`."""
    source = make_iter()
    for batch in source:
        yield batch, source.batch_size - (batch.pad or 0)


def threads_for(requested: Optional[int]) -> int:
    return requested if requested else max(1, min(4, os.cpu_count() or 1))
