"""The learning-rate schedule of common/fit.py, counted in optimizer updates of this job.

One update is one batch on a single machine, and one *global* batch under `dist_sync`, where the optimizer runs
on the servers and every worker's push of a batch makes one update together. Every worker runs exactly
`updates_per_epoch` batches per epoch, so a step at epoch E happens on the epoch boundary for any number of
workers. The scheduler counts absolute updates and the optimizer starts at `begin_num_update`, so a resumed run
(even inside an epoch) continues the schedule exactly where the interrupted one was; MXNet's fit.py instead
shifts the steps and pre-multiplies the rate (whole epochs only) and restarts a polynomial decay from the top.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple

from mxlaunch.errors import UsageError

# Optimizers whose update ignores the learning rate entirely (`weight -= delta + wd * weight`).
IGNORES_LR = frozenset({"adadelta"})
_POWER = re.compile(r"pow[- ]*")  # common/fit.py: 'pow' in --lr-step-epochs means PolyScheduler


def parse_step_epochs(text: Optional[str]) -> Tuple[Tuple[int, ...], Optional[float]]:
    """(steps, None) for `10,20,30` (and the papers' shorthand `25,50,...,300`), or ((), power) for `pow2`."""
    if text is None or not text.strip():
        return (), None
    if "pow" in text:
        try:
            return (), float(_POWER.sub("", text))
        except ValueError:
            raise UsageError(f"--lr-step-epochs {text!r}: expected powN, the power of a polynomial decay "
                             f"(e.g. pow2)") from None
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
    return tuple(steps), None


def updates_per_epoch(num_examples: int, num_workers: int, batch_size: int) -> int:
    """common/fit.py's get_epoch_size: ceil(int(num_examples / num_workers) / batch_size) (at least 1)."""
    return max(1, -(-(num_examples // num_workers) // batch_size))


def scheduled(factor: float, steps: Sequence[int], power: Optional[float]) -> bool:
    """common/fit.py: a factor of 1 or more means no schedule (the trainer refuses above 1 with steps)."""
    return factor < 1 and (bool(steps) or power is not None)


def lr_at_epoch(base_lr: float, factor: float, steps: Sequence[int], epoch: int, power: Optional[float] = None,
                epoch_updates: int = 1, num_epochs: int = 1) -> float:
    """The learning rate of `epoch`'s first update (0-based epochs), as the scheduler gives it."""
    if not scheduled(factor, steps, power):
        return base_lr
    if power is not None:
        return base_lr * (1 - (epoch * epoch_updates + 1) / (num_epochs * epoch_updates)) ** power
    return base_lr * factor ** sum(1 for step in steps if step <= epoch)


def make_scheduler(base_lr: float, factor: float, steps: Sequence[int], epoch_updates: int,
                   power: Optional[float] = None, num_epochs: int = 1):
    """MXNet's MultiFactorScheduler (or PolyScheduler for powN) on absolute update counts, or None."""
    import mxnet as mx  # heavy

    if not scheduled(factor, steps, power):
        return None
    if power is not None:
        return mx.lr_scheduler.PolyScheduler(num_epochs * epoch_updates, base_lr, power)
    return mx.lr_scheduler.MultiFactorScheduler(step=[epoch_updates * s for s in steps], factor=factor,
                                                base_lr=base_lr)
