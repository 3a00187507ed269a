"""`launch plot RUN_DIR... [--label NAME]... [-o FILE]`: training and validation accuracy per epoch, several
runs overlaid, and a table of each run's final and best values."""
from __future__ import annotations

import os

import click

from mxlaunch.launcher.jobs import plotting, rundir
from mxlaunch.errors import UsageError


def _check_format(output: str) -> None:
    """-o's extension names an image format matplotlib writes (png, pdf, svg, ...): its name is the format."""
    from matplotlib.backend_bases import FigureCanvasBase  # heavy

    formats = FigureCanvasBase.get_supported_filetypes()
    extension = os.path.splitext(output)[1][1:].lower()
    if extension not in formats:
        raise UsageError(f"-o {output}: {'.' + extension if extension else 'no extension'} is not an image "
                         f"format; end the name with one of {', '.join('.' + f for f in sorted(formats))}")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Image file (default: RUN_DIR/accuracy.png for one run, accuracy.png here for several).")
@click.option("--label", "labels", multiple=True, metavar="NAME",
              help="Legend name of each run, in the order of the RUN_DIRs (default: the directory's name).")
@click.option("--title", help="Title (default: 'Accuracy per epoch: ' and the runs' names).")
def plot(run_dirs, output, labels, title) -> None:
    """Plot accuracy per epoch of one or more runs (one legend entry per run) and print their final and
    best values."""
    if len(labels) > len(run_dirs):
        raise UsageError(f"{len(labels)} --label for {len(run_dirs)} run director{'y' if len(run_dirs) == 1 else 'ies'}")
    runs = []
    for i, run_dir in enumerate(run_dirs):
        path = rundir.metrics_path(run_dir)
        if not os.path.isfile(path):
            raise UsageError(f"{run_dir} has no metrics.jsonl (did its worker 0 finish an epoch?)")
        records = plotting.read_metrics(path)
        if not records:
            raise UsageError(f"{path} holds no epochs yet")
        runs.append((labels[i] if i < len(labels) else plotting.run_label(run_dir), records))
    output = output or (rundir.plot_path(run_dirs[0]) if len(run_dirs) == 1 else "accuracy.png")
    _check_format(output)
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(f"-o {output}: directory {folder} does not exist")
    plotting.plot_runs(runs, output, title=title)
    click.echo(plotting.table(runs), nl=False)
    click.echo(output)
