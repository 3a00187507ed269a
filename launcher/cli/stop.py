"""`launch stop RUN_DIR` (a launcher started elsewhere: another terminal, or detached) and `launch stop --cluster
NAME RUN` (a detached run, stopped by the same command on instance 0): SIGTERM to the run's launcher, found by
its record (launcher/jobs/launcher_record.py: pid and process start time, so a reused pid is never signalled). The launcher
stops every role as on Ctrl-C and writes summary.json (reason "terminated", 143); this waits for it, bounded.

A run directory on EFS is seen from every instance, but a pid means something on one machine in one boot: a
record from another host is refused (exit 10, naming where to stop it: `launch stop --cluster NAME RUN` for a
detached run), one from an earlier boot of this host is a launcher that is gone.

Exit 0 when the run is stopped, or had already ended; 2 when RUN_DIR is not a run; 1 when its launcher record is
missing or damaged (launcher_record never yields one naming no process id), or is not trusted (a file another user
owns, or in a directory another user can write to: nothing is signalled); 10 when its launcher runs on another
machine; 1 when its launcher did not end within --timeout (it is then killed: its roles end through their
lifeline, and no summary.json is written; a detached launcher's key folder is removed here then, as the
launcher cannot do it after SIGKILL); 1 when a run whose launcher is gone with its instance cannot be marked lost
(its summary.json not written: a full or read-only disk).
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from typing import List, Optional

import click

from mxlaunch.errors import CommandError, UsageError
from mxlaunch.exits import Exit
from mxlaunch.files import MIB, UnsafeFile, read_bounded
from mxlaunch.infra.transport.remote.detach_starter import remove_keys
from mxlaunch.launcher.jobs import detached, launcher_record, lost, rundir

KILL_WAIT = 5.0  # after SIGKILL: the kernel's part, never long
SUMMARY_LIMIT = 16 * MIB  # bytes of a summary.json read to say how a run ended


class RunsElsewhere(CommandError):
    exit_code = Exit.ELSEWHERE


def _elsewhere(run_dir: str, record: launcher_record.LauncherRecord, live: Optional[List[str]], echo) -> None:
    """A launcher recorded on another host is not this machine's to signal: say where it runs. A detached run's
    launcher whose instance AWS no longer lists as pending or running (`live`: the addresses of those, given by
    `launch stop --cluster` after asking AWS) is gone with it: the run is marked lost."""
    host, cluster = launcher_record.elsewhere(record), launcher_record.detached_cluster(run_dir)
    run = os.path.basename(run_dir)
    if not cluster:
        raise RunsElsewhere(f"run {run_dir}: its launcher (pid {record.pid}) runs on {host}, not on this machine: "
                            f"launch stop {run_dir} on {host}")
    address = launcher_record.launcher_address(record)
    if live is None or address is None:
        raise RunsElsewhere(launcher_record.moved_text(run_dir, "not stopped from here") if address else
                            f"run {run}: its launcher (pid {record.pid}) ran on {host}, which is not this "
                            f"instance: its record does not say which instance that was; stop it there")
    if address in live:
        raise RunsElsewhere(f"run {run}: its launcher (pid {record.pid}) runs on {address}, an instance of "
                            f"{cluster} that AWS lists as running but that is not its instance 0 now: stop it "
                            f"there (`launch cluster ssh {cluster} INDEX`, then `launch stop {run_dir}`)")
    try:
        launcher_record.mark_lost(run_dir, record, f"its launcher ran on {address}, which AWS no longer lists "
                                                   f"among cluster {cluster}'s running instances")
    except OSError as exc:  # a full or read-only disk, a folder in the way: the run stays as it was
        raise CommandError(f"run {run}: its launcher ran on {address}, which AWS no longer lists among cluster "
                           f"{cluster}'s running instances, but the run could not be marked lost: "
                           f"{exc.strerror or exc} ({exc.filename})") from exc
    echo(f"run {run}: its launcher (pid {record.pid}) ran on {address}, which AWS no longer lists among cluster "
         f"{cluster}'s running instances: it is gone with it, and its roles with it; marked the run lost "
         f"(summary.json: {launcher_record.LOST!r})")


def _wait_gone(pidfd: Optional[int], record: launcher_record.LauncherRecord, timeout: float) -> bool:
    """Whether the recorded process ended within `timeout` s: a pidfd turns readable when it does (no
    polling); without one (an old kernel), /proc is looked at every 50 ms."""
    if pidfd is not None:
        return bool(select.select([pidfd], [], [], max(0.0, timeout))[0])
    deadline = time.monotonic() + timeout
    while launcher_record.is_alive(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)  # a process that is not our child: polling /proc is the mechanism
    return True


def _open(record: launcher_record.LauncherRecord) -> Optional[int]:
    """A pidfd of the recorded launcher (None where pidfds are unavailable); ProcessLookupError if it is gone."""
    try:
        fd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        raise
    except (AttributeError, OSError):
        if not launcher_record.is_alive(record):  # kill() is then all there is: never for a pid that is not that process
            raise ProcessLookupError(record.pid) from None
        return None
    if not launcher_record.is_alive(record):  # checked after opening: the fd is then surely that process's
        os.close(fd)
        raise ProcessLookupError(record.pid)
    return fd


def _signal(pidfd: Optional[int], record: launcher_record.LauncherRecord, signum: int) -> None:
    if pidfd is not None:
        signal.pidfd_send_signal(pidfd, signum)
    else:
        os.kill(record.pid, signum)


def _summary(run_dir: str) -> dict:
    """summary.json's object; FileNotFoundError when there is none, {} when it is unreadable."""
    try:
        data = json.loads(read_bounded(rundir.summary_path(run_dir), SUMMARY_LIMIT))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, UnsafeFile):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return {}
    return data if isinstance(data, dict) else {}


def _reason(run_dir: str) -> Optional[str]:
    try:
        return _summary(run_dir).get("reason")
    except FileNotFoundError:
        return None


def _ended_text(run_dir: str) -> str:
    try:
        data = _summary(run_dir)
    except FileNotFoundError:
        return "no summary.json (it had not started the job's roles, or died without one)"
    if not data:  # cut short, or JSON that is not a summary
        return "its summary.json is unreadable"
    status = data.get("status", "?")
    return f"summary: {data.get('reason', '?')}" + (f" (exit {status})" if status is not None else "")


def _trusted_record(run_dir: str, echo) -> launcher_record.LauncherRecord:
    """The run's launcher record. One that another user may have written is never acted on (it could name any
    process): passed over with a warning line beside a record of this user's, else the one line of the error."""
    record, passed = launcher_record.launcher_records(run_dir)
    untrusted = [p for p in passed if p.untrusted]
    if record is None and untrusted:
        raise CommandError(f"run {run_dir}: its launcher record is not trusted ({untrusted[0].why}): nothing "
                           f"signalled")
    if record is None and not os.path.exists(rundir.job_yaml(run_dir)):
        raise UsageError(f"{run_dir} is not a run (no job.yaml and no launcher record)")
    if record is None:  # (launcher_record never returns a record whose pid is no process id: kill(0 or -1) is a group)
        raise CommandError(f"run {run_dir} has no readable launcher record (launcher.json missing or damaged): "
                           f"cannot tell which process to stop")
    for passed_over in untrusted:
        echo(f"launch stop: warning: {passed_over.why}: passed over", err=True)
    return record


def stop_run(run_dir: str, timeout: float, echo=click.echo, live: Optional[List[str]] = None) -> None:
    run_dir = os.path.abspath(run_dir)
    record = _trusted_record(run_dir, echo)  # launcher.json, else a detached launcher's start record
    if launcher_record.elsewhere(record) is not None:  # (a summary.json alone proves nothing: also written between
        if _reason(run_dir) == launcher_record.LOST:  # restarts), but a run marked lost has ended
            echo(f"run {run_dir} had already ended ({_ended_text(run_dir)}): nothing to stop")
            return
        return _elsewhere(run_dir, record, live, echo)
    try:
        pidfd = _open(record)
    except ProcessLookupError:
        if launcher_record.state(run_dir) == launcher_record.ENDED:
            echo(f"run {run_dir} had already ended ({_ended_text(run_dir)}): nothing to stop")
        else:
            echo(f"run {run_dir}: its launcher (pid {record.pid}) is already gone, without a summary.json "
                 f"(its roles ended with it): nothing to stop")
        return
    started = time.monotonic()
    try:
        try:
            _signal(pidfd, record, signal.SIGTERM)
        except ProcessLookupError:
            pass  # it ended between the look and the signal
        except PermissionError as exc:
            raise CommandError(f"run {run_dir}: not allowed to signal its launcher (pid {record.pid}, another "
                               f"user's?)") from exc
        if not _wait_gone(pidfd, record, timeout):
            with contextlib.suppress(ProcessLookupError):
                _signal(pidfd, record, signal.SIGKILL)
            _wait_gone(pidfd, record, KILL_WAIT)
            _remove_detached_keys(run_dir, record)
            raise CommandError(f"run {run_dir}: its launcher (pid {record.pid}) did not end within {timeout:g}s "
                               f"of SIGTERM and was killed (SIGKILL): its roles end through their lifeline; no "
                               f"summary.json")
    finally:
        if pidfd is not None:
            os.close(pidfd)
    echo(f"stopped run {run_dir}: its launcher (pid {record.pid}) stopped every role and ended in "
         f"{time.monotonic() - started:.1f}s; {_ended_text(run_dir)}")


def _remove_detached_keys(run_dir: str, record: launcher_record.LauncherRecord) -> None:
    """After SIGKILL of a detached launcher: its key folder (~/.mxlaunch/detach/NAME/RUN), which it can no
    longer remove itself."""
    cluster, run = launcher_record.detached_cluster(run_dir), os.path.basename(run_dir)
    if cluster and detached.RUN_NAME.fullmatch(run):  # names, never paths (the record's cluster is checked too)
        remove_keys(detached.key_folder(cluster, run))


@click.command()
@click.argument("run", metavar="RUN_DIR|RUN")
@click.option("--cluster", metavar="NAME", help="RUN is a run of cluster NAME (its id, as `launch runs --cluster "
              "NAME` lists it): stopped on instance 0, where its launcher runs.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              metavar="SECONDS", help="How long the launcher may take to stop every role (then it is killed).")
@click.option("--live-instances", "live", metavar="ADDR,...", hidden=True,
              help="On instance 0, from `launch stop --cluster`: the private addresses of the cluster's instances "
                   "AWS lists as pending or running (a detached launcher recorded on none of them is gone).")
def stop(run: str, cluster: Optional[str], timeout: float, live: Optional[str] = None) -> int:
    """Stop a run's launcher (SIGTERM): it stops every role and writes summary.json; wait until it has ended."""
    if cluster:  # the launcher runs on instance 0: this same command, there (launcher/jobs/detached.py)
        return lost.stop_on_cluster(cluster, run, timeout)
    stop_run(run, timeout, live=None if live is None else [a for a in live.split(",") if a])
    return 0
