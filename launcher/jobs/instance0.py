"""`launch ...` on a cluster's instance 0, the one place its command lines are built: the runs, logs and stop
of detached runs (their files are on EFS, their launchers on instance 0) and the detached launcher's own
`launch train` options (launcher/jobs/detached.py).

    option_args(name=value, ...) -> ["--name", "value", ...]   what click reads back as those values
    launch(name, words, options, out, err) -> exit status      `launch WORDS OPTIONS` there, streamed
"""
from __future__ import annotations

import shlex
from typing import Callable, List, Mapping, Optional, Sequence

import click

LAUNCH = ("-m", "mxlaunch.launcher")  # `launch` as the cluster's venv runs it


def option_args(**options) -> List[str]:
    """Options as words, in the order given: --NAME (underscores as dashes) then its value; True: the flag
    alone; None or False: left out (a negative flag is its own name: no_watch_spot=True); a list or tuple: the
    option once per item; a float: its repr (exact); anything else: str."""
    words: List[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if item is True:
                words.append(flag)
            elif item is not None and item is not False:
                words += [flag, repr(item) if isinstance(item, float) else str(item)]
    return words


def tri_state(name: str, value: Optional[bool]) -> dict:
    """A --NAME/--no-NAME option's value as option_args takes it (None: neither given)."""
    return {} if value is None else {name if value else f"no_{name}": True}


def connect(name: str, region: Optional[str] = None):
    """(cluster target, connection to instance 0) with the cluster's SSH settings (a first-seen host key is
    recorded, as the cluster's ssh config says; a changed one refused)."""
    from mxlaunch.infra.cloud.cluster_target import cluster_target  # heavy
    from mxlaunch.infra.transport.ssh import SSHOptions, connect_all  # heavy

    target = cluster_target(name, region, ssh=SSHOptions(accept_new=True))
    first = target.hosts[0]
    connections = connect_all([first], target.ssh)
    connections.raise_if_failed()
    return target, connections[first]


def _stderr(line: str) -> None:
    click.echo(line, err=True)


def launch(name: str, words: Sequence[str], options: Optional[Mapping] = None,
           out: Callable[[str], None] = click.echo, err: Callable[[str], None] = _stderr) -> int:
    """`launch WORDS... OPTIONS...` on instance 0 of cluster `name` with the cluster's venv, its output passed
    on line by line as it comes; its exit status (Ctrl-C here ends it there too)."""
    target, conn = connect(name)
    try:
        argv = [target.python, *LAUNCH, *words, *option_args(**dict(options or {}))]
        return conn.stream(shlex.join(argv), out, err)
    finally:
        conn.close()
