"""`launch logs RUN_DIR [--role worker-1] [--follow]`: a run's role logs, prefixed like the live console."""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Dict, List, Optional

import click

from mxlaunch.launcher import rundir
from mxlaunch.launcher.roles import RoleId
from mxlaunch.errors import UsageError
from mxlaunch.exits import Exit

FOLLOW_POLL = 0.2  # seconds between looks at the log files while following


def _role_id(name: str) -> Optional[RoleId]:
    try:
        return RoleId.parse(name)
    except ValueError:  # a file of another kind in logs/: shown last, under its own name
        return None


def _role_order(name: str):
    role = _role_id(name)
    return (0, role) if role is not None else (1, name)


def _roles(run_dir: str) -> List[str]:
    folder = rundir.logs_dir(run_dir)
    if not os.path.isdir(folder):
        raise UsageError(f"{run_dir} is not a run directory (no logs/)")
    return sorted((f[:-4] for f in os.listdir(folder) if f.endswith(".log")), key=_role_order)


def _label(name: str) -> str:
    role = _role_id(name)
    return f"[{role.label if role is not None else name}] "


def _emit(prefix: str, data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    sys.stdout.write("".join(prefix + line + "\n" for line in text.splitlines()))
    sys.stdout.flush()


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--role", "roles", multiple=True, metavar="NAME", help="scheduler, server-0, worker-1, ... (repeatable)")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends (or Ctrl-C).")
def logs(run_dir: str, roles, follow: bool) -> None:
    """Print the logs of a run, each line prefixed with its role."""
    available = _roles(run_dir)
    for name in roles:
        if name not in available:
            raise UsageError(f"no role {name!r} in {run_dir} (roles: {', '.join(available) or 'none'})")
    chosen = list(roles) or available
    prefix = {name: ("" if len(chosen) == 1 else _label(name)) for name in chosen}
    offsets: Dict[str, int] = {}
    pending: Dict[str, bytes] = {name: b"" for name in chosen}

    def read_new(name: str, final: bool) -> None:
        path = rundir.log_path(run_dir, name)
        try:
            with open(path, "rb") as f:
                f.seek(offsets.get(name, 0))
                data = f.read()
                offsets[name] = f.tell()
        except FileNotFoundError:
            return
        data = pending[name] + data
        complete, _, rest = data.rpartition(b"\n") if not final else (data, b"", b"")
        pending[name] = rest
        if complete:
            _emit(prefix[name], complete)

    for name in chosen:
        read_new(name, final=not follow)
    if not follow:
        return
    signal.signal(signal.SIGINT, lambda s, f: sys.exit(Exit.INTERRUPTED))
    while True:
        done = os.path.exists(rundir.summary_path(run_dir))  # the launcher writes it after every role ended
        for name in chosen:
            read_new(name, final=done)
        if done:
            return
        time.sleep(FOLLOW_POLL)  # following a file: polling is the mechanism, not synchronisation
