"""`launch plot RUN_DIR... [-o FILE]`: training and validation accuracy per epoch, several runs overlaid."""
from __future__ import annotations

import os

import click

from mxlaunch.launcher import plotting, rundir
from mxlaunch.errors import UsageError


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Image file (default: RUN_DIR/accuracy.png for one run, accuracy.png here for several).")
@click.option("--title", default="Accuracy per epoch", show_default=True)
def plot(run_dirs, output, title) -> None:
    """Plot accuracy per epoch of one or more runs (one legend entry per run)."""
    runs = []
    for run_dir in run_dirs:
        path = rundir.metrics_path(run_dir)
        if not os.path.isfile(path):
            raise UsageError(f"{run_dir} has no metrics.jsonl (did its worker 0 finish an epoch?)")
        records = plotting.read_metrics(path)
        if not records:
            raise UsageError(f"{path} holds no epochs yet")
        runs.append((plotting.run_label(run_dir), records))
    output = output or (rundir.plot_path(run_dirs[0]) if len(run_dirs) == 1 else "accuracy.png")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(f"-o {output}: directory {folder} does not exist")
    plotting.plot_runs(runs, output, title=title)
    click.echo(output)
