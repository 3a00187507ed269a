"""`launch runs [--dir runs]`: the runs under a folder, newest first, one row each, from their job.yaml,
summary.json and launcher.json (a run whose launcher still runs, or died without a summary, says so)."""
from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import dataclass
from typing import List, Optional

import click
import yaml

from mxlaunch.launcher.jobs import detached, instance0, rundir, launcher_record
from mxlaunch.errors import UsageError
from mxlaunch.files import MIB, UnsafeFile, read_bounded
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


RECORD_LIMIT = 16 * MIB  # job.yaml of a thousand roles is a few MB; beyond this it is not a record of ours


def _load(path: str, parse, damage: List[str]) -> dict:
    """The mapping in `path` ({} when absent); a file that is a link, not a regular file (a FIFO would block
    the listing), too large, or not a mapping adds its name to `damage`."""
    try:
        data = parse(read_bounded(path, RECORD_LIMIT).decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (UnsafeFile, OSError, ValueError, yaml.YAMLError):  # UnicodeDecodeError, JSONDecodeError: ValueErrors
        damage.append(os.path.basename(path))
        return {}
    if not isinstance(data, dict):
        damage.append(os.path.basename(path))
        return {}
    return data


def _time(text, damage: List[str], where: str) -> Optional[datetime.datetime]:
    """An ISO 8601 time with its zone (mxlaunch writes UTC); anything else is damage (a time without a zone
    cannot be ordered among the others)."""
    if text is None:
        return None
    try:
        when = datetime.datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        damage.append(where)
        return None
    return when


def _number(value, damage: List[str], where: str) -> Optional[float]:
    """A finite number, or None (absent); NaN, Infinity or text is damage."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    damage.append(where)
    return None


def _seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else (f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s")


def _started(run_dir: str, summary: dict, launcher, damage: List[str]) -> datetime.datetime:
    started = _time(summary.get("start"), damage, "summary.json") or _time(
        launcher.started if launcher else None, damage, "launcher.json")
    if started is None:  # lstat: a job.yaml that is a link says nothing of when the run began
        started = datetime.datetime.fromtimestamp(os.lstat(rundir.job_yaml(run_dir)).st_mtime, datetime.timezone.utc)
    return started


def _record_name(run_dir: str, path: str) -> str:
    """launcher.json, or a detached run's start record as named from the folder of the runs."""
    name = os.path.basename(path)
    return name if os.path.dirname(path) == run_dir else os.path.join(launcher_record.DETACHED_DIR, name)


def run_row(run_dir: str) -> Optional[RunRow]:
    """The row of one run directory; None for a folder that holds no job. A damaged file is shown as such
    (status "damaged: FILE"), with what is valid of the rest."""
    damage: List[str] = []
    if not os.path.lexists(rundir.job_yaml(run_dir)):
        return None
    job = valid_fields(JobRecord, _load(rundir.job_yaml(run_dir), yaml.safe_load, damage))
    summary = _load(rundir.summary_path(run_dir), json.loads, damage)
    launcher, passed = launcher_record.launcher_records(run_dir)
    damage += [_record_name(run_dir, p.path) for p in passed]
    started = _started(run_dir, summary, launcher, damage)
    state = launcher_record.state(run_dir)
    if state == launcher_record.ENDED:
        status, seconds = str(summary.get("reason", "ended")), _number(summary.get("seconds"), damage, "summary.json")
    else:
        status = {launcher_record.RUNNING: "running", launcher_record.GONE: "launcher died"}.get(state, "unknown")
        seconds = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() if state == launcher_record.RUNNING else None
    hosts = {str(r.host) for r in job.get("roles", ())} or set(job.get("hosts") or ())
    validation = _number(summary.get("final_validation_accuracy"), damage, "summary.json")
    epochs = summary.get("epochs")
    if damage:
        status = "damaged: " + ",".join(dict.fromkeys(damage))
    return RunRow(id=os.path.basename(os.path.normpath(run_dir)), started=started, mode=str(job.get("mode", "-")),
                  hosts=str(len(hosts)) if hosts else "-", workers=str(job.get("num_workers", "-")), status=status,
                  epochs=str(epochs) if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else "-",
                  validation=f"{validation:.4f}" if validation is not None else "-",
                  duration=_seconds(seconds))


def _row(run_dir: str) -> Optional[RunRow]:
    """run_row, and a run it cannot read at all (its folder unreadable, ...) is one damaged row: the listing
    goes on."""
    try:
        return run_row(run_dir)
    except (OSError, ValueError, TypeError, OverflowError) as exc:
        return RunRow(id=os.path.basename(os.path.normpath(run_dir)), started=None, mode="-", hosts="-", workers="-",
                      status=f"damaged: {type(exc).__name__}", epochs="-", validation="-", duration="-")


def detached_rows(folder: str) -> List[RunRow]:
    """Detached launchers (launch train --detach) whose run directory holds no job yet: still starting (the
    preflight), or ended before the job began (their console, .detached/<run>.log, says why)."""
    records = os.path.join(folder, launcher_record.DETACHED_DIR)
    rows = []
    for name in sorted(os.listdir(records)) if os.path.isdir(records) else ():
        run_dir = os.path.join(folder, name[:-len(".json")])
        record, passed = launcher_record.launcher_records(run_dir) if name.endswith(".json") else (None, [])
        if (record is None and not passed) or os.path.exists(rundir.job_yaml(run_dir)):
            continue
        damage = [_record_name(run_dir, p.path) for p in passed]
        started = _time(record.started, damage, name) if record else None
        status = "starting" if record and launcher_record.is_alive(record) else "did not start (see its console)"
        status = "damaged: " + ",".join(dict.fromkeys(damage)) if damage else status
        rows.append(RunRow(id=os.path.basename(run_dir), started=started, mode="hosts", hosts="-", workers="-",
                           status=status, epochs="-", validation="-", duration="-"))
    return rows


def list_runs(folder: str) -> List[RunRow]:
    """Every run under `folder`, newest first."""
    if not os.path.isdir(folder):
        raise UsageError(f"--dir {folder}: no such directory (runs go to ./runs unless --run-dir says otherwise)")
    rows = [_row(os.path.join(folder, name)) for name in os.listdir(folder)
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
