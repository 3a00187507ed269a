"""The step learning-rate schedule, counted in optimizer updates of this job.

One update is one batch on a single machine, and one *global* batch under `dist_sync`, where the
optimizer runs on the servers and every worker's push of a batch makes one update together. Every
worker runs exactly `updates_per_epoch` batches per epoch, so a step at epoch E happens on the
epoch boundary for any number of workers.
"""
from __future__ import annotations

import math
import re
from typing import Optional, Sequence, Tuple

from mxlaunch.errors import UsageError

# Optimizers whose update ignores the learning rate entirely (`weight -= delta + wd * weight`).
IGNORES_LR = frozenset({"adadelta"})


def parse_step_epochs(text: Optional[str]) -> Tuple[int, ...]:
    """`10,20,30`, and the arithmetic shorthand of papers and of the CIFAR article: `25,50,...,300`."""
    if text is None or not text.strip():
        return ()
    parts = [p.strip() for p in text.split(",")]
    steps = []
    for i, part in enumerate(parts):
        if part in ("...", "…"):
            if len(steps) < 2 or i + 1 != len(parts) - 1:
                raise UsageError(f"--lr-step-epochs {text!r}: '...' needs two epochs before it and one after it, "
                                 f"as in 25,50,...,300")
            continue
        if not re.fullmatch(r"\d+", part):
            raise UsageError(f"--lr-step-epochs {text!r}: {part!r} is not an epoch number")
        value = int(part)
        if i > 0 and parts[i - 1] in ("...", "…"):
            stride = steps[-1] - steps[-2]
            if stride <= 0 or (value - steps[-1]) % stride:
                raise UsageError(f"--lr-step-epochs {text!r}: {value} is not reached from {steps[-2]},{steps[-1]} "
                                 f"in steps of {stride}")
            steps.extend(range(steps[-1] + stride, value, stride))
        steps.append(value)
    for before, after in zip(steps, steps[1:]):
        if after <= before:
            raise UsageError(f"--lr-step-epochs {text!r} must be strictly increasing ({before} then {after})")
    if steps and steps[0] <= 0:
        raise UsageError(f"--lr-step-epochs {text!r}: epochs must be > 0")
    return tuple(steps)


def updates_per_epoch(num_examples: int, num_workers: int, batch_size: int) -> int:
    """Optimizer updates (global batches) per epoch: ceil(num_examples / workers / batch_size)."""
    return max(1, math.ceil(num_examples / (num_workers * batch_size)))


def lr_at_epoch(base_lr: float, factor: float, steps: Sequence[int], epoch: int) -> float:
    """The learning rate in effect during `epoch` (0-based): one factor for every step already reached."""
    return base_lr * factor ** sum(1 for step in steps if step <= epoch)


def make_scheduler(base_lr: float, factor: float, steps: Sequence[int], epoch_updates: int):
    """MXNet's MultiFactorScheduler on absolute update counts.

    Together with the optimizer's `begin_num_update = begin_epoch * epoch_updates`, a resumed job
    continues the schedule exactly where the interrupted one was; MXNet's own script instead shifts
    the steps and pre-multiplies the rate.
    """
    import mxnet as mx

    if not steps or factor == 1.0:
        return None
    return mx.lr_scheduler.MultiFactorScheduler(step=[epoch_updates * s for s in steps], factor=factor,
                                                base_lr=base_lr)
