"""The metrics common/fit.py reports, under MXNet's names: `accuracy`, `top_k_accuracy_K` (--top-k K) and
`cross-entropy` / `nll-loss` (--loss ce,nll), computed as mx.metric's Accuracy, TopKAccuracy, CrossEntropy and
NegativeLogLikelihood compute them.

Sums are counted on the devices, each on its own slice of the batch, and read (a wait for the engine) only when
logged; validation counts every real sample exactly once (the last batch's padding is cut off).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from mxlaunch.trainer.data import real_batches

LOSS_NAMES = {"ce": "cross-entropy", "nll_loss": "nll-loss"}
EPS = 1e-12  # mx.metric.CrossEntropy / NegativeLogLikelihood: -log(p + eps)


def metric_names(top_k: int, losses: Sequence[str]) -> List[str]:
    return ["accuracy"] + ([f"top_k_accuracy_{top_k}"] if top_k else []) + [LOSS_NAMES[loss] for loss in losses]


def _sums(probabilities, label, top_k: int, losses: Sequence[str]) -> list:
    """Each metric's sum over these samples, as NDArrays on the probabilities' device."""
    import mxnet as mx  # heavy

    sums = [(probabilities.argmax(axis=1) == label).sum()]
    if top_k:
        best = mx.nd.topk(probabilities, axis=1, k=top_k)
        sums.append((best == label.reshape((-1, 1))).sum())
    if losses:
        loss = -mx.nd.log(mx.nd.pick(probabilities, label, axis=1) + EPS)
        sums.extend(loss.sum() for _ in losses)  # the same value under both names, as in MXNet
    return sums


class Metrics:
    """Running sums of this run's metrics since the last `take`."""

    def __init__(self, top_k: int = 0, losses: Sequence[str] = ()):
        self.top_k, self.losses = top_k, tuple(losses)
        self.names = metric_names(top_k, losses)
        self._pending: List[list] = []
        self._count = 0

    def update(self, outputs: Sequence, label, real: int = None) -> None:
        """`outputs`: the softmax outputs of each device, in order, for consecutive slices of `label`; `real`: the
        samples that count (the first ones; the rest is padding)."""
        start = 0
        for probabilities in outputs:
            stop = start + probabilities.shape[0]
            keep = max(0, min(stop, real if real is not None else stop) - start)
            if keep:
                part = label[start:start + keep].as_in_context(probabilities.context)
                self._pending.append(_sums(probabilities[:keep], part, self.top_k, self.losses))
                self._count += keep
            start = stop

    def take(self) -> Tuple[Dict[str, float], int]:
        """({name: mean}, samples) since the last take; starts counting again."""
        totals = [0.0] * len(self.names)
        for sums in self._pending:
            for i, value in enumerate(sums):
                totals[i] += float(value.asscalar())
        count = self._count
        self._pending, self._count = [], 0
        return {name: (total / count if count else float("nan")) for name, total in zip(self.names, totals)}, count


def merge(into: Dict[str, float], into_count: int, values: Dict[str, float], count: int):
    """The means of two spans of samples."""
    total = into_count + count
    if not total:
        return values, 0
    return {k: (into.get(k, 0.0) * into_count + values[k] * count) / total for k in values}, total


def evaluate(module, make_val_iter, top_k: int = 0, losses: Sequence[str] = ()) -> Dict[str, float]:
    """Every metric over every real validation sample exactly once."""
    metrics = Metrics(top_k, losses)
    for batch, real in real_batches(make_val_iter):
        module.forward(batch, is_train=False)
        metrics.update(module.get_outputs(merge_multi_context=False)[0], batch.label[0], real)
    return metrics.take()[0]


def line(values: Dict[str, float]) -> str:
    """`\tname=value` for each metric: MXNet's Speedometer format."""
    return "".join(f"\t{name}={value:f}" for name, value in values.items())
