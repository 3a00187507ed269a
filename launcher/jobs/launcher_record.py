"""Whether a run's launcher still runs: RUN_DIR/launcher.json records its pid and its process start time
(so a reused pid is not taken for it), and the machine it runs on: boot_id and hostname (a run directory on EFS
is seen from every instance, and a pid means something on one machine, in one boot, only). `launch logs
--follow`, `launch runs` and `launch stop` read it; a launcher killed by SIGKILL leaves no summary.json, and
this is how its end is still seen. A record without a process start time matches no process (fail closed).

A detached launcher (`launch train --cluster NAME --detach`) is recorded before its run directory exists
(the directory must be empty when the launcher takes it): RUNS/.detached/<run>.json holds the same record,
written by the program that started it, and RUNS/.detached/<run>.log its console output.

A record names a process that `launch stop` signals: one is taken only from a file this user owns, in a directory
no other user can plant a file in (another user may own WORKDIR/runs); any other is passed over, said so."""
from __future__ import annotations

import datetime
import json
import os
import re
import socket
from dataclasses import dataclass
from typing import List, Optional, Tuple

from mxlaunch.files import KIB, NotOwn, UnsafeFile, open_new, read_own
from mxlaunch.infra.cloud.spec import NAME_RE
from mxlaunch.launcher.jobs import rundir
from mxlaunch.records import dump, expect, load

LAUNCHER_FILE = "launcher.json"
DETACHED_DIR = ".detached"  # beside the run directories; a hidden name: `launch runs` lists no such folder
RUNNING, ENDED, GONE, UNKNOWN = "running", "ended", "launcher gone", "unknown"
ELSEWHERE = "runs elsewhere"  # its launcher runs on another machine (elsewhere() says which): not ours to judge
BOOT_ID = "/proc/sys/kernel/random/boot_id"
PID_MAX_LIMIT = 4194304  # the kernel's pid_max ceiling (2^22)
RECORD_LIMIT = 64 * KIB  # a record is a few hundred bytes: more is not one


@dataclass(frozen=True)
class LauncherRecord:
    """launcher.json, and a detached launcher's start record (written by the program that starts it,
    infra/transport/remote/detach_starter.py, in this same shape)."""

    # never pid 0 or -1 (kill(-1) signals every process), True (an int in Python) or one past Linux's limit
    # (os.kill raises OverflowError, not OSError)
    pid: int = expect("a process id", lambda pid: 0 < pid <= PID_MAX_LIMIT)
    process_start: Optional[int] = None  # clock ticks since boot; None matches no process (fail closed)
    boot_id: Optional[str] = None  # None with hostname None: a record from before they were kept
    hostname: Optional[str] = None
    started: Optional[str] = None  # ISO 8601, UTC
    # a detached launcher's cluster: a name, never a path (`launch stop` builds its key folder's path from it)
    cluster: Optional[str] = expect("a cluster name", lambda name: bool(NAME_RE.fullmatch(name)), default=None)
    console: Optional[str] = None  # a detached launcher's console log
    address: Optional[str] = None  # a detached launcher's instance 0, by the private address the job's hosts name


def launcher_path(run_dir: str) -> str:
    return os.path.join(run_dir, LAUNCHER_FILE)


def process_start(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if it is gone: also
    when it is a zombie (it has ended; a detached launcher's parent is gone, and not every init reaps at once)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        if fields[0] in (b"Z", b"X"):
            return None
        return int(fields[19])  # fields after the command: state is field 3, starttime field 22
    except (OSError, IndexError, ValueError):
        return None


def machine() -> dict:
    """This machine in this boot, as a launcher record holds it (boot_id, hostname)."""
    try:
        with open(BOOT_ID, encoding="ascii") as f:
            boot_id = f.read().strip()
    except OSError:
        boot_id = None
    return {"boot_id": boot_id, "hostname": socket.gethostname()}


def elsewhere(record: LauncherRecord) -> Optional[str]:
    """The host a record's launcher runs on when that is not this machine (None: it is this one, or the record
    predates boot ids and is judged by pid and start time alone). The same hostname in another boot is this
    machine rebooted: not elsewhere (its launcher is surely gone, which is_alive tells)."""
    if record.boot_id is None and record.hostname is None:
        return None
    return None if record.hostname == machine()["hostname"] else str(record.hostname or "an unknown host")


def detached_paths(run_dir: str) -> Tuple[str, str]:
    """(console log, start record) of a detached run: RUNS/.detached/<run>.log and RUNS/.detached/<run>.json."""
    parent, name = os.path.split(os.path.normpath(os.path.abspath(run_dir)))
    base = os.path.join(parent, DETACHED_DIR, name)
    return base + ".log", base + ".json"


def _write_record(path: str, record: LauncherRecord) -> None:
    tmp = path + ".tmp"
    with open_new(tmp, "w") as f:
        json.dump(dump(record), f)
        f.write("\n")
    os.replace(tmp, path)


def _now(pid: int, **extra) -> LauncherRecord:
    return LauncherRecord(pid=pid, process_start=process_start(pid), **machine(),
                          started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                          **extra)


def record_launcher(run_dir: str) -> None:
    _write_record(launcher_path(run_dir), _now(os.getpid()))


def record_detached(run_dir: str, pid: int, cluster: Optional[str] = None, console: Optional[str] = None) -> None:
    """The start record of a detached launcher `pid` (its own launcher.json follows once it has its run directory)."""
    _write_record(detached_paths(run_dir)[1], _now(pid, cluster=cluster, console=console))


@dataclass(frozen=True)
class PassedOver:
    """A record file that is there but was not taken: damaged, or not trusted (another user may have written it)."""

    path: str
    why: str  # one line, naming the file
    untrusted: bool


def _read(path: str) -> Tuple[Optional[LauncherRecord], Optional[PassedOver]]:
    try:
        return load(LauncherRecord, json.loads(read_own(path, RECORD_LIMIT))), None
    except FileNotFoundError:
        return None, None
    except NotOwn as exc:
        return None, PassedOver(path, str(exc), True)
    except UnsafeFile as exc:
        return None, PassedOver(path, str(exc), False)
    except OSError as exc:
        return None, PassedOver(path, f"{path}: {exc.strerror or exc}", False)
    except ValueError:  # RecordError, UnicodeDecodeError, JSONDecodeError: ValueErrors
        return None, PassedOver(path, f"{path} is damaged (not a launcher record)", False)


def read_record(path: str) -> Optional[LauncherRecord]:
    """The record in `path`; None when there is none, it is damaged (never a record naming no process) or it is
    not this user's own (see the module's text)."""
    return _read(path)[0]


def launcher_records(run_dir: str) -> Tuple[Optional[LauncherRecord], List[PassedOver]]:
    """The launcher's record of the run: the newer of its launcher.json and a detached launcher's start record
    (a detached resume is recorded anew before its launcher rewrites launcher.json); and the record files there
    that were passed over."""
    read = [_read(path) for path in (launcher_path(run_dir), detached_paths(run_dir)[1])]
    record = max((r for r, _ in read if r), key=lambda r: r.started or "", default=None)
    return record, [passed for _, passed in read if passed]


def read_launcher(run_dir: str) -> Optional[LauncherRecord]:
    return launcher_records(run_dir)[0]


def is_alive(record: LauncherRecord) -> bool:
    """The recorded process runs on this machine, in this boot, and is the same one (its start time matches):
    a record lacking the start time, or from another machine or boot, matches nothing here."""
    if elsewhere(record) or (record.boot_id is not None and record.boot_id != machine()["boot_id"]):
        return False
    start = process_start(record.pid)
    return start is not None and record.process_start == start


def detached_cluster(run_dir: str) -> Optional[str]:
    """The cluster a detached run was started on (its start record's), None for any other run."""
    record = read_record(detached_paths(run_dir)[1])
    return record.cluster if record else None


def state(run_dir: str) -> str:
    """RUNNING (its launcher lives: also between the attempts of --max-restarts, when a summary.json of the
    last attempt exists), ENDED (summary.json written, its launcher gone), GONE (it died without a summary),
    ELSEWHERE (no summary, and its launcher runs on another machine: whether it lives is seen there), UNKNOWN
    (no record: a run from before launcher.json, or one still being set up)."""
    record = read_launcher(run_dir)
    if record is not None and is_alive(record):
        return RUNNING
    if os.path.exists(rundir.summary_path(run_dir)):
        return ENDED
    if record is not None and elsewhere(record):
        return ELSEWHERE
    return UNKNOWN if record is None else GONE


def moved_text(run_dir: str, doing: str) -> str:
    """Why a detached run whose record names another machine (ELSEWHERE) cannot be judged on this instance 0:
    its launcher ran on the instance 0 it was started on, which this one is not (replaced, or stopped)."""
    record, run = read_launcher(run_dir), os.path.basename(os.path.normpath(run_dir))
    host = (launcher_address(record) or record.hostname) if record else None
    return (f"run {run}: its launcher (pid {record.pid if record else '?'}) ran on {host}, which is not this "
            f"cluster's instance 0 any more (replaced, or stopped): {doing}; `launch stop --cluster "
            f"{detached_cluster(run_dir)} {run}` asks AWS whether that instance is gone, and if so marks the run lost")


EC2_HOSTNAME = re.compile(r"ip-(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})(\..*)?")  # EC2's own: ip-10-0-1-23
LOST = "launcher lost"  # summary.json's reason for a run whose launcher went with its instance


def launcher_address(record: LauncherRecord) -> Optional[str]:
    """The private address of the machine a detached launcher ran on: recorded since it was kept, else read from
    EC2's own hostname (ip-10-0-1-23); None when neither says."""
    if record.address:
        return record.address
    found = EC2_HOSTNAME.fullmatch(record.hostname or "")
    return ".".join(found.group(1, 2, 3, 4)) if found else None


def mark_lost(run_dir: str, record: LauncherRecord, why: str) -> None:
    """summary.json of a run whose launcher is gone with its machine: the run has ended (`launch runs`, `logs
    --follow` and `stop` see it so); `launch train --resume` goes on from its checkpoints as after any end."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
    data = {"status": None, "reason": LOST, "start": record.started, "end": now, "notes": [why], "roles": [],
            "restarts": []}
    tmp = rundir.summary_path(run_dir) + ".tmp"
    with open_new(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, rundir.summary_path(run_dir))
