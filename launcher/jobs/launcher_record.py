"""Whether a run's launcher still runs: RUN_DIR/launcher.json records its pid and its process start time
(so a reused pid is not taken for it), and the machine it runs on: boot_id and hostname (a run directory on EFS
is seen from every instance, and a pid means something on one machine, in one boot, only). `launch logs
--follow`, `launch runs` and `launch stop` read it; a launcher killed by SIGKILL leaves no summary.json, and
this is how its end is still seen. A record without a process start time matches no process (fail closed).

A detached launcher (`launch train --cluster NAME --detach`) is recorded before its run directory exists
(the directory must be empty when the launcher takes it): RUNS/.detached/<run>.json holds the same record,
written by the program that started it, and RUNS/.detached/<run>.log its console output."""
from __future__ import annotations

import datetime
import json
import os
import socket
from typing import Optional, Tuple

from mxlaunch.launcher.jobs import rundir
from mxlaunch.files import open_new
LAUNCHER_FILE = "launcher.json"
DETACHED_DIR = ".detached"  # beside the run directories; a hidden name: `launch runs` lists no such folder
RUNNING, ENDED, GONE, UNKNOWN = "running", "ended", "launcher gone", "unknown"
ELSEWHERE = "runs elsewhere"  # its launcher runs on another machine (elsewhere() says which): not ours to judge
BOOT_ID = "/proc/sys/kernel/random/boot_id"
PID_MAX_LIMIT = 4194304  # the kernel's pid_max ceiling (2^22)


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
    """This machine in this boot, as a launcher record holds it."""
    try:
        with open(BOOT_ID, encoding="ascii") as f:
            boot_id = f.read().strip()
    except OSError:
        boot_id = None
    return {"boot_id": boot_id, "hostname": socket.gethostname()}


def elsewhere(record: dict) -> Optional[str]:
    """The host a record's launcher runs on when that is not this machine (None: it is this one, or the record
    predates boot ids and is judged by pid and start time alone). The same hostname in another boot is this
    machine rebooted: not elsewhere (its launcher is surely gone, which is_alive tells)."""
    if "boot_id" not in record and "hostname" not in record:
        return None
    here = machine()
    return None if record.get("hostname") == here["hostname"] else str(record.get("hostname") or "an unknown host")


def detached_paths(run_dir: str) -> Tuple[str, str]:
    """(console log, start record) of a detached run: RUNS/.detached/<run>.log and RUNS/.detached/<run>.json."""
    parent, name = os.path.split(os.path.normpath(os.path.abspath(run_dir)))
    base = os.path.join(parent, DETACHED_DIR, name)
    return base + ".log", base + ".json"


def _write_record(path: str, pid: int, extra: dict) -> None:
    data = {"pid": pid, "process_start": process_start(pid), **machine(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"), **extra}
    tmp = path + ".tmp"
    with open_new(tmp, "w") as f:
        json.dump(data, f)
        f.write("\n")
    os.replace(tmp, path)


def record_launcher(run_dir: str) -> None:
    _write_record(launcher_path(run_dir), os.getpid(), {})


def record_detached(run_dir: str, pid: int, **extra) -> None:
    """The start record of a detached launcher `pid` (its own launcher.json follows once it has its run directory)."""
    _write_record(detached_paths(run_dir)[1], pid, extra)


def _read_record(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    # a damaged record must never name pid 0 or -1 (kill(-1) signals every process), True (an int in Python) or
    # one past Linux's limit (os.kill raises OverflowError, not OSError)
    return data if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid <= PID_MAX_LIMIT else None


def read_launcher(run_dir: str) -> Optional[dict]:
    """The launcher's record of the run: the newer of its launcher.json and a detached launcher's start record
    (a detached resume is recorded anew before its launcher rewrites launcher.json)."""
    records = [r for r in (_read_record(launcher_path(run_dir)), _read_record(detached_paths(run_dir)[1])) if r]
    return max(records, key=lambda r: str(r.get("started") or ""), default=None)


def is_alive(record: dict) -> bool:
    """The recorded process runs on this machine, in this boot, and is the same one (its start time matches):
    a record lacking the start time, or from another machine or boot, matches nothing here."""
    boot_id = machine()["boot_id"]
    if elsewhere(record) or record.get("boot_id", boot_id) != boot_id:
        return False
    start = process_start(record["pid"])
    return start is not None and record.get("process_start") == start


def detached_cluster(run_dir: str) -> Optional[str]:
    """The cluster a detached run was started on (its start record's), None for any other run."""
    cluster = (_read_record(detached_paths(run_dir)[1]) or {}).get("cluster")
    return cluster if isinstance(cluster, str) else None


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
