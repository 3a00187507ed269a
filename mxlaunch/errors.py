"""Typed errors that become one clear line and a specific exit status, for every command of mxlaunch.

Every user-facing failure is raised as a `CommandError` subclass; `run_cli` turns it (and click's own
usage errors) into `prog: error: message` on stderr and the subclass's exit code. No traceback reaches
the user unless MXLAUNCH_DEBUG=1 is set.
"""
from __future__ import annotations

import os
import sys

import click

from mxlaunch.exits import Exit

# click >= 8.2 raises this for a group called without a subcommand; older clicks print help themselves.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class CommandError(click.ClickException):
    """A failure the user can act on. `exit_code` is part of the contract (docs/exit-statuses.md)."""

    exit_code = Exit.FAILED


class UsageError(CommandError):
    """Bad input: arguments, files or data that cannot be used as given."""

    exit_code = Exit.USAGE


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_cli(command: click.BaseCommand, prog_name: str, args=None) -> None:
    """Run a click command; every error is one line on stderr with its exit status."""
    try:
        rv = command.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo(f"{prog_name}: interrupted", err=True)
        sys.exit(Exit.INTERRUPTED)
    except _NO_ARGS_IS_HELP as exc:  # `prog group` with no subcommand: help is wanted
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        sys.exit(Exit.USAGE)
    except click.UsageError as exc:  # click's own parsing errors: unknown option, bad value, ...
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"{prog_name}: error: {_one_line(exc.format_message())}{hint}", err=True)
        sys.exit(Exit.USAGE)
    except click.ClickException as exc:
        click.echo(f"{prog_name}: error: {_one_line(exc.format_message())}", err=True)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        click.echo(f"{prog_name}: interrupted", err=True)
        sys.exit(Exit.INTERRUPTED)
    except Exception as exc:  # a bug of ours: still one line, with a way to see the traceback
        if os.environ.get("MXLAUNCH_DEBUG"):
            raise
        click.echo(f"{prog_name}: internal error: {type(exc).__name__}: {_one_line(exc)} "
                   f"(set MXLAUNCH_DEBUG=1 for the traceback)", err=True)
        sys.exit(Exit.INTERNAL)
    sys.exit(int(rv) if isinstance(rv, int) else Exit.OK)
