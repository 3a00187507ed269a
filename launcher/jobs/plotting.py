"""Accuracy per epoch (training dashed, validation solid), from metrics.jsonl, one colour per run.

Epochs keep their numbers from the logs and metrics.jsonl (`Epoch[0]` is x = 0), on integer ticks; a
change of learning rate is a dotted vertical line before the first epoch that used it, labelled.
"""
from __future__ import annotations

import json
import math
import os
from typing import List, Optional, Sequence, Tuple

from mxlaunch.launcher.jobs import rundir
from mxlaunch.errors import UsageError
from mxlaunch.files import MIB, read_bounded

Run = Tuple[str, List[dict]]  # (label, records)
MAX_EPOCH = 10 ** 6  # beyond any real run; a bigger number is damage (and overflows the plot's floats)
METRICS_LIMIT = 64 * MIB  # bytes: a line per epoch is ~200 bytes; more is not a metrics file


def read_metrics(path: str, strict: bool = True) -> List[dict]:
    """The epochs of a metrics.jsonl (the last record wins for an epoch written twice, e.g. after resume).
    A damaged line is an error naming it; with strict=False it is skipped (the end-of-job report must not
    fail a job whose workers succeeded)."""
    by_epoch = {}
    try:  # a regular file only, never through a link, bounded: `launch plot` reads what others may have put
        lines = read_bounded(path, METRICS_LIMIT).split(b"\n")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            epoch = record["epoch"] if isinstance(record, dict) else None
            if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= MAX_EPOCH:
                raise ValueError(f"epoch {epoch!r:.40} is not a whole number from 0 to {MAX_EPOCH}")
        except (ValueError, KeyError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            if strict:
                raise UsageError(f"{path}:{number}: not an epoch record ({exc})") from exc
            continue
        by_epoch[epoch] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def finite_number(value) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def lr_changes(records: List[dict]) -> List[Tuple[int, float]]:
    """(epoch, new lr) for each epoch whose learning rate differs from the epoch before it."""
    changes, previous = [], None
    for r in records:
        lr = finite_number(r.get("lr"))
        if lr is not None and previous is not None and not math.isclose(lr, previous, rel_tol=1e-9):
            changes.append((r["epoch"], lr))
        if lr is not None:
            previous = lr
    return changes


def default_title(labels: Sequence[str]) -> str:
    names = ", ".join(labels[:3]) + (f" and {len(labels) - 3} more" if len(labels) > 3 else "")
    return f"Accuracy per epoch: {names}"


def plot_runs(runs: Sequence[Run], out: str, title: Optional[str] = None) -> str:
    """Write the figure to `out`; a file that cannot be written there (no permission, a read-only or special
    file system, a full disk) is one error naming it."""
    import matplotlib.pyplot as plt  # heavy

    fig = figure(runs, title)
    try:
        fig.savefig(out, dpi=100)
    except OSError as exc:
        raise UsageError(f"cannot write the plot {out}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    return out


def figure(runs: Sequence[Run], title: Optional[str] = None):
    import matplotlib  # heavy
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy
    from matplotlib.lines import Line2D  # heavy
    from matplotlib.ticker import MaxNLocator  # heavy

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, records) in enumerate(runs):
        colour = colours[i % len(colours)]
        has_validation = any(finite_number(r.get("validation-accuracy")) is not None for r in records)
        for key, style in (("train-accuracy", "--"), ("validation-accuracy", "-")):
            points = [(r["epoch"], finite_number(r.get(key))) for r in records if finite_number(r.get(key)) is not None]
            if points:
                ax.plot(*zip(*points), style, color=colour, marker="o", markersize=3,
                        label=label if key == "validation-accuracy" or not has_validation else None)
        for epoch, lr in lr_changes(records):
            ax.axvline(epoch - 0.5, color=colour, linestyle=":", alpha=0.7)
            ax.annotate(f"lr {lr:g}", xy=(epoch - 0.5, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                        fontsize=8, color=colour, ha="right", va="bottom")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", linestyle="--", label="training"),
                Line2D([], [], color="grey", linestyle="-", label="validation"),
                Line2D([], [], color="grey", linestyle=":", label="learning rate changed")]
    ax.legend(handles=handles, loc="lower right")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (numbered as in the logs and metrics.jsonl)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or default_title([label for label, _ in runs]))
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def table(runs: Sequence[Run]) -> str:
    """Final and best values per run, as `launch plot` prints them."""
    def fmt(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    rows = [("run", "epochs", "final train", "final validation", "best validation", "best epoch", "final lr")]
    for label, records in runs:
        validated = [r for r in records if finite_number(r.get("validation-accuracy")) is not None]
        best = max(validated, key=lambda r: r["validation-accuracy"]) if validated else None
        last = records[-1]
        lr = finite_number(last.get("lr"))
        rows.append((label, str(len(records)), fmt(finite_number(last.get("train-accuracy"))),
                     fmt(finite_number(last.get("validation-accuracy"))),
                     fmt(best["validation-accuracy"] if best else None), str(best["epoch"]) if best else "-",
                     "-" if lr is None else f"{lr:g}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows) + "\n"


def run_label(run_dir: str) -> str:
    return os.path.basename(os.path.normpath(run_dir))


def plot_run_if_metrics(run_dir: str) -> Optional[str]:
    """RUN_DIR/accuracy.png from RUN_DIR/metrics.jsonl, when the job wrote metrics (damaged lines skipped)."""
    path = rundir.metrics_path(run_dir)
    if not os.path.exists(path):
        return None
    records = read_metrics(path, strict=False)
    if not records:
        return None
    return plot_runs([(run_label(run_dir), records)], rundir.plot_path(run_dir))
