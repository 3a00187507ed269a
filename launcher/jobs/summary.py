"""The end of a job, for scripts (summary.json) and for people (a one-screen table, the final line, the
failure message). Training metrics come from rank 0's metrics.jsonl, else from rank 0's log lines."""
from __future__ import annotations

import datetime
import json
import os
import posixpath
from dataclasses import dataclass
from typing import List, Optional

from mxlaunch.errors import UsageError
from mxlaunch.launcher.jobs import plotting, rundir, workload
from mxlaunch.launcher.jobs.job import JobOutcome, Reason
from mxlaunch.launcher.jobs.plan import JobPlan
from mxlaunch.launcher.jobs.progress import Progress
from mxlaunch.templates import render
from mxlaunch.infra.transport.roles import RoleId
from mxlaunch.infra.transport.runner import RoleResult
from mxlaunch.files import MIB, open_new, read_bounded


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


@dataclass(frozen=True)
class RunMetrics:
    """What the job learnt, for the final line, summary.json and `launch runs`."""

    epochs: int = 0  # epochs with a record
    last_epoch: Optional[int] = None  # numbered as in the logs and metrics.jsonl (from 0)
    final_validation: Optional[float] = None  # of the last epoch
    best_validation: Optional[float] = None
    best_epoch: Optional[int] = None
    final_train: Optional[float] = None
    source: Optional[str] = None  # "metrics.jsonl", "log" (rank 0's), None: the workload reported nothing
    checkpoint_prefix: Optional[str] = None
    plot: Optional[str] = None

    def fields(self) -> dict:
        """Its summary.json keys."""
        return {"epochs": self.epochs, "last_epoch": self.last_epoch,
                "final_validation_accuracy": self.final_validation, "best_validation_accuracy": self.best_validation,
                "best_epoch": self.best_epoch, "final_train_accuracy": self.final_train,
                "metrics_source": self.source, "checkpoint_prefix": self.checkpoint_prefix, "plot": self.plot}


def run_metrics(records: List[dict], source: Optional[str], checkpoint_prefix: Optional[str] = None,
                plot: Optional[str] = None) -> RunMetrics:
    """From per-epoch records (metrics.jsonl's keys: epoch, train-accuracy, validation-accuracy), in order."""
    number = plotting.finite_number  # NaN/inf would be invalid JSON
    validated = [(r["epoch"], number(r.get("validation-accuracy"))) for r in records]
    validated = [(e, v) for e, v in validated if v is not None]
    best = max(validated, key=lambda ev: ev[1]) if validated else (None, None)
    last = records[-1] if records else {}
    return RunMetrics(epochs=len(records), last_epoch=last.get("epoch"),
                      final_validation=number(last.get("validation-accuracy")), best_validation=best[1],
                      best_epoch=best[0], final_train=number(last.get("train-accuracy")),
                      source=source if records else None, checkpoint_prefix=checkpoint_prefix, plot=plot)


def collect_metrics(plan: JobPlan, cwd: str, progress: Progress, plot: Optional[str]) -> RunMetrics:
    """The job's metrics: rank 0's metrics.jsonl (damaged lines skipped: the report never fails a job),
    else what rank 0 logged; the checkpoint prefix from the workload's --model-prefix, under its workdir."""
    records, source = [], None
    path = rundir.metrics_path(plan.run_dir)
    if os.path.exists(path):
        try:
            records, source = plotting.read_metrics(path, strict=False), "metrics.jsonl"
        except UsageError:
            records = []
    if not records:
        source = "log"
        records = [{"epoch": r.epoch, "lr": r.lr, "train-accuracy": r.train, "validation-accuracy": r.validation}
                   for _, r in sorted(progress.records.items()) if r.seconds is not None or r.validation is not None]
    prefix = workload.model_prefix(plan.spec.command)
    if prefix:  # roles run in cwd (on their hosts, in SSH mode: a POSIX path there)
        prefix = posixpath.join(cwd, prefix) if not plan.spec.local else os.path.join(cwd, prefix)
    return run_metrics(records, source, prefix, plot)


def summary_data(outcome: JobOutcome, metrics: RunMetrics = RunMetrics(), restarts: tuple = ()) -> dict:
    """`restarts`: launcher/jobs/restarts.py's Restart of each restart so far (the outcome is the last attempt's)."""
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
        "restarts": [r.record(_iso) for r in restarts],
        **metrics.fields(),
    }


def write_summary(outcome: JobOutcome, metrics: RunMetrics = RunMetrics(), restarts: tuple = ()) -> str:
    return _write(outcome.plan.run_dir, summary_data(outcome, metrics, restarts))


def _write(run_dir: str, data: dict) -> str:
    path = rundir.summary_path(run_dir)
    tmp = path + ".tmp"
    # backslashreplace: an argument that is not UTF-8 (kept as surrogates, passed to the roles byte for byte)
    # is written as its JSON escape, \udcff, which reads back as the same string
    with open_new(tmp, errors="backslashreplace") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def amend_summary(outcome: JobOutcome, restarts: tuple) -> str:
    """A signal while waiting to restart: the last attempt's summary.json, with the launch's own end."""
    data = json.loads(read_bounded(rundir.summary_path(outcome.plan.run_dir), 16 * MIB))
    data.update(status=outcome.status, reason=outcome.reason.value, restarts=[r.record(_iso) for r in restarts])
    return _write(outcome.plan.run_dir, data)


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


def final_line(outcome: JobOutcome, metrics: RunMetrics, restarts: tuple = ()) -> str:
    """The last line of `launch train`: status, restarts, epochs, final and best validation accuracy, wall
    time, checkpoints and plot."""
    parts = [verdict(outcome)]
    if restarts:
        lost = sum(r.seconds_lost for r in restarts)
        parts.append(f"after {len(restarts)} restart{'s' if len(restarts) != 1 else ''} ({lost:.1f}s lost)")
    if metrics.epochs:
        text = f"{metrics.epochs} epoch{'s' if metrics.epochs != 1 else ''} (last Epoch[{metrics.last_epoch}])"
        if metrics.final_validation is not None:
            text += f", validation accuracy {metrics.final_validation:.4f}"
        if metrics.best_validation is not None:
            text += f" (best {metrics.best_validation:.4f} at Epoch[{metrics.best_epoch}])"
        parts.append(text)
    if metrics.checkpoint_prefix:
        parts.append(f"checkpoints {metrics.checkpoint_prefix}-NNNN.params")
    if metrics.plot:
        parts.append(f"plot {metrics.plot}")
    return "; ".join(parts)


def describe(r: RoleResult, mxnet_rank: Optional[int] = None) -> str:
    """'worker 1 (MXNet rank 0) on 127.0.0.1, pid 123: exit code 3'."""
    rank = f" (MXNet rank {mxnet_rank})" if mxnet_rank is not None else ""
    pid = f", pid {r.pid}" if r.pid else ""
    return f"{RoleId(r.kind, r.index).label}{rank} on {r.host}{pid}: {r.how()}"


def table(outcome: JobOutcome, metrics: Optional[RunMetrics] = None, restarts: tuple = ()) -> str:
    """One screen: a row per role (rank = the MXNet rank ps-lite gave it), then the final line."""
    rows = []
    for r in outcome.results:
        seconds = f"{r.end - r.start:.1f}" if r.start and r.end else "-"
        rank = outcome.rank_of(r.name)
        rows.append({"name": r.name, "rank": "-" if rank is None else rank, "host": r.host, "pid": r.pid or "-",
                     "seconds": seconds, "ended": _ended(r)})
    return render("job_summary.j2", rows=rows, verdict=final_line(outcome, metrics or RunMetrics(), restarts))


def failure_lines(outcome: JobOutcome, tail: List[str]) -> List[str]:
    """The first failing role and its last log lines (shown before the one-line error)."""
    r = outcome.first_failure
    if r is None:
        return []
    lines = [f"{describe(r, outcome.rank_of(r.name))}; its last log lines:"]
    lines += [f"  | {line}" for line in tail] or ["  | (no output)"]
    return lines
