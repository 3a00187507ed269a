"""The end of a job, for scripts (summary.json) and for people (a one-screen table, the failure message)."""
from __future__ import annotations

import datetime
import json
import os
from typing import List, Optional

from mxlaunch.launcher import rundir
from mxlaunch.launcher.job import JobOutcome, Reason
from mxlaunch.launcher.render import render
from mxlaunch.launcher.roles import RoleId
from mxlaunch.launcher.runner import RoleResult


def _iso(t: Optional[float]) -> Optional[str]:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="milliseconds")


def role_record(r: RoleResult, mxnet_rank: Optional[int] = None) -> dict:
    """`index`: the launcher's number for the role (logs/worker-<index>.log); `mxnet_rank`: the rank
    ps-lite gave it (kv.rank), which ps-lite assigns in its own order."""
    return {"name": r.name, "role": r.kind, "index": r.index, "mxnet_rank": mxnet_rank, "host": r.host, "pid": r.pid,
            "start": _iso(r.start), "end": _iso(r.end), "exit_code": r.exit_code, "signal": r.signal,
            "stopped_by_launcher": r.stopped is not None, "error": r.error}


def teardown_seconds(outcome: JobOutcome) -> Optional[float]:
    """From the first failure (or the launcher's decision to stop) to the end of the last role."""
    start = outcome.first_failure.end if outcome.first_failure else outcome.teardown_started
    ends = [r.end for r in outcome.results if r.end is not None]
    if start is None or not ends or outcome.reason is Reason.OK:
        return None
    return round(max(0.0, max(ends) - start), 3)


def summary_data(outcome: JobOutcome) -> dict:
    plan = outcome.plan
    failure = outcome.first_failure
    return {
        "job_id": plan.job_id,
        "status": outcome.status,
        "reason": outcome.reason.value,
        "command": list(plan.spec.command),
        "scheduler_port": plan.port,
        "start": _iso(outcome.started),
        "end": _iso(outcome.ended),
        "seconds": round(outcome.ended - outcome.started, 3),
        "first_failure": role_record(failure, outcome.rank_of(failure.name)) if failure else None,
        "teardown_seconds": teardown_seconds(outcome),
        "notes": list(outcome.notes),
        "roles": [role_record(r, outcome.rank_of(r.name)) for r in outcome.results],
    }


def write_summary(outcome: JobOutcome) -> str:
    path = rundir.summary_path(outcome.plan.run_dir)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary_data(outcome), f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def _ended(r: RoleResult) -> str:
    text = r.how()
    if r.stopped and not r.error:
        text += " (stopped by launch)"
    return text


def verdict(outcome: JobOutcome) -> str:
    n = len(outcome.plan.workers)
    seconds = outcome.ended - outcome.started
    if outcome.status == 0:
        return f"ok: all {n} workers exited 0 in {seconds:.1f}s"
    tear = teardown_seconds(outcome)
    tail = f"; every role stopped {tear:.2f}s later" if tear is not None else ""
    if outcome.first_failure is not None:
        return f"failed: {describe(outcome.first_failure, outcome.rank_of(outcome.first_failure.name))}{tail}"
    return f"{outcome.reason.value} after {seconds:.1f}s{tail}"


def describe(r: RoleResult, mxnet_rank: Optional[int] = None) -> str:
    """'worker 1 (MXNet rank 0) on 127.0.0.1, pid 123: exit code 3'."""
    rank = f" (MXNet rank {mxnet_rank})" if mxnet_rank is not None else ""
    pid = f", pid {r.pid}" if r.pid else ""
    return f"{RoleId(r.kind, r.index).label}{rank} on {r.host}{pid}: {r.how()}"


def table(outcome: JobOutcome) -> str:
    """One screen: a row per role (rank = the MXNet rank ps-lite gave it), then the verdict."""
    rows = []
    for r in outcome.results:
        seconds = f"{r.end - r.start:.1f}" if r.start and r.end else "-"
        rank = outcome.rank_of(r.name)
        rows.append({"name": r.name, "rank": "-" if rank is None else rank, "host": r.host, "pid": r.pid or "-",
                     "seconds": seconds, "ended": _ended(r)})
    return render("job_summary.j2", rows=rows, verdict=verdict(outcome))


def failure_lines(outcome: JobOutcome, tail: List[str]) -> List[str]:
    """The first failing role and its last log lines (shown before the one-line error)."""
    r = outcome.first_failure
    if r is None:
        return []
    lines = [f"{describe(r, outcome.rank_of(r.name))}; its last log lines:"]
    lines += [f"  | {line}" for line in tail] or ["  | (no output)"]
    return lines
