"""`launch stop RUN_DIR` (a launcher started elsewhere: another terminal, or detached) and `launch stop --cluster
NAME RUN` (a detached run, stopped by the same command on instance 0): SIGTERM to the run's launcher, found by
its record (launcher/runstate.py: pid and process start time, so a reused pid is never signalled). The launcher
stops every role as on Ctrl-C and writes summary.json (reason "terminated", 143); this waits for it, bounded.

Exit 0 when the run is stopped, or had already ended; 2 when RUN_DIR is not a run; 1 when its launcher did not
end within --timeout (it is then killed: its roles end through their lifeline, and no summary.json is written).
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from typing import Optional

import click

from mxlaunch.errors import CommandError, UsageError
from mxlaunch.launcher import rundir, runstate

KILL_WAIT = 5.0  # after SIGKILL: the kernel's part, never long


def _wait_gone(pidfd: Optional[int], record: dict, timeout: float) -> bool:
    """Whether the recorded process ended within `timeout` s: a pidfd turns readable when it does (no
    polling); without one (an old kernel), /proc is looked at every 50 ms."""
    if pidfd is not None:
        return bool(select.select([pidfd], [], [], max(0.0, timeout))[0])
    deadline = time.monotonic() + timeout
    while runstate.is_alive(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)  # a process that is not our child: polling /proc is the mechanism
    return True


def _open(record: dict) -> Optional[int]:
    """A pidfd of the recorded launcher (None where pidfds are unavailable); ProcessLookupError if it is gone."""
    try:
        fd = os.pidfd_open(record["pid"])
    except ProcessLookupError:
        raise
    except (AttributeError, OSError):
        return None
    if not runstate.is_alive(record):  # checked after opening: the fd is then surely that process's
        os.close(fd)
        raise ProcessLookupError(record["pid"])
    return fd


def _signal(pidfd: Optional[int], record: dict, signum: int) -> None:
    if pidfd is not None:
        signal.pidfd_send_signal(pidfd, signum)
    else:
        os.kill(record["pid"], signum)


def _ended_text(run_dir: str) -> str:
    try:
        with open(rundir.summary_path(run_dir), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return "no summary.json (it had not started the job's roles, or died without one)"
    return f"summary: {data.get('reason', '?')} (exit {data.get('status', '?')})"


def stop_run(run_dir: str, timeout: float, echo=click.echo) -> None:
    run_dir = os.path.abspath(run_dir)
    record = runstate.read_launcher(run_dir)  # launcher.json, else a detached launcher's start record
    if record is None and not os.path.exists(rundir.job_yaml(run_dir)):
        raise UsageError(f"{run_dir} is not a run (no job.yaml and no launcher record)")
    if record is None:
        raise CommandError(f"run {run_dir} has no launcher record (launcher.json): cannot tell which process to stop")
    try:
        pidfd = _open(record)
    except ProcessLookupError:
        if runstate.state(run_dir) == runstate.ENDED:
            echo(f"run {run_dir} had already ended ({_ended_text(run_dir)}): nothing to stop")
        else:
            echo(f"run {run_dir}: its launcher (pid {record['pid']}) is already gone, without a summary.json "
                 f"(its roles ended with it): nothing to stop")
        return
    started = time.monotonic()
    try:
        try:
            _signal(pidfd, record, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended between the look and the signal
        except PermissionError as exc:
            raise CommandError(f"run {run_dir}: not allowed to signal its launcher (pid {record['pid']}, another "
                               f"user's?)") from exc
        if not _wait_gone(pidfd, record, timeout):
            with contextlib.suppress(ProcessLookupError):
                _signal(pidfd, record, signal.SIGKILL)
            _wait_gone(pidfd, record, KILL_WAIT)
            raise CommandError(f"run {run_dir}: its launcher (pid {record['pid']}) did not end within {timeout:g}s "
                               f"of SIGTERM and was killed (SIGKILL): its roles end through their lifeline; no "
                               f"summary.json")
    finally:
        if pidfd is not None:
            os.close(pidfd)
    echo(f"stopped run {run_dir}: its launcher (pid {record['pid']}) stopped every role and ended in "
         f"{time.monotonic() - started:.1f}s; {_ended_text(run_dir)}")


@click.command()
@click.argument("run", metavar="RUN_DIR|RUN")
@click.option("--cluster", metavar="NAME", help="RUN is a run of cluster NAME (its id, as `launch runs --cluster "
              "NAME` lists it): stopped on instance 0, where its launcher runs.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              metavar="SECONDS", help="How long the launcher may take to stop every role (then it is killed).")
def stop(run: str, cluster: Optional[str], timeout: float) -> int:
    """Stop a run's launcher (SIGTERM): it stops every role and writes summary.json; wait until it has ended."""
    if cluster:  # the launcher runs on instance 0: this same command, there (mxlaunch/infra/detach.py)
        from mxlaunch.infra import detach

        return detach.on_instance0(cluster, ["stop", detach.run_dir_of(run), "--timeout", repr(timeout)],
                                   click.echo, lambda line: click.echo(line, err=True))
    stop_run(run, timeout)
    return 0
