"""`launch`: the command-line entry point. Each subcommand lives in its own module."""
from __future__ import annotations

import click

from mxlaunch.errors import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxlaunch")
def cli() -> None:
    """Run MXNet parameter-server jobs locally, over SSH, or on an EC2 cluster."""


def _register() -> None:
    # Imported here so that `launch --help` stays fast and each command keeps its own module.
    from mxlaunch.launcher.train_cmd import train
    from mxlaunch.launcher.logs_cmd import logs
    from mxlaunch.launcher.plot_cmd import plot
    from mxlaunch.infra.cli import cluster

    for command in (train, logs, plot, cluster):
        cli.add_command(command)


_register()


def main(args=None) -> None:
    run_cli(cli, "launch", args)
