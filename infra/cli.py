"""`launch cluster` (not built yet)."""
import click

from launcher.errors import CommandError


@click.group()
def cluster() -> None:
    """EC2 GPU clusters with shared EFS (not built yet)."""


@cluster.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def up(args) -> None:
    raise CommandError("launch cluster is not built yet")
