"""`launch`: the command-line entry point. Each subcommand lives in its own module, imported only when it runs."""
from __future__ import annotations

import importlib

import click

from mxlaunch.errors import run_cli

# name -> (module, attribute, summary). `launch --help` lists the summaries from here, whole, so that it
# imports no subcommand (`cluster` brings boto3); each summary is the first paragraph of its command's
# docstring (tests/test_layers.py keeps them equal).
SUBCOMMANDS = {
    "cluster": ("mxlaunch.launcher.cli.cluster", "cluster",
                "EC2 GPU clusters with shared EFS: up, down, repair, status, list, hostfile, ssh, put, exec, types, policy."),
    "logs": ("mxlaunch.launcher.cli.logs", "logs",
             "Print the logs of a run, each line prefixed with its role (--merge: interleaved by time)."),
    "plot": ("mxlaunch.launcher.cli.plot", "plot",
             "Plot accuracy per epoch of one or more runs (one legend entry per run) and print their final and "
             "best values."),
    "runs": ("mxlaunch.launcher.cli.runs", "runs",
             "List runs, newest first: id, start, mode, hosts, workers, status, epochs, final validation "
             "accuracy, duration."),
    "stop": ("mxlaunch.launcher.cli.stop", "stop",
             "Stop a run's launcher (SIGTERM): it stops every role and writes summary.json; wait until it has "
             "ended."),
    "train": ("mxlaunch.launcher.cli.train", "train",
              "Run COMMAND as every role of an MXNet parameter-server job (1 scheduler, S servers, N workers)."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported from SUBCOMMANDS on first use."""

    def list_commands(self, ctx: click.Context) -> list:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str):
        if name not in SUBCOMMANDS:
            return None
        module, attribute, _ = SUBCOMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own version imports every subcommand and cuts its summary to one line ("..."); here the
        # summaries come from the table, whole (write_dl wraps them)
        rows = [(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxlaunch")
def cli() -> None:
    """Run MXNet parameter-server jobs locally, over SSH, or on an EC2 cluster."""


def main(args=None) -> None:
    run_cli(cli, "launch", args)
