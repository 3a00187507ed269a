"""The training loop: MXNet Module, kvstore, step schedule, checkpoints, logs and metrics.

Log lines keep MXNet's formats so existing parsers keep working:
`Epoch[0] Batch [0-20]\tSpeed: ... samples/sec\taccuracy=...`, `Epoch[0] Train-accuracy=...`,
`Epoch[0] Time cost=...`, `Epoch[0] Validation-accuracy=...`.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from mxlaunch.errors import UsageError
from mxlaunch.files import OwnDirectory, UnsafeFile
from mxlaunch.trainer import model as checkpoints
from mxlaunch.trainer import optim, profiling, records, starting
from mxlaunch.trainer.config import FitConfig
from mxlaunch.trainer.data import FixedBatches, Shard, SyntheticBatches, epoch_seed, threads_for, train_iter, val_iter
from mxlaunch.trainer.evaluation import Metrics, evaluate, line, merge
from mxlaunch.trainer.index import training_index, validation_index
from mxlaunch.trainer.metrics_file import MetricsFile, default_path
from mxlaunch.trainer.schedule import IGNORES_LR, lr_at_epoch, updates_per_epoch
from mxlaunch.trainer.stop import StoppedForCheckpoint, StopRequest

log = logging.getLogger("trainer")


def contexts(gpus, cpus: int = 1) -> List:
    """The devices each batch is split over: `--gpus 0,1,...`, else `--cpus N` CPU contexts cpu(0)..cpu(N-1).

    MXNet treats cpu(0) and cpu(1) as distinct devices (one executor and one engine worker pool each), so
    several CPU contexts run the code path of several GPUs: batch split, per-device kvstore, merged checkpoints.
    """
    import mxnet as mx  # heavy

    if not gpus:
        return [mx.cpu(i) for i in range(cpus)]
    if not mx.runtime.Features().is_enabled("CUDA"):
        raise UsageError(f"--gpus {','.join(map(str, gpus))}: this MXNet build has no GPU support (the CPU wheel); "
                         f"install the gpu extra: pip install 'mxlaunch[gpu]'")
    available = mx.context.num_gpus()
    missing = [g for g in gpus if g >= available]
    if missing:
        raise UsageError(f"--gpus asks for GPU {missing[0]} but this machine has {available} GPU(s)")
    return [mx.gpu(g) for g in gpus]


def device_shares(module) -> List[int]:
    """Samples of each batch per device, in the contexts' order (how the module split the batch)."""
    return [out.shape[0] for out in module.get_outputs(merge_multi_context=False)[0]]


def check_prefix_writable(prefix: str) -> None:
    """Checkpoints can be written at `prefix`: proven by writing a file there now, not after an epoch."""
    directory = os.path.dirname(os.path.abspath(prefix))
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".trainer-write-check-"):
            pass
    except OSError as exc:
        raise UsageError(f"--model-prefix {prefix}: cannot write checkpoints in {directory} "
                         f"({exc.strerror or exc})") from exc


class _OnRequest:
    """Serves a stop request (trainer/stop.py) at a batch boundary or an epoch's end: rank 0 checkpoints (when it
    has a prefix) and stops; other ranks say the request is rank 0's and go on."""

    def __init__(self, request: StopRequest, rank: int, save):
        self.request, self.rank, self.save = request, rank, save  # save(epoch, batch=None) -> path; None: no prefix

    def _taken_by_rank_0(self, epoch: int, batch: int) -> bool:
        if not self.request.take():
            return False
        if self.rank != 0:
            log.info("Epoch[%d] Batch [%d] stop requested: that is for rank 0 (it checkpoints); going on", epoch, batch)
        return self.rank == 0

    def inside_epoch(self, epoch: int, batch: int) -> None:
        if self._taken_by_rank_0(epoch, batch):
            import mxnet as mx  # heavy

            mx.nd.waitall()  # as before an epoch's checkpoint: every update (and BatchNorm statistic) is in
            self._stop(epoch, batch, self.save(epoch, batch) if self.save else None)

    def at_epoch_end(self, epoch: int, batches: int, saved, complete: bool) -> None:
        """After epoch `epoch`'s record and its due checkpoint (`saved`: its path, or None when the save period
        skipped it, then it is written now). When training is complete there is nothing to stop: it ends as
        usual (status 0)."""
        if not self._taken_by_rank_0(epoch, batches):
            return
        path = saved or (self.save(epoch + 1) if self.save else None)
        if complete:
            log.info("Epoch[%d] Batch [%d] stop requested: training is complete%s", epoch, batches,
                     f" ({path} written)" if path else "")
            return
        self._stop(epoch, batches, path)

    @staticmethod
    def _stop(epoch: int, batch: int, path) -> None:
        if path:
            log.info("Epoch[%d] Batch [%d] checkpoint %s written on request; stopping", epoch, batch, path)
        else:
            log.info("Epoch[%d] Batch [%d] stop requested: no --model-prefix, so no checkpoint; stopping", epoch, batch)
        raise StoppedForCheckpoint()


@dataclass
class _Job:
    """One worker's part of the run, once its kvstore is connected."""

    cfg: FitConfig
    ctx: list
    start: checkpoints.Model
    kv: object  # the dist_* kvstore, else None (the module makes its own)
    kv_type: str
    rank: int
    num_workers: int
    epoch_updates: int

    @property
    def begin_epoch(self) -> int:
        return self.start.begin_epoch

    @property
    def begin_batch(self) -> int:
        return self.start.begin_batch


def _check_inputs(cfg: FitConfig) -> Optional[records.RecordSummary]:
    """Everything a typo can break, before MXNet starts: data files, the starting checkpoint, the optimizer."""
    summary = None
    if cfg.data_train and not cfg.benchmark:
        summary = records.summarize(cfg.data_train, "--data-train")
        records.check_image_shape(summary, cfg.image_shape, cfg.pad_size)
        records.check_labels(summary, cfg.num_classes)
    elif cfg.data_train:
        summary = records.summarize(cfg.data_train, "--data-train")
    if cfg.data_val and not cfg.benchmark:
        val_summary = records.summarize(cfg.data_val, "--data-val")
        records.check_image_shape(val_summary, cfg.image_shape, 0)
        records.check_labels(val_summary, cfg.num_classes)
    starting.check_files(cfg)
    optim.optimizer_class(cfg.optimizer)
    _check_checkpoint_directory(cfg.model_prefix)
    return summary


def _check_checkpoint_directory(prefix: Optional[str]) -> None:
    """Checkpoints go only where no other user can plant a link (files.Replacement): said now, not at the first
    checkpoint hours later."""
    directory = os.path.dirname(os.path.abspath(prefix)) if prefix else None
    if directory and os.path.isdir(directory):
        try:
            OwnDirectory(directory).close()
        except UnsafeFile as exc:
            raise UsageError(f"--model-prefix {prefix}: {exc.format_message()}") from None


def _connect(cfg: FitConfig, ctx: list, start: checkpoints.Model, summary, on_rank) -> Optional[_Job]:
    """Join the job (a dist_* kvstore connects here) and size its epochs; None when nothing is left to train."""
    import mxnet as mx  # heavy

    kv_type = cfg.resolved_kv_store()
    kv = mx.kv.create(kv_type) if kv_type.startswith("dist") else None
    if kv is not None and cfg.gc_type != "none":
        kv.set_gradient_compression({"type": cfg.gc_type, "threshold": cfg.gc_threshold})
    rank, num_workers = (kv.rank, kv.num_workers) if kv is not None else (0, 1)
    on_rank(rank)
    unused = starting.unused_architecture(cfg, start) if rank == 0 else None
    if unused:
        log.warning(unused)
    if cfg.model_prefix and rank == 0:  # only rank 0 writes checkpoints
        check_prefix_writable(cfg.model_prefix)
    if cfg.seed is not None:
        mx.random.seed(cfg.seed + rank)
    num_examples = cfg.num_examples or summary.count
    job = _Job(cfg, ctx, start, kv, kv_type, rank, num_workers, updates_per_epoch(num_examples, num_workers,
                                                                                  cfg.batch_size))
    if job.begin_batch >= job.epoch_updates:
        raise UsageError(f"--load-batch {job.begin_batch}: an epoch of this job has {job.epoch_updates} updates, so a "
                         f"checkpoint inside one is after batch 1..{job.epoch_updates - 1} (--num-examples, "
                         f"--batch-size and the number of workers must be those of the run that wrote it)")
    if job.begin_epoch >= cfg.num_epochs:
        log.info("nothing to do: the checkpoint has %d epochs and --num-epochs is %d", job.begin_epoch, cfg.num_epochs)
        return None
    log.info("rank %d of %d: %d examples, %d updates (global batches of %d x %d) per epoch, epochs %d..%d%s",
             rank, num_workers, num_examples, job.epoch_updates, num_workers, cfg.batch_size, job.begin_epoch,
             cfg.num_epochs - 1, f" (epoch {job.begin_epoch} from batch {job.begin_batch})" if job.begin_batch else "")
    return job


def _data(job: _Job):
    """(training batches, a maker of validation iterators or None)."""
    cfg, rank = job.cfg, job.rank
    threads = threads_for(cfg.data_nthreads)
    if cfg.benchmark:
        synthetic = SyntheticBatches(cfg, epoch_seed(cfg.seed or 0, rank, 0))
        log.info("--benchmark 1: synthetic data (%s), no files read", "x".join(map(str, cfg.image_shape)))
        return FixedBatches(lambda epoch: synthetic, job.epoch_updates, first_epoch=job.begin_epoch), None
    index, shard = training_index(cfg.data_train, cfg.data_train_idx), Shard(rank, job.num_workers)
    train = FixedBatches(lambda epoch: train_iter(cfg, index, shard, threads, epoch_seed(cfg.seed or 0, rank, epoch)),
                         job.epoch_updates, first_epoch=job.begin_epoch)
    if not cfg.data_val:
        return train, None
    val_idx = validation_index(cfg.data_val, cfg.data_val_idx)
    return train, lambda: val_iter(cfg, val_idx, threads)


def _test_io(job: _Job, train: FixedBatches) -> None:
    """common/fit.py's --test-io 1: one epoch of training data read and waited for, its speed logged; no training."""
    cfg = job.cfg
    tic = time.time()
    for i, batch in enumerate(train.epoch(job.begin_epoch)):
        for array in batch.data:
            array.wait_to_read()
        if cfg.disp_batches and (i + 1) % cfg.disp_batches == 0:
            log.info("Batch [%d]\tSpeed: %.2f samples/sec", i, cfg.disp_batches * cfg.batch_size / (time.time() - tic))
            tic = time.time()
    log.info("--test-io 1: read %d batches of epoch %d; no training", train.batches_per_epoch, job.begin_epoch)


def _module(job: _Job, train: FixedBatches):
    """The bound module with its parameters and optimizer (and, resumed alone, the optimizer's saved state)."""
    import mxnet as mx  # heavy

    cfg, start = job.cfg, job.start
    compression = ({"type": cfg.gc_type, "threshold": cfg.gc_threshold}
                   if cfg.gc_type != "none" and job.kv is None else None)
    module = mx.mod.Module(start.symbol, context=job.ctx, compression_params=compression)
    module.bind(data_shapes=train.provide_data, label_shapes=train.provide_label)
    module.init_params(optim.initializer(cfg), arg_params=start.arg_params, aux_params=start.aux_params,
                       allow_missing=start.arg_params is not None)
    params = optim.optimizer_params(cfg, job.epoch_updates, job.num_workers, job.begin_epoch, job.begin_batch)
    optimizer = cfg.optimizer
    if cfg.optimizer in optim.HAS_WARMUP and (job.begin_epoch or job.begin_batch):
        optimizer, params = optim.create(module, cfg, params, job.kv, job.begin_batch), {}
    module.init_optimizer(kvstore=job.kv if job.kv is not None else job.kv_type, optimizer=optimizer,
                          optimizer_params=params)
    log.info("kvstore %s; batches of %d split over %s (%s samples)", job.kv_type, cfg.batch_size,
             ", ".join(map(str, job.ctx)), "+".join(map(str, device_shares(module))))
    states = (checkpoints.states_path(cfg.model_prefix, job.begin_epoch, job.begin_batch)
              if cfg.model_prefix else None)
    if job.kv is None and (job.begin_epoch or job.begin_batch) and states and os.path.isfile(states):
        checkpoints.load_optimizer_states(states, module, len(job.ctx))
    return module


def updater(module, compressed: bool) -> Callable[[], None]:
    """module.update, except with gradient compression: MXNet 1.9's Module updates through the kvstore's
    pushpull, which refuses compression ("Compression not supported with PushPull"); a push then a pull, as
    MXNet 1.5's Module did, sends the compressed gradients."""
    if not (compressed and module._update_on_kvstore):
        return module.update

    def push_then_pull() -> None:
        module._params_dirty = True
        group, kvstore = module._exec_group, module._kvstore
        for index, (weights, grads) in enumerate(zip(group.param_arrays, group.grad_arrays)):
            if grads[0] is None:
                continue
            kvstore.push(group.param_names[index], grads, priority=-index)
            kvstore.pull(group.param_names[index], out=weights, priority=-index)

    return push_then_pull


def _monitor(cfg: FitConfig, module):
    """common/fit.py's --monitor N: statistics of every array every N batches."""
    if not cfg.monitor:
        return None
    import mxnet as mx  # heavy

    monitor = mx.mon.Monitor(cfg.monitor, pattern=".*")
    module.install_monitor(monitor)
    return monitor


def _train_epoch(module, train: FixedBatches, epoch: int, cfg: FitConfig, skip: int = 0,
                 at_boundary=lambda batch: None, monitor=None):
    """One epoch of forward, backward and update after its first `skip` batches (a resume inside the epoch);
    `at_boundary(b)` runs after every batch b but the last. Returns ({metric: value}, batches, seconds)."""
    import mxnet as mx  # heavy

    tic = window_tic = time.time()
    window, epoch_values, epoch_count = Metrics(cfg.top_k, cfg.loss), {}, 0
    update = updater(module, cfg.gc_type != "none")
    for nbatch, batch in enumerate(train.epoch(epoch, skip), start=skip + 1):
        if monitor is not None:
            monitor.tic()
        module.forward_backward(batch)
        update()
        window.update(module.get_outputs(merge_multi_context=False)[0], batch.label[0])
        if monitor is not None:
            monitor.toc_print()
        if cfg.disp_batches and nbatch % cfg.disp_batches == 0:
            values, count = window.take()
            epoch_values, epoch_count = merge(epoch_values, epoch_count, values, count)
            log.info("Epoch[%d] Batch [%d-%d]\tSpeed: %.2f samples/sec%s", epoch, max(nbatch - cfg.disp_batches, skip),
                     nbatch, count / (time.time() - window_tic), line(values))
            window_tic = time.time()
        if nbatch < train.batches_per_epoch:
            at_boundary(nbatch)
    # MKL-DNN's BatchNorm writes its moving statistics outside the engine's dependency tracking: with
    # several engine threads a checkpoint taken now could miss the last batches' statistics.
    mx.nd.waitall()
    values, count = window.take()
    if count:
        epoch_values, epoch_count = merge(epoch_values, epoch_count, values, count)
    return epoch_values, train.batches_per_epoch - skip, time.time() - tic


def _epoch_lr(job: _Job, module, epoch: int) -> Optional[float]:
    cfg = job.cfg
    if cfg.optimizer in IGNORES_LR:
        return None
    if job.kv is None:  # the optimizer runs here: the rate it actually used
        return module._optimizer.learning_rate
    return lr_at_epoch(cfg.lr, cfg.lr_factor, cfg.lr_step_epochs, epoch, cfg.lr_power, job.epoch_updates,
                       cfg.num_epochs)


def _epochs(job: _Job, module, train: FixedBatches, make_val, on_request: "_OnRequest", save) -> None:
    """Every epoch from the run's start: train, log, record in metrics.jsonl, validate and checkpoint (rank 0)."""
    cfg, rank = job.cfg, job.rank
    metrics = MetricsFile(default_path(cfg.model_prefix) if rank == 0 else None, job.begin_epoch)
    monitor = _monitor(cfg, module)
    previous_lr = None
    for epoch in range(job.begin_epoch, cfg.num_epochs):
        lr = None if cfg.optimizer in IGNORES_LR else lr_at_epoch(
            cfg.lr, cfg.lr_factor, cfg.lr_step_epochs, epoch, cfg.lr_power, job.epoch_updates, cfg.num_epochs)
        if lr is not None and lr != previous_lr and cfg.lr_power is None:
            log.info("Epoch[%d] Learning rate=%g", epoch, lr)
        previous_lr = lr
        skip = job.begin_batch if epoch == job.begin_epoch else 0
        values, batches, seconds = _train_epoch(module, train, epoch, cfg, skip,
                                                lambda batch: on_request.inside_epoch(epoch, batch), monitor)
        for name, value in values.items():
            log.info("Epoch[%d] Train-%s=%f", epoch, name, value)
        log.info("Epoch[%d] Time cost=%.3f", epoch, seconds)
        record = {"epoch": epoch, "lr": _epoch_lr(job, module, epoch),
                  **{f"train-{name}": value for name, value in values.items()},
                  "samples/sec": batches * cfg.batch_size / seconds, "seconds": seconds}
        done = epoch + 1
        # a stop already asked for: the checkpoint first (the launcher waits a bounded time, and validating a
        # large set could outlast it); the epoch's record then has no validation metrics
        stopping = rank == 0 and on_request.request.pending and done < cfg.num_epochs
        if make_val is not None and rank == 0 and not stopping:
            for name, value in evaluate(module, make_val, cfg.top_k, cfg.loss).items():
                log.info("Epoch[%d] Validation-%s=%f", epoch, name, value)
                record[f"validation-{name}"] = value
        elif make_val is not None and stopping:
            log.info("Epoch[%d] validation skipped: a stop was requested, the checkpoint comes first", epoch)
        # the epoch's record before its checkpoint: a resume from checkpoint N drops records >= N, so the
        # record of every epoch a checkpoint covers is already in metrics.jsonl (none is ever missing)
        metrics.append(record)
        saved = None
        if cfg.model_prefix and rank == 0 and (done % cfg.save_period == 0 or done == cfg.num_epochs):
            saved = save(done)
        on_request.at_epoch_end(epoch, job.epoch_updates, saved, complete=done == cfg.num_epochs)


def _saver(job: _Job, module) -> Optional[Callable]:
    """save(epoch, batch=None) -> the params file written; None without --model-prefix."""
    prefix = job.cfg.model_prefix
    if not prefix:
        return None

    def save(epoch: int, batch: Optional[int] = None) -> str:
        path = checkpoints.save_checkpoint(prefix, epoch, module, len(job.ctx) if job.kv is None else None, batch)
        checkpoints.prune_mid_epoch(prefix, epoch, batch or 0)  # the older mid-epoch ones: dead weight
        checkpoints.sweep_unfinished(prefix)  # and what writers killed mid-save left
        return path

    return save


def run(cfg: FitConfig, on_rank=lambda rank: None, stop: Optional[StopRequest] = None) -> None:
    """Train: alone, or as one worker of a dist_* job (then the kvstore connects after the input checks).

    `stop` is set by SIGUSR1 (trainer/stop.py): served at the next batch boundary, where rank 0 checkpoints and
    raises StoppedForCheckpoint."""
    summary = _check_inputs(cfg)  # cheapest first: a typo costs the user a second, not an MXNet start
    ctx = contexts(cfg.gpus, cfg.cpus)
    job = _connect(cfg, ctx, starting.initial_model(cfg), summary, on_rank)
    if job is None:
        return
    train, make_val = _data(job)
    if cfg.test_io:
        _test_io(job, train)
        return
    module = _module(job, train)
    directory = os.path.dirname(default_path(cfg.model_prefix) or "") or None
    profiles = profiling.start(cfg.profile_worker_suffix, cfg.profile_server_suffix, job.rank, job.num_workers,
                               directory)
    save = _saver(job, module)
    _epochs(job, module, train, make_val, _OnRequest(stop or StopRequest(), job.rank, save), save)
    profiles.stop()
