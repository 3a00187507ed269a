"""`launch train`, one function per mode, each taking the checked request (launcher/jobs/request.py):

    train(request)                    the mode the request asks for
    new_job(request) -> Launch        a new job: where it runs, what, its id and run directory
    resume_job(request) -> Launch     --resume RUN_DIR: the job of RUN_DIR again, from its newest checkpoint
    detach(request)                   --cluster NAME --detach [--resume RUN]: the launcher started on instance 0
    detached_run(request)             --detached-from NAME: the launcher that --detach started, on instance 0
    run_job(launch, request, port)    preflight and run directory, then run_once or run_restarting
    run_restarting(...)               --max-restarts N: attempts until one ends for good

Each attempt's job (spec and target) is a value: a restart under --cluster gets the cluster made whole as the
next attempt's job (launcher/jobs/where.py made_whole), never by editing the one that ran.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import click

from mxlaunch.errors import CommandError
from mxlaunch.exits import Exit
from mxlaunch.infra.transport.local_runner import LocalRunner
from mxlaunch.infra.transport.target import JobTarget
from mxlaunch.launcher.jobs import checkpoints, detached, ports, resume, rundir, summary, where, workload
from mxlaunch.launcher.jobs import restarts as restart_loop
from mxlaunch.launcher.jobs.attempt import failure_text, final_message, run_and_report
from mxlaunch.launcher.jobs.job import JobOutcome
from mxlaunch.launcher.jobs.plan import JobPlan, JobSpec, plan_job
from mxlaunch.launcher.jobs.request import DETACH, DETACHED, TrainRequest


class JobFailed(CommandError):
    """The job ran and did not succeed: its message names what failed; its exit status is the job's."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def notice(text: str) -> None:
    click.echo(f"[launch] {text}", err=True)


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Launch:
    """A job ready to run: what (spec), where (target), its id and run directories."""

    spec: JobSpec
    target: JobTarget
    job_id: str
    run_dir: str  # absolute, on this machine: job.yaml, logs, summary
    cwd: str  # where the roles run: the spec's workdir, else this launcher's directory
    remote_run_dir: Optional[str]  # SSH mode: the roles' run directory on their hosts
    resumed: bool
    local_cpus: int

    def plan(self, port: int) -> JobPlan:
        return plan_job(self.spec, job_id=self.job_id, run_dir=self.run_dir, port=port, local_cpus=self.local_cpus,
                        remote_run_dir=self.remote_run_dir)

    def scheduler_port(self, asked: Optional[int]) -> int:
        """The scheduler's first port: --scheduler-port, else a free one with room for every role's after it."""
        return asked or ports.choose_port(span=1 + self.spec.num_servers + self.spec.num_workers)

    @property
    def ran(self) -> JobSpec:
        """The spec with the directory its roles run in (where they write their checkpoints)."""
        return dataclasses.replace(self.spec, workdir=self.cwd)

    def loading(self, epoch: Optional[int], batch: int) -> "Launch":
        """The same job resuming from checkpoint `epoch` (after `batch` batches of it); itself for None."""
        if epoch is None:
            return self
        command = workload.resumed(self.spec.command, epoch, batch)
        return dataclasses.replace(self, spec=dataclasses.replace(self.spec, command=command))


def launch_of(spec: JobSpec, target: JobTarget, job_id: str, run_dir: str, resumed: bool) -> Launch:
    cwd = spec.workdir or os.getcwd()
    run_dir = os.path.abspath(run_dir)
    remote = None
    if not target.local:
        remote = (resume.resume_remote_run_dir(run_dir, cwd, job_id) if resumed
                  else rundir.remote_run_dir(cwd, run_dir, job_id))
    return Launch(spec, target, job_id, run_dir, cwd, remote, resumed, _local_cpus())


# --------------------------------------------------------------------------------------------- the job

def new_spec(request: TrainRequest) -> Tuple[JobSpec, JobTarget]:
    """A new job's spec and where it runs (a trainer on a GPU cluster gets its --gpus)."""
    target = where.new_target(request)
    command = workload.with_gpus(request.command, target.gpus_per_host)
    spec = JobSpec(command=workload.resolve_program(command) if target.local else where.on_hosts(command, target),
                   num_workers=request.num_workers,
                   num_servers=request.num_workers if request.num_servers is None else request.num_servers,
                   hosts=target.job_hosts(request.num_workers), local=target.local, env=target.env + request.env,
                   env_worker=request.env_worker, env_server=request.env_server, workdir=target.workdir,
                   timeout=request.timeout,
                   watch_spot=bool(request.cluster) if request.watch_spot is None else request.watch_spot)
    return spec.validate(), target


def new_job(request: TrainRequest) -> Launch:
    spec, target = new_spec(request)
    job_id = rundir.new_job_id()
    return launch_of(spec, target, job_id, request.run_dir or rundir.default_run_dir(job_id), resumed=False)


def resume_job(request: TrainRequest) -> Launch:
    target = where.resume_target(request)
    spec, run_dir = resume.resume_spec(request.resume, target, extra_env=request.env, timeout=request.timeout,
                                       num_epochs=request.num_epochs, watch_spot=request.watch_spot, said=notice)
    job_id = rundir.load_job(run_dir).job_id or rundir.new_job_id()
    return launch_of(spec, target, job_id, run_dir, resumed=True)


def train(request: TrainRequest) -> None:
    """`launch train` in the mode the request asks for."""
    if request.mode == DETACHED:
        return detached_run(request)
    if request.mode == DETACH:
        return detach(request)
    job = resume_job(request) if request.resume else new_job(request)
    port = job.scheduler_port(request.scheduler_port)
    if request.dry_run:
        click.echo(dry_run_text(job, port), nl=False)
        return None
    return run_job(job, request, port)


def dry_run_text(job: Launch, port: int) -> str:
    """--dry-run: job.yaml, and in SSH mode the exact command and stdin of every role, per host."""
    text = rundir.render_plan(job.plan(port), job.cwd, job.target)
    if job.target.local:
        return text
    from mxlaunch.launcher.jobs.runners import dry_run_text as ssh_text  # heavy

    return text + ssh_text(job.plan(port), job.target, job.cwd)


def _runner(job: Launch, plan: JobPlan):
    """The job's runner: local processes, or SSH after the preflight (which proves the scheduler's port
    reachable from every host: it takes the plan)."""
    if job.target.local:
        return LocalRunner()
    from mxlaunch.launcher.jobs.runners import runner_for  # heavy

    return runner_for(job.spec, job.target, plan=plan)


@dataclass(frozen=True)
class ResumePoints:
    """Where a restart of a job resumes: the newest whole checkpoint (mid-epoch ones too) of its --model-prefix
    every worker can load, as --resume finds it, less those older than the job (`older`: unless its command
    loads that very one)."""

    prefix: Optional[str]
    older: Optional[checkpoints.Older] = None

    def of(self, job: Launch) -> restart_loop.ResumePoint:
        if not self.prefix:  # no checkpoints: the workload starts again from scratch
            return restart_loop.ResumePoint(None)
        point, ignored = checkpoints.newest_of_job(job.target, job.ran, self.prefix, self.older, said=notice)
        if ignored:
            notice(f"ignoring {ignored} checkpoint{'s' if ignored != 1 else ''} of {self.prefix} older than this job")
        if point is None:
            return restart_loop.ResumePoint(None)
        saved = checkpoints.checkpoint_time(job.target, job.ran, self.prefix, point)
        return restart_loop.ResumePoint(point.epoch, saved, point.batch)


def run_job(job: Launch, request: TrainRequest, port: int) -> None:
    """The job run: its runner (SSH: after the preflight), its run directory, then one attempt, or attempts
    until one ends for good (--max-restarts)."""
    if not job.resumed:
        rundir.refuse_used(job.run_dir)
    runner = _runner(job, job.plan(port))
    prefix = workload.model_prefix(job.spec.command)
    try:  # only now: a preflight that refuses the job leaves no empty run directory behind
        # a new job's restarts never resume from the checkpoints its prefix held before it (another run's);
        # a resumed job's restarts continue from whatever is there
        older = (checkpoints.older_checkpoints(job.target, job.ran, prefix, workload.load_point(job.spec.command))
                 if prefix and request.max_restarts and not job.resumed else None)
        rundir.prepare(job.run_dir, resume=job.resumed)
    except BaseException:
        runner.close()
        raise
    points = ResumePoints(prefix, older)
    if request.max_restarts:
        return run_restarting(job, request, port, runner, points)
    outcome = _attempt(job, request, port, runner)
    if outcome.status != 0:
        raise JobFailed(final_message(outcome, lambda: points.of(job)), outcome.status)
    return None


def _attempt(job: Launch, request: TrainRequest, port: int, runner, restarts: tuple = (),
             marker: Optional[str] = None) -> JobOutcome:
    return run_and_report(job.plan, port, runner, job.cwd, request.grace, append_logs=job.resumed or bool(marker),
                          target=job.target, verbose=request.verbose, restarts=restarts, marker=marker)


def run_restarting(job: Launch, request: TrainRequest, port: int, runner, points: ResumePoints) -> None:
    """--max-restarts N: the first attempt on `runner`; after a failure the next from the newest checkpoint
    (launcher/jobs/restarts.py), on a cluster made whole first under --cluster (a noticed spot host is
    restarted on only there: elsewhere it would only be interrupted again)."""
    def attempt(current: Launch, number: int, epoch: Optional[int], done: tuple) -> JobOutcome:
        if number == 1:
            return _attempt(current, request, port, runner, restarts=done)
        again = current.loading(epoch, done[-1].from_batch)
        at = again.scheduler_port(request.scheduler_port)
        return _attempt(again, request, at, _runner(again, again.plan(at)), restarts=done,
                        marker=restart_loop.marker(done[-1], request.max_restarts))

    def ready(current: Launch, failed: JobOutcome) -> Tuple[Launch, restart_loop.ResumePoint]:
        if current.target.cluster:  # made whole first: its checkpoints are then read through hosts that answer,
            # and the next attempt's roles are planned on its hosts as they are now
            target, spec = where.made_whole(current.target, current.spec, request.ssh, failed.spot_hosts, notice)
            current = dataclasses.replace(current, target=target, spec=spec)
        return current, points.of(current)

    policy = restart_loop.RestartPolicy(request.max_restarts, request.restart_delay,
                                        replaces_hosts=bool(job.target.cluster))
    try:
        result = restart_loop.run_with_restarts(job, attempt, ready, failure_text, policy, notice)
    except CommandError as exc:  # a restart that cannot begin (a host still unreachable, its preflight refused)
        then = "the AWS credentials are refreshed" if exc.exit_code == Exit.AWS_CREDENTIALS else "the hosts are back"
        raise JobFailed(f"could not restart the job: {exc.format_message()} (run directory {job.run_dir}; "
                        f"`launch train --resume {job.run_dir}` once {then})", exc.exit_code) from exc
    _report_restarted(result, points)


def _report_restarted(result: restart_loop.Result, points: ResumePoints) -> None:
    """How a job with --max-restarts ended, when not well: one JobFailed."""
    outcome = result.outcome

    def resume_point() -> restart_loop.ResumePoint:
        return points.of(result.job)

    if result.spot_not_restarted:  # "could not restart": a detached launcher adds how to repair its cluster
        raise JobFailed(f"could not restart the job: {final_message(outcome, resume_point)} once the noticed "
                        f"instance is replaced (`launch cluster repair NAME` if the hosts are a cluster's): "
                        f"restarted on the same hosts it would only be interrupted again", outcome.status)
    if result.interrupted_waiting:
        summary.amend_summary(outcome, result.restarts)
        raise JobFailed(f"{outcome.reason.value} while waiting to restart (nothing was running) after: "
                        f"{failure_text(outcome)} (run directory {outcome.plan.run_dir})", outcome.status)
    if outcome.status != 0:
        count = len(result.restarts)
        spent = f" (after {count} restart{'s' if count != 1 else ''})" if count else ""
        raise JobFailed(final_message(outcome, resume_point) + spent, outcome.status)


# ------------------------------------------------------------------------------------- detached jobs

def detach(request: TrainRequest) -> None:
    """--cluster NAME --detach: the launcher itself goes to instance 0 with the job as resolved here (a new
    job), or with RUN's job (--resume RUN: the cluster as it is now); its run id alone on stdout
    (RUN=$(launch train ... --detach))."""
    if request.resume:  # the run's job.yaml is on the cluster's EFS: instance 0 reads it
        target = where.cluster(request.cluster, None, request.python, request.ssh)
        started = detached.resume(request, target, request.resume)
    else:
        spec, target = new_spec(request)
        started = detached.start(request, target, spec, detached.new_run_id())
    click.echo(started.run)
    click.echo(detached.started_text(started), err=True, nl=False)


def detached_run(request: TrainRequest, run: Optional[Callable[[TrainRequest], None]] = None) -> None:
    """--detached-from NAME: this very request (less --detached-from), as the launcher of a detached job
    (`run`: train). A restart that cannot begin also says what only a machine with the cluster's state can
    do (the instances hold no AWS credentials, so this launcher cannot replace one). However it ends (SIGKILL
    aside), the key copied for it is removed (launcher/jobs/detached.py remove_own_key)."""
    cluster = request.detached_from
    try:
        (run or train)(dataclasses.replace(request, detached_from=None))
    except JobFailed as exc:
        if exc.message.startswith("could not restart"):
            exc.message += (f"; this launcher, detached on cluster {cluster}, cannot replace an instance: from a "
                            f"machine with the cluster's state run `launch cluster repair {cluster}`, then "
                            f"`launch train --cluster {cluster} --detach --resume {detached.run_of(request)}`")
        raise
    finally:
        detached.remove_own_key(request)
