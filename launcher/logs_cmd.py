"""`launch logs` (not built yet)."""
import click

from launcher.errors import CommandError


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def logs(args) -> None:
    """Not built yet."""
    raise CommandError("launch logs is not built yet")
