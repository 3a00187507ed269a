"""`launch runs [--dir runs]`: the runs under a folder, newest first, one row each, from their job.yaml,
summary.json and launcher.json (a run whose launcher still runs, or died without a summary, says so)."""
from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from typing import List, Optional

import click
import yaml

from mxlaunch.launcher.jobs import detached, instance0, rundir, launcher_record
from mxlaunch.errors import UsageError
from mxlaunch.launcher.jobs.job_record import JobRecord
from mxlaunch.records import valid_fields


@dataclass(frozen=True)
class RunRow:
    id: str
    started: Optional[datetime.datetime]
    mode: str
    hosts: str
    workers: str
    status: str
    epochs: str
    validation: str
    duration: str


def _load(path: str, loader) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = loader(f)
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _time(text) -> Optional[datetime.datetime]:
    try:
        return datetime.datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _seconds(seconds: Optional[float]) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else (f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s")


def run_row(run_dir: str) -> Optional[RunRow]:
    """The row of one run directory; None for a folder that holds no job."""
    data = _load(rundir.job_yaml(run_dir), yaml.safe_load)
    if not data:
        return None
    job = valid_fields(JobRecord, data)  # a damaged job.yaml is still listed: what is valid of it
    summary = _load(rundir.summary_path(run_dir), json.load)
    launcher = launcher_record.read_launcher(run_dir)
    started = _time(summary.get("start")) or _time(launcher.started if launcher else None)
    if started is None:
        started = datetime.datetime.fromtimestamp(os.path.getmtime(rundir.job_yaml(run_dir)), datetime.timezone.utc)
    state = launcher_record.state(run_dir)
    if state == launcher_record.ENDED:
        status, seconds = str(summary.get("reason", "ended")), summary.get("seconds")
    else:
        status = {launcher_record.RUNNING: "running", launcher_record.GONE: "launcher died"}.get(state, "unknown")
        seconds = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() if state == launcher_record.RUNNING else None
    hosts = {str(r.host) for r in job.get("roles", ())} or set(job.get("hosts") or ())
    validation = summary.get("final_validation_accuracy")
    epochs = summary.get("epochs")
    return RunRow(id=os.path.basename(os.path.normpath(run_dir)), started=started, mode=str(job.get("mode", "-")),
                  hosts=str(len(hosts)) if hosts else "-", workers=str(job.get("num_workers", "-")), status=status,
                  epochs=str(epochs) if isinstance(epochs, int) and epochs else "-",
                  validation=f"{validation:.4f}" if isinstance(validation, (int, float)) else "-",
                  duration=_seconds(seconds))


def detached_rows(folder: str) -> List[RunRow]:
    """Detached launchers (launch train --detach) whose run directory holds no job yet: still starting (the
    preflight), or ended before the job began (their console, .detached/<run>.log, says why)."""
    records = os.path.join(folder, launcher_record.DETACHED_DIR)
    rows = []
    for name in sorted(os.listdir(records)) if os.path.isdir(records) else ():
        run_dir = os.path.join(folder, name[:-len(".json")])
        record = launcher_record.read_launcher(run_dir) if name.endswith(".json") else None
        if record is None or os.path.exists(rundir.job_yaml(run_dir)):
            continue
        alive = launcher_record.is_alive(record)
        rows.append(RunRow(id=os.path.basename(run_dir), started=_time(record.started), mode="hosts", hosts="-",
                           workers="-", status="starting" if alive else "did not start (see its console)",
                           epochs="-", validation="-", duration="-"))
    return rows


def list_runs(folder: str) -> List[RunRow]:
    """Every run under `folder`, newest first."""
    if not os.path.isdir(folder):
        raise UsageError(f"--dir {folder}: no such directory (runs go to ./runs unless --run-dir says otherwise)")
    rows = [run_row(os.path.join(folder, name)) for name in os.listdir(folder)
            if os.path.isdir(os.path.join(folder, name))] + detached_rows(folder)
    epoch = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    return sorted((r for r in rows if r), key=lambda r: (r.started or epoch, r.id), reverse=True)


def render(rows: List[RunRow]) -> str:
    header = ("id", "started", "mode", "hosts", "workers", "status", "epochs", "validation", "duration")
    table = [header] + [(r.id, r.started.astimezone().strftime("%Y-%m-%d %H:%M:%S") if r.started else "-", r.mode,
                         r.hosts, r.workers, r.status, r.epochs, r.validation, r.duration) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table) + "\n"


@click.command()
@click.option("--dir", "folder", default=rundir.DEFAULT_PARENT, show_default=True, type=click.Path(file_okay=False),
              help="Folder that holds the run directories.")
@click.option("--cluster", metavar="NAME", help="The runs of cluster NAME (detached ones: launch train --detach), "
              "listed on its instance 0.")
def runs(folder: str, cluster: Optional[str] = None) -> int:
    """List runs, newest first: id, start, mode, hosts, workers, status, epochs, final validation accuracy, duration."""
    if cluster:  # their directories are on EFS and their launchers on instance 0: this same command, there
        return instance0.launch(cluster, ["runs"], dict(dir=detached.RUNS))
    rows = list_runs(folder)
    if not rows:
        click.echo(f"no runs in {folder}", err=True)
        return
    click.echo(render(rows), nl=False)
