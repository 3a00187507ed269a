"""One attempt of a `launch train` job, run and reported: its plan files and logs, the Job itself, then
summary.json, metrics and plot, the console's last lines; and the one-line messages about how it ended."""
from __future__ import annotations

import os
from typing import Optional

import click

from mxlaunch.errors import UsageError
from mxlaunch.launcher.jobs import launcher_record, plotting, rundir, summary
from mxlaunch.launcher.jobs.checkpoints import Checkpoint
from mxlaunch.launcher.jobs.job import Job, JobOutcome, JobSettings, Reason
from mxlaunch.launcher.jobs.output import RoleOutputSink
from mxlaunch.infra.transport.target import JobTarget


def failure_text(outcome: JobOutcome) -> str:
    """What ended an attempt, one line: the first failing role, else the reason."""
    if outcome.first_failure is not None:
        return summary.describe(outcome.first_failure, outcome.rank_of(outcome.first_failure.name))
    return outcome.message()


def run_and_report(make_plan, first_port: int, runner, cwd: str, grace: float, append_logs: bool,
                   target: Optional[JobTarget] = None, verbose: bool = False, restarts: tuple = (),
                   marker: Optional[str] = None) -> JobOutcome:
    plan = make_plan(first_port)
    try:  # until the Job owns the runner (it closes it), a failure here must close it: connections, threads
        rundir.write_plan_files(plan, cwd, target)
        launcher_record.record_launcher(plan.run_dir)  # `launch logs --follow` / `launch runs` see if this process dies
        sink = RoleOutputSink(plan.run_dir, plan.roles, show_host=not plan.spec.local, append=append_logs,
                              verbose=verbose)
    except BaseException:
        runner.close()
        raise
    if marker:  # a restart: every log says where the new attempt begins
        sink.mark(marker)
    sink.notice(f"run directory {plan.run_dir}")
    try:
        job = Job(make_plan, first_port, runner, sink, JobSettings(grace=grace), cwd=cwd)
        outcome = job.run()
        sink.end_progress()
        if outcome.plan.port != plan.port:  # the job moved to other ports: the record says where it really ran
            rundir.write_plan_files(outcome.plan, cwd, target)
        metrics = summary.collect_metrics(outcome.plan, cwd, sink.progress, plot_or_warn(sink, plan.run_dir))
        summary.write_summary(outcome, metrics, restarts)
        # its last line: status, restarts, accuracy, checkpoints, plot
        click.echo(summary.table(outcome, metrics, restarts), nl=False)
        if outcome.first_failure is not None:
            for line in summary.failure_lines(outcome, sink.tail(outcome.first_failure.name)):
                click.echo(line, err=True)
    finally:
        sink.close()
    return outcome


def plot_or_warn(sink, run_dir: str) -> Optional[str]:
    """accuracy.png from metrics.jsonl. The metrics are a report: a damaged file is a warning (its good lines
    still count), never the failure of a job whose workers succeeded."""
    path = rundir.metrics_path(run_dir)
    if os.path.lexists(path):
        try:
            plotting.read_metrics(path)
        except UsageError as exc:
            sink.notice(f"warning: {exc.format_message()}; damaged lines left out of the summary and plot",
                        error=True)
    try:
        return plotting.plot_run_if_metrics(run_dir)
    except Exception as exc:  # noqa: BLE001 - whatever the plot hits, the job's status is its workers'
        sink.notice(f"warning: no accuracy plot ({type(exc).__name__}: {' '.join(str(exc).split())})", error=True)
        return None


def final_message(outcome: JobOutcome, resume_point=None) -> str:
    where = f"(run directory {outcome.plan.run_dir})"
    if outcome.reason is Reason.SPOT and resume_point is not None:  # the checkpoint rank 0 saved, and what next
        try:
            point = resume_point()
            saved = ("no checkpoint was written" if point.epoch is None
                     else f"newest checkpoint: {Checkpoint(point.epoch, point.batch)}")
        except Exception as exc:  # noqa: BLE001 - a host already gone: the message still says what to do
            saved = f"its checkpoints could not be listed ({' '.join(str(exc).split())})"
        return f"{outcome.message()}; {saved}; continue with `launch train --resume {outcome.plan.run_dir}`"
    if outcome.first_failure is not None:
        failure = outcome.first_failure
        return f"{summary.describe(failure, outcome.rank_of(failure.name))}; every other role was stopped {where}"
    return f"{outcome.message()} {where}"
