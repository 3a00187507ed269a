"""Training and validation batches from `.rec` files through MXNet's `ImageRecordIter`.

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
  thread, and records go to whichever thread is free). `shuffle_chunk_seed` only matters without an `.idx`.
- Validation counts every real sample exactly once: the padding of the last batch is cut off, and
  the iterator is made anew for every pass (with `round_batch`, a reset iterator starts after the
  samples it borrowed to fill the previous last batch, so a reused one skips them).
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple

from mxlaunch.trainer.records import DataError, index_path


def _mxnet_reason(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    return reason[len("MXNetError:"):].strip() if reason.startswith("MXNetError:") else reason


class _Guarded:
    """An MXNet data iterator whose C++ failures become one `DataError` line naming the file."""

    def __init__(self, path: str, make):
        import mxnet as mx

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
class Augmentation:
    pad_size: int = 0
    random_crop: bool = False
    random_mirror: bool = False


@dataclass(frozen=True)
class Shard:
    """Which part of the training records this worker reads (kvstore rank of num_workers)."""

    index: int = 0
    count: int = 1


def _record_iter(path: str, image_shape, batch_size: int, **options):
    import mxnet as mx

    idx = index_path(path)
    if os.path.isfile(idx):  # with an index, shards split by record count rather than by bytes
        options["path_imgidx"] = idx
    else:
        options.pop("shuffle", None)  # MXNet can only shuffle with an index
    return _Guarded(path, lambda: mx.io.ImageRecordIter(
        path_imgrec=path, data_shape=tuple(image_shape), batch_size=batch_size, label_name="softmax_label",
        round_batch=True, **options))


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of one rank's iterator for one epoch (a non-negative int32, as MXNet's parameter takes)."""
    return zlib.crc32(f"{seed}/{rank}/{epoch}".encode()) & 0x7FFFFFFF


def train_iter(path: str, image_shape, batch_size: int, shard: Shard, augmentation: Augmentation,
               threads: int = 4, seed: int = 0, shuffle: bool = True):
    return _record_iter(
        path, image_shape, batch_size,
        num_parts=shard.count, part_index=shard.index,
        shuffle=shuffle, seed=seed, shuffle_chunk_seed=seed, seed_aug=seed,
        pad=augmentation.pad_size, fill_value=0,
        rand_crop=augmentation.random_crop, rand_mirror=augmentation.random_mirror,
        preprocess_threads=threads,
    )


def val_iter(path: str, image_shape, batch_size: int, threads: int = 4):
    """Centre crop, no augmentation, every record once (see `real_batches`)."""
    return _record_iter(path, image_shape, batch_size, preprocess_threads=threads)


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
