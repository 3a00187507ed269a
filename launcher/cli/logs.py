"""`launch logs RUN_DIR [--role worker-1] [--tail N] [--merge] [--follow]`: a run's role logs, prefixed like
the live console; `--merge` interleaves the roles by the time the launcher received each line (from
`logs/<role>.log.times`, launcher/jobs/output.py).

A detached run (launch train --detach) also has its launcher's console (`--role launcher`), which is all it
has until its launcher has passed the preflight and made the run directory: `--follow` waits for the roles'
logs as long as that launcher lives. `launch logs --cluster NAME RUN` is this command on the cluster's
instance 0, where the run's files are."""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Dict, List, Optional, Tuple

import click

from mxlaunch.launcher.jobs import detached, instance0, rundir, launcher_record
from mxlaunch.launcher.jobs.output import times_path
from mxlaunch.infra.transport.roles import RoleId
from mxlaunch.errors import CommandError, UsageError
from mxlaunch.exits import Exit

FOLLOW_POLL = 0.2  # seconds between looks at the log files while following
FOLLOW_UNKNOWN_LIMIT = 10.0  # a run with no launcher record (older, or never set up) is followed this long
Line = Tuple[float, bytes]  # (receive time, the line without its newline)


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
        _emit("", [line for _, line in LogReader(console).read(final=True)])
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


class LogReader:
    """New complete lines of one role's log, each with its receive time (the previous line's where the
    times file lags or is missing: a run from before it existed)."""

    def __init__(self, path: str):
        self.path = path
        self.offset = self.times_offset = 0
        self.pending = self.times_pending = b""
        self.times: List[float] = []
        self.count = 0
        self.last_time = 0.0

    @staticmethod
    def _read(path: str, offset: int) -> Tuple[bytes, int]:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
                return data, f.tell()
        except FileNotFoundError:
            return b"", offset

    def read(self, final: bool) -> List[Line]:
        data, self.offset = self._read(self.path, self.offset)
        stamps, self.times_offset = self._read(times_path(self.path), self.times_offset)
        stamps = self.times_pending + stamps
        complete, _, self.times_pending = stamps.rpartition(b"\n")
        for stamp in complete.split(b"\n") if complete else ():
            try:
                self.times.append(float(stamp))
            except ValueError:
                self.times.append(self.times[-1] if self.times else 0.0)
        data = self.pending + data
        complete, _, self.pending = data.rpartition(b"\n")
        lines = complete.split(b"\n") if complete else []
        if final and self.pending:
            lines.append(self.pending)
            self.pending = b""
        out = []
        for line in lines:
            if self.count < len(self.times):
                self.last_time = self.times[self.count]
            self.count += 1
            out.append((self.last_time, line))
        return out


def _emit(prefix: str, lines: List[bytes]) -> None:
    sys.stdout.write("".join(prefix + line.decode("utf-8", "replace") + "\n" for line in lines))
    sys.stdout.flush()


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
    prefix = {name: ("" if len(chosen) == 1 else _label(name)) for name in chosen}
    readers = {name: LogReader(console if name == LAUNCHER else rundir.log_path(run_dir, name)) for name in chosen}

    def show(final: bool, last: Optional[int] = None) -> None:
        batches: Dict[str, List[Line]] = {}
        for name in chosen:
            got = readers[name].read(final)
            batches[name] = got[-last:] if last is not None and last > 0 else ([] if last == 0 else got)
        if not merge:
            for name in chosen:
                _emit(prefix[name], [line for _, line in batches[name]])
            return
        merged = sorted(((t, _role_order(name), i, name, line) for name in chosen
                         for i, (t, line) in enumerate(batches[name])), key=lambda x: x[:3])
        for _, _, _, name, line in merged:
            _emit(prefix[name], [line])

    if not follow:
        show(final=True, last=tail)
        return
    signal.signal(signal.SIGINT, lambda s, f: sys.exit(Exit.INTERRUPTED))
    show(final=False, last=tail)
    unknown_until = time.monotonic() + FOLLOW_UNKNOWN_LIMIT
    while True:
        now = launcher_record.state(run_dir)  # before reading: what was written until then is all read below
        done = now in (launcher_record.ENDED, launcher_record.GONE) or (now == launcher_record.UNKNOWN and time.monotonic() > unknown_until)
        show(final=done)
        if done:
            if now == launcher_record.GONE:
                record = launcher_record.read_launcher(run_dir)
                click.echo(f"launch logs: the job's launcher (pid {record.pid if record else None}) is gone without writing "
                           f"summary.json; its roles ended with it", err=True)
            elif now == launcher_record.UNKNOWN:
                click.echo(f"launch logs: {run_dir} has no record of a launcher (launcher.json) nor a summary.json "
                           f"after {FOLLOW_UNKNOWN_LIMIT:g}s; stopped following", err=True)
            return
        time.sleep(FOLLOW_POLL)  # following a file: polling is the mechanism, not synchronisation
