"""The training loop: MXNet Module, kvstore, step schedule, checkpoints, logs and metrics.

Log lines keep MXNet's formats so existing parsers keep working:
`Epoch[0] Batch [0-20]\tSpeed: ... samples/sec\taccuracy=...`, `Epoch[0] Train-accuracy=...`,
`Epoch[0] Time cost=...`, `Epoch[0] Validation-accuracy=...`.
"""
from __future__ import annotations

import inspect
import logging
import os
import tempfile
import time
from typing import List, Optional

from mxlaunch.errors import UsageError
from mxlaunch.trainer import model as checkpoints
from mxlaunch.trainer import architecture, networks, records
from mxlaunch.trainer.config import FitConfig
from mxlaunch.trainer.data import (Augmentation, FixedBatches, Shard, epoch_seed, real_batches, threads_for,
                                   train_iter, val_iter)
from mxlaunch.trainer.metrics_file import MetricsFile, default_path
from mxlaunch.trainer.schedule import IGNORES_LR, lr_at_epoch, make_scheduler, updates_per_epoch
from mxlaunch.trainer.stop import StoppedForCheckpoint, StopRequest

log = logging.getLogger("trainer")


def contexts(gpus, cpus: int = 1) -> List:
    """The devices each batch is split over: `--gpus 0,1,...`, else `--cpus N` CPU contexts cpu(0)..cpu(N-1).

    MXNet treats cpu(0) and cpu(1) as distinct devices (one executor and one engine worker pool each), so
    several CPU contexts run the code path of several GPUs: batch split, per-device kvstore, merged checkpoints.
    """
    import mxnet as mx

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


def optimizer_class(name: str):
    import mxnet as mx

    registry = mx.optimizer.Optimizer.opt_registry
    if name.lower() not in registry:
        choices = ", ".join(sorted(n for n in registry if n != "test"))
        raise UsageError(f"unknown --optimizer {name!r}: choose one of {choices}")
    return registry[name.lower()]


def optimizer_params(cfg: FitConfig, begin_update: int, epoch_updates: int) -> dict:
    name = cfg.optimizer.lower()
    params = {"wd": cfg.wd, "begin_num_update": begin_update}
    if name in IGNORES_LR:
        given = [o for o in ("--lr", "--lr-factor", "--lr-step-epochs") if o in cfg.explicit]
        if given:
            log.warning("%s has no learning rate: %s ignored", name, ", ".join(given))
    else:
        params["learning_rate"] = cfg.lr
        scheduler = make_scheduler(cfg.lr, cfg.lr_factor, cfg.lr_step_epochs, epoch_updates)
        if scheduler is not None:
            params["lr_scheduler"] = scheduler
    if "momentum" in inspect.signature(optimizer_class(name).__init__).parameters:
        params["momentum"] = cfg.mom
    elif "--mom" in cfg.explicit:
        log.warning("%s takes no momentum: --mom ignored", name)
    return params


def device_shares(module) -> List[int]:
    """Samples of each batch per device, in the contexts' order (how the module split the batch)."""
    return [out.shape[0] for out in module.get_outputs(merge_multi_context=False)[0]]


class _Accuracy:
    """Training accuracy counted on the devices; reading it (a wait for the engine) happens only when logged.

    Each device counts its own slice of the batch (the module splits a batch over its contexts in order),
    so nothing is gathered onto one device per batch.
    """

    def __init__(self):
        self.pending, self.correct, self.count = [], 0, 0

    def update(self, module, batch) -> None:
        label, start = batch.label[0], 0
        for predictions in module.get_outputs(merge_multi_context=False)[0]:
            stop = start + predictions.shape[0]
            part = label[start:stop].as_in_context(predictions.context)
            self.pending.append((predictions.argmax(axis=1) == part).sum())
            start = stop
        self.count += label.shape[0]

    def take(self):
        """(correct, count) since the last take; starts counting again."""
        correct = self.correct + int(sum(c.asscalar() for c in self.pending))
        taken = (correct, self.count)
        self.pending, self.correct, self.count = [], 0, 0
        return taken


def evaluate(module, make_val_iter) -> float:
    """Accuracy over every real validation sample exactly once (the last batch's padding is cut off)."""
    correct = seen = 0
    for batch, real in real_batches(make_val_iter):
        module.forward(batch, is_train=False)
        predictions = module.get_outputs()[0].asnumpy()[:real].argmax(axis=1)
        labels = batch.label[0].asnumpy()[:real]
        correct += int((predictions == labels).sum())
        seen += real
    return correct / seen if seen else float("nan")


def _check_data(cfg: FitConfig):
    summary = records.summarize(cfg.data_train, "--data-train")
    records.check_image_shape(summary, cfg.image_shape, cfg.pad_size)
    records.check_labels(summary, cfg.num_classes)
    if cfg.data_val:
        val_summary = records.summarize(cfg.data_val, "--data-val")
        records.check_image_shape(val_summary, cfg.image_shape, 0)
        records.check_labels(val_summary, cfg.num_classes)
    return summary


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


def _check_start_files(cfg: FitConfig) -> None:
    """The checkpoint a run starts from exists (before MXNet is imported: ~2 s saved on a typo)."""
    if cfg.pretrained_model:
        checkpoints.check_checkpoint_files(cfg.pretrained_model, cfg.load_epoch or 0, "--pretrained-model")
    elif cfg.resumes:
        if not cfg.model_prefix:
            raise UsageError("--load-epoch needs --model-prefix (where the checkpoints are)")
        checkpoints.check_checkpoint_files(cfg.model_prefix, cfg.load_epoch,
                                           "--load-batch" if cfg.load_batch else "--load-epoch", cfg.load_batch)


def _unused_architecture(cfg: FitConfig, start: checkpoints.Model) -> Optional[str]:
    """What to say of --network/--num-layers/--num-group/--bottleneck-width that this run does not use."""
    if start.arg_params is None:  # from scratch: the options build the network
        return architecture.resnet_ignores(cfg)
    prefix = cfg.pretrained_model or cfg.model_prefix
    return architecture.checkpoint_ignores(cfg, start.symbol, f"{prefix}-symbol.json")


def _initial_model(cfg: FitConfig) -> checkpoints.Model:
    if cfg.pretrained_model:
        loaded = checkpoints.load_checkpoint(cfg.pretrained_model, cfg.load_epoch or 0, "--pretrained-model")
        return checkpoints.for_fine_tuning(loaded, cfg.num_classes)
    if cfg.resumes:
        if not cfg.model_prefix:
            raise UsageError("--load-epoch needs --model-prefix (where the checkpoints are)")
        loaded = checkpoints.load_checkpoint(cfg.model_prefix, cfg.load_epoch,
                                             "--load-batch" if cfg.load_batch else "--load-epoch", cfg.load_batch)
        classes = checkpoints.classifier_size(loaded.symbol)
        if classes != cfg.num_classes:
            raise UsageError(f"the checkpoint classifies {classes} classes, not --num-classes {cfg.num_classes}: "
                             f"use `trainer fine-tune` to change the classes")
        return loaded
    symbol = networks.get_symbol(cfg.network, cfg.num_layers, cfg.num_classes, cfg.image_shape,
                                 num_group=cfg.num_group, bottleneck_width=cfg.bottleneck_width)
    return checkpoints.Model(symbol)


def _train_epoch(module, train: FixedBatches, epoch: int, disp_batches: int, skip: int = 0,
                 at_boundary=lambda batch: None):
    """One epoch of forward, backward and update after its first `skip` batches (a resume inside the epoch);
    `at_boundary(b)` runs after every batch b but the last. Returns (training accuracy, batches, seconds)."""
    import mxnet as mx

    tic = window_tic = time.time()
    window = _Accuracy()
    epoch_correct = epoch_count = 0
    for nbatch, batch in enumerate(train.epoch(epoch, skip), start=skip + 1):
        module.forward_backward(batch)
        module.update()
        window.update(module, batch)
        if disp_batches and nbatch % disp_batches == 0:
            correct, count = window.take()
            epoch_correct, epoch_count = epoch_correct + correct, epoch_count + count
            log.info("Epoch[%d] Batch [%d-%d]\tSpeed: %.2f samples/sec\taccuracy=%f", epoch,
                     max(nbatch - disp_batches, skip), nbatch, count / (time.time() - window_tic), correct / count)
            window_tic = time.time()
        if nbatch < train.batches_per_epoch:
            at_boundary(nbatch)
    # MKL-DNN's BatchNorm writes its moving statistics outside the engine's dependency tracking: with
    # several engine threads a checkpoint taken now could miss the last batches' statistics.
    mx.nd.waitall()
    correct, count = window.take()
    batches = train.batches_per_epoch - skip
    return (epoch_correct + correct) / (epoch_count + count), batches, time.time() - tic


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
            import mxnet as mx

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


def run(cfg: FitConfig, on_rank=lambda rank: None, stop: Optional[StopRequest] = None) -> None:
    """Train: alone, or as one worker of a dist_* job (then the kvstore connects after the input checks).

    `stop` is set by SIGUSR1 (trainer/stop.py): served at the next batch boundary, where rank 0 checkpoints and
    raises StoppedForCheckpoint."""
    # cheapest checks first: a typo costs the user a second, not an MXNet start
    summary = _check_data(cfg)
    if not (cfg.pretrained_model or cfg.resumes):
        networks.check(cfg.network, cfg.num_layers, cfg.image_shape)
    _check_start_files(cfg)
    optimizer_class(cfg.optimizer)
    ctx = contexts(cfg.gpus, cfg.cpus)
    start = _initial_model(cfg)

    import mxnet as mx

    kv_type = cfg.resolved_kv_store()
    kv = mx.kv.create(kv_type) if kv_type.startswith("dist") else None
    rank, num_workers = (kv.rank, kv.num_workers) if kv is not None else (0, 1)
    on_rank(rank)
    unused = _unused_architecture(cfg, start) if rank == 0 else None
    if unused:
        log.warning(unused)
    if cfg.model_prefix and rank == 0:  # only rank 0 writes checkpoints
        check_prefix_writable(cfg.model_prefix)
    if cfg.seed is not None:
        mx.random.seed(cfg.seed + rank)
    begin_epoch, begin_batch = start.begin_epoch, start.begin_batch
    num_examples = cfg.num_examples or summary.count
    epoch_updates = updates_per_epoch(num_examples, num_workers, cfg.batch_size)
    if begin_batch >= epoch_updates:
        raise UsageError(f"--load-batch {begin_batch}: an epoch of this job has {epoch_updates} updates, so a "
                         f"checkpoint inside one is after batch 1..{epoch_updates - 1} (--num-examples, "
                         f"--batch-size and the number of workers must be those of the run that wrote it)")
    if begin_epoch >= cfg.num_epochs:
        log.info("nothing to do: the checkpoint has %d epochs and --num-epochs is %d", begin_epoch, cfg.num_epochs)
        return

    threads = threads_for(cfg.data_nthreads)
    shard, augmentation = Shard(rank, num_workers), Augmentation(cfg.pad_size, cfg.random_crop, cfg.random_mirror)
    train = FixedBatches(lambda epoch: train_iter(cfg.data_train, cfg.image_shape, cfg.batch_size, shard, augmentation,
                                                  threads, seed=epoch_seed(cfg.seed or 0, rank, epoch)),
                         epoch_updates, first_epoch=begin_epoch)
    make_val = (lambda: val_iter(cfg.data_val, cfg.image_shape, cfg.batch_size, threads)) if cfg.data_val else None
    log.info("rank %d of %d: %d examples, %d updates (global batches of %d x %d) per epoch, epochs %d..%d%s",
             rank, num_workers, num_examples, epoch_updates, num_workers, cfg.batch_size, begin_epoch,
             cfg.num_epochs - 1, f" (epoch {begin_epoch} from batch {begin_batch})" if begin_batch else "")

    module = mx.mod.Module(start.symbol, context=ctx)
    module.bind(data_shapes=train.provide_data, label_shapes=train.provide_label)
    module.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
                       arg_params=start.arg_params, aux_params=start.aux_params,
                       allow_missing=start.arg_params is not None)
    module.init_optimizer(kvstore=kv if kv is not None else kv_type, optimizer=cfg.optimizer.lower(),
                          optimizer_params=optimizer_params(cfg, begin_epoch * epoch_updates + begin_batch,
                                                            epoch_updates))
    log.info("kvstore %s; batches of %d split over %s (%s samples)", kv_type, cfg.batch_size,
             ", ".join(map(str, ctx)), "+".join(map(str, device_shares(module))))
    local_optimizer = kv is None  # under dist_* the optimizer and its state live on the servers
    states = checkpoints.states_path(cfg.model_prefix, begin_epoch, begin_batch) if cfg.model_prefix else None
    if local_optimizer and (begin_epoch or begin_batch) and states and os.path.isfile(states):
        checkpoints.load_optimizer_states(states, module, len(ctx))

    def save(epoch: int, batch: Optional[int] = None) -> str:
        path = checkpoints.save_checkpoint(cfg.model_prefix, epoch, module, len(ctx) if local_optimizer else None,
                                           batch)
        checkpoints.prune_mid_epoch(cfg.model_prefix, epoch, batch or 0)  # the older mid-epoch ones: dead weight
        return path

    on_request = _OnRequest(stop or StopRequest(), rank, save if cfg.model_prefix else None)

    metrics = MetricsFile(default_path(cfg.model_prefix) if rank == 0 else None, begin_epoch)
    uses_lr = cfg.optimizer.lower() not in IGNORES_LR
    previous_lr = None
    for epoch in range(begin_epoch, cfg.num_epochs):
        lr = lr_at_epoch(cfg.lr, cfg.lr_factor, cfg.lr_step_epochs, epoch) if uses_lr else None
        if uses_lr and lr != previous_lr:
            log.info("Epoch[%d] Learning rate=%g", epoch, lr)
        previous_lr = lr
        skip = begin_batch if epoch == begin_epoch else 0
        train_acc, batches, seconds = _train_epoch(module, train, epoch, cfg.disp_batches, skip,
                                                   lambda batch: on_request.inside_epoch(epoch, batch))
        log.info("Epoch[%d] Train-accuracy=%f", epoch, train_acc)
        log.info("Epoch[%d] Time cost=%.3f", epoch, seconds)
        if local_optimizer and uses_lr:  # the optimizer runs here: record the rate it actually used
            lr = module._optimizer.learning_rate
        record = {"epoch": epoch, "lr": lr, "train-accuracy": train_acc,
                  "samples/sec": batches * cfg.batch_size / seconds, "seconds": seconds}
        done = epoch + 1
        # a stop already asked for: the checkpoint first (the launcher waits a bounded time, and validating a
        # large set could outlast it); the epoch's record then has no validation accuracy
        stopping = rank == 0 and on_request.request.pending and done < cfg.num_epochs
        if make_val is not None and rank == 0 and not stopping:
            val_acc = evaluate(module, make_val)
            log.info("Epoch[%d] Validation-accuracy=%f", epoch, val_acc)
            record["validation-accuracy"] = val_acc
        elif make_val is not None and stopping:
            log.info("Epoch[%d] validation skipped: a stop was requested, the checkpoint comes first", epoch)
        # the epoch's record before its checkpoint: a resume from checkpoint N drops records >= N, so the
        # record of every epoch a checkpoint covers is already in metrics.jsonl (none is ever missing)
        metrics.append(record)
        saved = None
        if cfg.model_prefix and rank == 0 and (done % cfg.save_period == 0 or done == cfg.num_epochs):
            saved = save(done)
        on_request.at_epoch_end(epoch, epoch_updates, saved, complete=done == cfg.num_epochs)
