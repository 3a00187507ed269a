"""Whether a run's launcher still runs: RUN_DIR/launcher.json records its pid and its process start time
(so a reused pid is not taken for it). `launch logs --follow` and `launch runs` read it; a launcher killed
by SIGKILL leaves no summary.json, and this is how its end is still seen."""
from __future__ import annotations

import datetime
import json
import os
from typing import Optional

from mxlaunch.launcher import rundir

LAUNCHER_FILE = "launcher.json"
RUNNING, ENDED, GONE, UNKNOWN = "running", "ended", "launcher gone", "unknown"


def launcher_path(run_dir: str) -> str:
    return os.path.join(run_dir, LAUNCHER_FILE)


def process_start(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # fields after the command: state is field 3, starttime field 22
    except (OSError, IndexError, ValueError):
        return None


def record_launcher(run_dir: str) -> None:
    pid = os.getpid()
    data = {"pid": pid, "process_start": process_start(pid),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")}
    tmp = launcher_path(run_dir) + ".tmp"
    with rundir.open_new(tmp, "w") as f:
        json.dump(data, f)
        f.write("\n")
    os.replace(tmp, launcher_path(run_dir))


def read_launcher(run_dir: str) -> Optional[dict]:
    try:
        with open(launcher_path(run_dir), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def state(run_dir: str) -> str:
    """RUNNING (its launcher lives: also between the attempts of --max-restarts, when a summary.json of the
    last attempt exists), ENDED (summary.json written, its launcher gone), GONE (it died without a summary),
    UNKNOWN (no record: a run from before launcher.json, or one still being set up)."""
    record = read_launcher(run_dir)
    if record is not None:
        start = process_start(record["pid"])
        if start is not None and record.get("process_start") in (None, start):
            return RUNNING
    if os.path.exists(rundir.summary_path(run_dir)):
        return ENDED
    return UNKNOWN if record is None else GONE
