"""The run directory: where a job's plan, logs, summary and metrics live (a layout users and their scripts rely on).

    RUN_DIR/job.yaml  hosts  logs/<role>.log  summary.json  metrics.jsonl  accuracy.png

In SSH mode roles never see RUN_DIR (it is on the launcher's machine): they write under
WORKDIR/runs/<id> on their own hosts (`remote_run_dir`, recorded in job.yaml), and the runner fetches
metrics.jsonl back. `--resume` reads job.yaml back (launcher/jobs/resume.py): the command, and where the job ran.
"""
from __future__ import annotations

import datetime
import os
import posixpath
import secrets
from typing import Optional

from mxlaunch.errors import UsageError
from mxlaunch.files import open_new
from mxlaunch.infra.transport.target import JobTarget
from mxlaunch.launcher.jobs import job_record
from mxlaunch.launcher.jobs.job_record import JobRecord
from mxlaunch.launcher.jobs.plan import JobPlan
from mxlaunch.templates import render

DEFAULT_PARENT = "runs"


def new_job_id() -> str:
    return secrets.token_hex(4)


def default_run_dir(job_id: str, now: Optional[datetime.datetime] = None, parent: str = DEFAULT_PARENT) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return os.path.join(parent, f"{now:%Y%m%d-%H%M%S}-{job_id}")


def job_yaml(run_dir: str) -> str:
    return os.path.join(run_dir, "job.yaml")


def logs_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "logs")


def log_path(run_dir: str, role_name: str) -> str:
    return os.path.join(run_dir, "logs", f"{role_name}.log")


def summary_path(run_dir: str) -> str:
    return os.path.join(run_dir, "summary.json")


def metrics_path(run_dir: str) -> str:
    return os.path.join(run_dir, "metrics.jsonl")


def plot_path(run_dir: str) -> str:
    return os.path.join(run_dir, "accuracy.png")


def refuse_used(run_dir: str) -> None:
    """A run directory holds one job: a used one, or any other non-empty directory, is refused (unless
    resuming it), and nothing in it is touched."""
    run_dir = os.path.abspath(run_dir)
    if os.path.lexists(job_yaml(run_dir)):
        raise UsageError(f"run directory {run_dir} already holds a job (use a new --run-dir, or --resume it)")
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        raise UsageError(f"--run-dir {run_dir} is not empty and holds no job: give a new or empty directory "
                         f"(its files are left as they are)")


def refuse_links(run_dir: str) -> None:
    """The launcher never writes through a symbolic link: one among the run directory's files (a resumed run's,
    or one planted since) could point its writes anywhere."""
    for folder in (run_dir, logs_dir(run_dir)):
        if folder != run_dir and os.path.islink(folder):
            raise UsageError(f"{folder} is a symbolic link: the launcher writes run files only into real "
                             f"directories (remove the link)")
        names = os.listdir(folder) if os.path.isdir(folder) else []
        for name in names:
            if os.path.islink(os.path.join(folder, name)):
                raise UsageError(f"{os.path.join(folder, name)} is a symbolic link: the launcher never writes "
                                 f"through one (remove it)")


def prepare(run_dir: str, resume: bool = False) -> str:
    """Create the run directory (absolute path returned). A used or non-empty one is refused unless resuming;
    one with symbolic links among its files always."""
    run_dir = os.path.abspath(run_dir)
    if not resume:
        refuse_used(run_dir)
    refuse_links(run_dir)
    try:
        os.makedirs(logs_dir(run_dir), exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create run directory {run_dir}: {exc.strerror}") from exc
    return run_dir


def remote_run_dir(workdir: str, run_dir: str, job_id: str) -> str:
    """Where roles on remote hosts write (their LAUNCH_RUN_DIR): WORKDIR/runs/<name of the local run
    directory>, the job id in the name so that two launchers' `--run-dir exp` never share one."""
    name = os.path.basename(os.path.normpath(run_dir))
    if job_id not in name:
        name = f"{name}-{job_id}"
    return posixpath.join(workdir, DEFAULT_PARENT, name)


def render_plan(plan: JobPlan, workdir: str, target: Optional[JobTarget] = None) -> str:
    """job.yaml text for a plan (launcher/jobs/job_record.py: secret-looking values masked); with `target`,
    where the job ran (for --resume: hosts, interpreter, workdir, SSH settings, cluster)."""
    return job_record.text(job_record.of_plan(plan, workdir, target))


def write_plan_files(plan: JobPlan, workdir: str, target: Optional[JobTarget] = None) -> None:
    with open_new(job_yaml(plan.run_dir)) as f:
        f.write(render_plan(plan, workdir, target))
    with open_new(os.path.join(plan.run_dir, "hosts")) as f:
        f.write(render("hosts.j2", hosts=plan.hosts_used()))


def load_job(run_dir: str) -> JobRecord:
    """The job.yaml of a run, as its record (for --resume), checked: a damaged one is one error, never a guess."""
    return job_record.read(job_yaml(run_dir), run_dir)
