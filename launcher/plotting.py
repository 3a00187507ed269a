"""Accuracy per epoch (training dashed, validation solid), from metrics.jsonl, one colour per run."""
from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence, Tuple

from mxlaunch.launcher import rundir
from mxlaunch.errors import UsageError


def read_metrics(path: str) -> List[dict]:
    """The epochs of a metrics.jsonl (the last record wins for an epoch written twice, e.g. after resume)."""
    by_epoch = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{path}:{number}: not a JSON object ({exc})") from exc
            if isinstance(record, dict) and "epoch" in record:
                by_epoch[int(record["epoch"])] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_runs(runs: Sequence[Tuple[str, List[dict]]], out: str, title: str = "Accuracy per epoch") -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, records) in enumerate(runs):
        colour = colours[i % len(colours)]
        epochs = [r["epoch"] + 1 for r in records]  # epoch 0 ends after one pass: plot it at x = 1
        for key, style in (("train-accuracy", "--"), ("validation-accuracy", "-")):
            points = [(e, r[key]) for e, r in zip(epochs, records) if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), style, color=colour, marker="o", markersize=3,
                        label=label if key == "validation-accuracy" or not any(
                            r.get("validation-accuracy") is not None for r in records) else None)
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", linestyle="--", label="training"),
                Line2D([], [], color="grey", linestyle="-", label="validation")]
    ax.legend(handles=handles, loc="lower right")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run_label(run_dir: str) -> str:
    return os.path.basename(os.path.normpath(run_dir))


def plot_run_if_metrics(run_dir: str) -> Optional[str]:
    """RUN_DIR/accuracy.png from RUN_DIR/metrics.jsonl, when the job wrote metrics."""
    path = rundir.metrics_path(run_dir)
    if not os.path.exists(path):
        return None
    records = read_metrics(path)
    if not records:
        return None
    return plot_runs([(run_label(run_dir), records)], rundir.plot_path(run_dir))
