"""Whether a run's launcher still runs: RUN_DIR/launcher.json records its pid and its process start time
(so a reused pid is not taken for it). `launch logs --follow`, `launch runs` and `launch stop` read it; a
launcher killed by SIGKILL leaves no summary.json, and this is how its end is still seen.

A detached launcher (`launch train --cluster NAME --detach`) is recorded before its run directory exists
(the directory must be empty when the launcher takes it): RUNS/.detached/<run>.json holds the same record,
written by the program that started it, and RUNS/.detached/<run>.log its console output."""
from __future__ import annotations

import datetime
import json
import os
from typing import Optional, Tuple

from mxlaunch.launcher import rundir

LAUNCHER_FILE = "launcher.json"
DETACHED_DIR = ".detached"  # beside the run directories; a hidden name: `launch runs` lists no such folder
RUNNING, ENDED, GONE, UNKNOWN = "running", "ended", "launcher gone", "unknown"


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


def detached_paths(run_dir: str) -> Tuple[str, str]:
    """(console log, start record) of a detached run: RUNS/.detached/<run>.log and RUNS/.detached/<run>.json."""
    parent, name = os.path.split(os.path.normpath(os.path.abspath(run_dir)))
    base = os.path.join(parent, DETACHED_DIR, name)
    return base + ".log", base + ".json"


def _write_record(path: str, pid: int, extra: dict) -> None:
    data = {"pid": pid, "process_start": process_start(pid),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"), **extra}
    tmp = path + ".tmp"
    with rundir.open_new(tmp, "w") as f:
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
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def read_launcher(run_dir: str) -> Optional[dict]:
    """The launcher's record of the run: its launcher.json, else a detached launcher's start record."""
    return _read_record(launcher_path(run_dir)) or _read_record(detached_paths(run_dir)[1])


def is_alive(record: dict) -> bool:
    """The recorded process still runs (the same one: its start time matches, where recorded)."""
    start = process_start(record["pid"])
    return start is not None and record.get("process_start") in (None, start)


def state(run_dir: str) -> str:
    """RUNNING (its launcher lives: also between the attempts of --max-restarts, when a summary.json of the
    last attempt exists), ENDED (summary.json written, its launcher gone), GONE (it died without a summary),
    UNKNOWN (no record: a run from before launcher.json, or one still being set up)."""
    record = read_launcher(run_dir)
    if record is not None and is_alive(record):
        return RUNNING
    if os.path.exists(rundir.summary_path(run_dir)):
        return ENDED
    return UNKNOWN if record is None else GONE
