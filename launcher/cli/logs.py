"""`launch logs RUN_DIR [--role worker-1] [--tail N] [--merge] [--follow]`: a run's role logs, prefixed like
the live console; `--merge` interleaves the roles by the time the launcher received each line (from
`logs/<role>.log.times`, launcher/jobs/output.py).

A detached run (launch train --detach) also has its launcher's console (`--role launcher`), which is all it
has until its launcher has passed the preflight and made the run directory: `--follow` waits for the roles'
logs as long as that launcher lives. `launch logs --cluster NAME RUN` is this command on the cluster's
instance 0, where the run's files are."""
from __future__ import annotations

import heapq
import os
import signal
import sys
import time
from typing import Dict, List, Optional

import click

from mxlaunch.launcher.jobs import detached, instance0, rundir, launcher_record
from mxlaunch.files import MIB
from mxlaunch.launcher.jobs.log_files import LogReader
from mxlaunch.infra.transport.roles import RoleId
from mxlaunch.errors import CommandError, UsageError
from mxlaunch.exits import Exit

FOLLOW_POLL = 0.2  # seconds between looks at the log files while following
FOLLOW_UNKNOWN_LIMIT = 10.0  # a run with no launcher record (older, or never set up) is followed this long
FOLLOW_BUDGET = 4 * MIB  # bytes of each role's log read per look while following: a fast writer never starves the rest


def _role_id(name: str) -> Optional[RoleId]:
    try:
        return RoleId.parse(name)
    except ValueError:  # a file of another kind in logs/: shown last, under its own name
        return None


def _role_order(name: str):
    role = _role_id(name)
    return (0, role) if role is not None else (1, name)


LAUNCHER = "launcher"  # --role launcher: a detached launcher's console (launcher_record.detached_paths)


def _console(run_dir: str) -> Optional[str]:
    path = launcher_record.detached_paths(run_dir)[0]
    return path if os.path.isfile(path) else None


def _wait_for_logs(run_dir: str) -> None:
    """A detached launcher that is still starting (preflight) has no logs/ yet: wait while it lives. One
    that ended before making them: its console is the story, then one line."""
    while not os.path.isdir(rundir.logs_dir(run_dir)) and launcher_record.state(run_dir) == launcher_record.RUNNING:
        time.sleep(FOLLOW_POLL)  # waiting on another process's files: polling is the mechanism
    console = _console(run_dir)
    if not os.path.isdir(rundir.logs_dir(run_dir)) and console:
        out = Output({LAUNCHER: ""})
        for _, piece, whole in LogReader(console).lines(final=True):
            out.piece(LAUNCHER, piece, whole)
        raise CommandError(f"the launcher of {run_dir} ended before it started the job (its console, above: "
                           f"{console})")


def _roles(run_dir: str) -> List[str]:
    folder = rundir.logs_dir(run_dir)
    if not os.path.isdir(folder):
        raise UsageError(f"{run_dir} is not a run directory (no logs/)")
    # files only: a directory (or anything else) named *.log is not a role's log
    return sorted((f[:-4] for f in os.listdir(folder)
                   if f.endswith(".log") and os.path.isfile(os.path.join(folder, f))), key=_role_order)


def _label(name: str) -> str:
    role = _role_id(name)
    return f"[{role.label if role is not None else name}] "


class Output:
    """Pieces of lines to stdout, each line with its role's prefix; a line left open by one role is ended
    before another role's line begins (following: a long line may arrive over several looks)."""

    def __init__(self, prefix: Dict[str, str]):
        self.prefix = prefix
        self.open: Optional[str] = None  # the role whose line is on screen without its end yet

    def piece(self, name: str, data: bytes, whole: bool) -> None:
        text = data.decode("utf-8", "replace")
        if self.open not in (None, name):
            sys.stdout.write("\n")
            self.open = None
        sys.stdout.write(("" if self.open == name else self.prefix[name]) + text + ("\n" if whole else ""))
        self.open = None if whole else name

    def flush(self) -> None:
        if self.open is not None:
            sys.stdout.write("\n")
            self.open = None
        sys.stdout.flush()


def _show(readers: Dict[str, LogReader], out: Output, merge: bool, final: bool, budget: Optional[int]) -> None:
    """What each reader holds now: role after role, or (--merge) interleaved by receive time. Streamed: memory
    is a chunk per role whatever the logs hold, and `budget` bounds the bytes of each role read per call."""
    order = {name: (i, _role_order(name)) for i, name in enumerate(readers)}
    if not merge:
        for name, reader in readers.items():
            for _, piece, whole in reader.lines(final, budget):
                out.piece(name, piece, whole)
        return
    def keyed(name: str, reader: LogReader):
        for seq, (when, piece, whole) in enumerate(reader.lines(final, budget)):
            yield (when, order[name][1], order[name][0], seq), name, piece, whole

    streams = [keyed(name, reader) for name, reader in readers.items()]
    for _, name, piece, whole in heapq.merge(*streams, key=lambda item: item[0]):
        out.piece(name, piece, whole)


def _warn(readers: Dict[str, LogReader]) -> None:
    for reader in readers.values():
        if reader.warning:
            click.echo(f"launch logs: {reader.warning}", err=True)
            reader.warning = None


@click.command()
@click.argument("run_dir", metavar="RUN_DIR|RUN", type=click.Path(file_okay=False))
@click.option("--role", "roles", multiple=True, metavar="NAME",
              help="scheduler, server-0, worker-1, ...; launcher: a detached run's console (repeatable).")
@click.option("--tail", "-n", "tail", type=click.IntRange(min=0), metavar="N",
              help="Only the last N lines of each role's log.")
@click.option("--merge", "-m", is_flag=True, help="One view of every role, in the order the launcher received the lines.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new lines until the job ends (or Ctrl-C), even if its launcher was killed.")
@click.option("--cluster", metavar="NAME", help="RUN is a run of cluster NAME (its id, as `launch runs --cluster "
              "NAME` lists it): its logs on instance 0, streamed.")
def logs(run_dir: str, roles, tail: Optional[int], merge: bool, follow: bool, cluster: Optional[str] = None):
    """Print the logs of a run, each line prefixed with its role (--merge: interleaved by time)."""
    if cluster:  # the run's files are on the cluster's EFS: this same command, on instance 0
        return instance0.launch(cluster, ["logs", detached.run_dir_of(run_dir)],
                                dict(role=list(roles), tail=tail, merge=merge, follow=follow))
    if follow and LAUNCHER not in roles:
        _wait_for_logs(run_dir)
    console = _console(run_dir)
    available = _roles(run_dir) if os.path.isdir(rundir.logs_dir(run_dir)) or not console else []
    for name in roles:
        if name not in available and not (name == LAUNCHER and console):
            raise UsageError(f"no role {name!r} in {run_dir} (roles: {', '.join(available) or 'none'}"
                             f"{', launcher' if console else ''})")
    # nothing else yet: a detached launcher still in its preflight (or ended in it), whose console is all there is
    chosen = list(dict.fromkeys(roles)) or available or [LAUNCHER]
    if chosen == [LAUNCHER] and not console:
        raise UsageError(f"{run_dir} has no role logs yet (no regular file logs/<role>.log)")
    out = Output({name: ("" if len(chosen) == 1 else _label(name)) for name in chosen})
    readers = {name: LogReader(console if name == LAUNCHER else rundir.log_path(run_dir, name), timed=merge)
               for name in chosen}
    if tail is not None:
        for reader in readers.values():
            reader.tail(tail, final=not follow)
    if not follow:
        _show(readers, out, merge, final=True, budget=None)
        out.flush()
        _warn(readers)
        return
    signal.signal(signal.SIGINT, lambda s, f: sys.exit(Exit.INTERRUPTED))
    _follow(run_dir, readers, out, merge)


def _follow(run_dir: str, readers: Dict[str, LogReader], out: Output, merge: bool) -> None:
    """New lines as they come, until the run's launcher has ended (or is gone, or cannot be judged here)."""
    unknown_until = time.monotonic() + FOLLOW_UNKNOWN_LIMIT
    while True:
        now = launcher_record.state(run_dir)  # before reading: what was written until then is all read below
        done = now in (launcher_record.ENDED, launcher_record.GONE) or (
            now == launcher_record.UNKNOWN and time.monotonic() > unknown_until) or (
            now == launcher_record.ELSEWHERE and launcher_record.detached_cluster(run_dir) is not None)
        _show(readers, out, merge, final=done, budget=None if done else FOLLOW_BUDGET)
        if not done:
            sys.stdout.flush()
            _warn(readers)
            time.sleep(FOLLOW_POLL)  # following a file: polling is the mechanism, not synchronisation
            continue
        out.flush()
        _warn(readers)
        _say_why_ended(run_dir, now)
        return


def _say_why_ended(run_dir: str, now: str) -> None:
    if now == launcher_record.GONE:
        record = launcher_record.read_launcher(run_dir)
        click.echo(f"launch logs: the job's launcher (pid {record.pid if record else None}) is gone without writing "
                   f"summary.json; its roles ended with it", err=True)
    elif now == launcher_record.UNKNOWN:
        click.echo(f"launch logs: {run_dir} has no record of a launcher (launcher.json) nor a summary.json "
                   f"after {FOLLOW_UNKNOWN_LIMIT:g}s; stopped following", err=True)
    elif now == launcher_record.ELSEWHERE:
        raise CommandError(launcher_record.moved_text(run_dir, "no longer followed"))
