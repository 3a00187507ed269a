"""`launch train`: plan a parameter-server job, start it, watch it, report it."""
from __future__ import annotations

import dataclasses
import math
import os
import posixpath
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import click

from mxlaunch.launcher.jobs import checkpoints, ports, rundir, workload
from mxlaunch.errors import CommandError, UsageError
from mxlaunch.launcher.jobs.attempt import failure_text, final_message, run_and_report
from mxlaunch.launcher.jobs.job import JobOutcome
from mxlaunch.launcher.jobs.env_options import env_pairs, user_env
from mxlaunch.launcher.jobs.plan import JobSpec, plan_job
from mxlaunch.infra.transport.target import JobTarget, hosts_target, local_target

if TYPE_CHECKING:
    from mxlaunch.infra.transport.ssh import SSHOptions



class JobFailed(CommandError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _seconds(option: str, value: Optional[float]) -> Optional[float]:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{option} {value:g}: expected a positive number of seconds")
    return value


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _ssh_options(key: Optional[str], user: Optional[str], known_hosts: Optional[str],
                 accept_new: bool) -> "SSHOptions":
    from mxlaunch.infra.transport.ssh import SSHOptions  # imports paramiko: SSH mode only

    return SSHOptions(key=key, user=user, known_hosts=known_hosts, accept_new=accept_new)


def _target(local: bool, hosts: Optional[str], cluster: Optional[str], workdir: Optional[str],
            python: Optional[str], ssh: Optional["SSHOptions"]) -> JobTarget:
    """Exactly one of --local, --hosts, --cluster, resolved to where the job runs."""
    chosen = [name for name, given in (("--local", local), ("--hosts", hosts), ("--cluster", cluster)) if given]
    if len(chosen) != 1:
        raise UsageError("choose where the job runs: exactly one of --local, --hosts FILE|h1,h2, --cluster NAME"
                         + (f" (got {' and '.join(chosen)})" if chosen else ""))
    if local:
        return local_target(workdir)
    if hosts:
        return hosts_target(hosts, workdir, python, ssh)
    # hosts, interpreter, EFS workdir, SSH settings and GPUs from the cluster's tags; the CLI is where
    # `launch train` meets infra, nothing below it imports infra
    from mxlaunch.infra.cloud.cluster_target import cluster_target

    found = cluster_target(cluster).job_target(workdir, python, ssh)
    return dataclasses.replace(found, cluster=cluster)  # recorded in job.yaml: --resume resolves it again


def _resume_target(run_dir: str, workdir: Optional[str], python: Optional[str],
                   ssh: Optional["SSHOptions"]) -> JobTarget:
    """Where RUN_DIR's job ran (job.yaml), with this launch's flags over the recorded values. A cluster's
    job resolves the cluster again by name: its instances' addresses may have changed since."""
    recorded = rundir.recorded_target(run_dir)
    if not recorded.get("cluster"):
        return rundir.resume_target(run_dir, python, ssh, workdir)
    from mxlaunch.infra.cloud.cluster_target import cluster_target

    data = rundir.load_job(run_dir)
    found = cluster_target(recorded["cluster"]).job_target(workdir or data.get("workdir"),
                                                           python or recorded.get("python"), ssh)
    return dataclasses.replace(found, cluster=recorded["cluster"])


VENV_PROGRAMS = ("trainer", "python", "python3")  # what the job's interpreter's venv is known to hold


def _on_hosts(command: Sequence[str], target: JobTarget) -> Tuple[str, ...]:
    """SSH mode: `trainer` or `python` alone means the one beside the job's interpreter (--python, a cluster's
    venv), as --local finds it beside this launcher's: a non-interactive SSH session's PATH lacks the venv."""
    command = tuple(command)
    if not command or "/" in command[0] or command[0] not in VENV_PROGRAMS or not target.python:
        return command
    program = target.python if command[0].startswith("python") else posixpath.join(
        posixpath.dirname(target.python), command[0])
    return (program,) + command[1:]


def _make_runner(spec: JobSpec, target: JobTarget, plan):
    if target.local:
        from mxlaunch.infra.transport.local_runner import LocalRunner
        return LocalRunner()
    from mxlaunch.launcher.jobs.runners import runner_for

    # the preflight proves the scheduler's port reachable from every host, so it takes the plan
    return runner_for(spec, target, plan=plan)


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--local", is_flag=True, help="Run every role on this machine, bound to 127.0.0.1.")
@click.option("--hosts", metavar="FILE|h1,h2:2222", help="Run over SSH on these hosts.")
@click.option("--cluster", metavar="NAME", help="Run over SSH on the hosts of a `launch cluster`.")
@click.option("-n", "--num-workers", type=int, help="Number of workers.")
@click.option("-s", "--num-servers", type=int, help="Number of servers (default: as many as workers).")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run directory (default runs/<UTC time>-<id>).")
@click.option("--env", "env", multiple=True, metavar="KEY[=VALUE]",
              help="Environment for every role; KEY alone takes its value from this environment (keep secrets "
                   "off the command line).")
@click.option("--env-file", "env_files", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="KEY=VALUE lines (KEY alone: from this environment) for every role, before --env.")
@click.option("--env-worker", multiple=True, metavar="KEY[=VALUE]", help="Environment for workers only.")
@click.option("--env-server", multiple=True, metavar="KEY[=VALUE]", help="Environment for servers only.")
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Directory the roles run in (default: --local: here; --hosts: this directory's path, on the "
                   "hosts; --cluster: the cluster's EFS workdir; --resume: the job's).")
@click.option("--python", metavar="PATH", help="Python on the hosts that runs each role's guard (default: --hosts: "
              "this launcher's interpreter path; --cluster: the cluster's venv on EFS; --resume: the job's).")
@click.option("--ssh-key", type=click.Path(dir_okay=False), help="SSH private key.")
@click.option("--ssh-user", help="SSH user (default: the hostfile's, else yours; --cluster: the cluster's login "
              "user).")
@click.option("--known-hosts", type=click.Path(dir_okay=False), help="known_hosts file to verify hosts with.")
@click.option("--accept-new-host-keys", is_flag=True, help="Trust and record hosts seen for the first time.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Stop the whole job after this long.")
@click.option("--grace", type=float, default=1.0, show_default=True, metavar="SECONDS",
              help="Between SIGTERM and SIGKILL when roles are stopped.")
@click.option("--scheduler-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Try this scheduler port first (default: a random free one); another is tried if it is taken.")
@click.option("--dry-run", is_flag=True, help="Print the plan (job.yaml) and exit.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="Run the job of RUN_DIR again, where it ran, from the newest checkpoint its workers wrote. "
                   "--resume RUN_DIR --hosts FILE: a --hosts job on other hosts (as many worker slots); "
                   "--cluster NAME --detach --resume RUN: a detached run, on the cluster as it is now.")
@click.option("--num-epochs", type=int, metavar="N",
              help="With --resume: train up to N epochs (more than the newest checkpoint's epoch).")
@click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="When a role fails or a host is lost, start the job again from its newest whole checkpoint "
                   "(from scratch if it has none yet), in the same run directory, up to N times.")
@click.option("--restart-delay", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="Wait between a failed attempt and the next (Ctrl-C ends the wait and the launch).")
@click.option("--watch-spot/--no-watch-spot", default=None,
              help="Watch each host's spot interruption notice (EC2 metadata service, IMDSv2); on a notice rank 0 "
                   "saves a checkpoint where it is and the job stops (restarted from it with --max-restarts). "
                   "Default: on for --cluster, off for --local and --hosts; --resume keeps the job's.")
@click.option("-v", "--verbose", is_flag=True, help="Show every line of every role, ps-lite's and MXNet's engine "
              "lines too (the logs always have them).")
@click.option("--detach", is_flag=True,
              help="With --cluster: run the launcher itself on instance 0 (in the cluster's venv, its own session) "
                   "and return with the run id; the run directory is on EFS (see launch runs/logs/stop --cluster).")
@click.option("--detached-from", hidden=True, metavar="NAME")  # set by --detach on the launcher it starts
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def train(local, hosts, cluster, num_workers, num_servers, run_dir, env, env_files, env_worker, env_server, workdir,
          python, ssh_key, ssh_user, known_hosts, accept_new_host_keys, timeout, grace, scheduler_port, dry_run,
          resume_dir, num_epochs, max_restarts, restart_delay, watch_spot, verbose, command, detach=False,
          detached_from=None) -> None:
    """Run COMMAND as every role of an MXNet parameter-server job (1 scheduler, S servers, N workers).

    \b
    launch train --local -n 2 -s 1 -- trainer fit --network resnet ...
    launch train --resume runs/20260101-120000-ab12cd34 [--num-epochs 20]
    """
    grace, timeout = _seconds("--grace", grace), _seconds("--timeout", timeout)
    if detached_from:  # this is the launcher that `--detach` started on instance 0
        return _as_detached(detached_from)
    if detach:
        _check_detach(cluster, dry_run, run_dir)
    if not (math.isfinite(restart_delay) and restart_delay >= 0):
        raise UsageError(f"--restart-delay {restart_delay:g}: expected a number of seconds >= 0")
    if num_epochs is not None and not resume_dir:
        raise UsageError("--num-epochs goes with --resume RUN_DIR (a new job takes its own after '--')")
    ssh = None if local else _ssh_options(ssh_key, ssh_user, known_hosts, accept_new_host_keys)
    if resume_dir:
        if (command or num_workers is not None or num_servers is not None or local or run_dir
                or (cluster and (hosts or not detach))):
            raise UsageError("--resume RUN_DIR takes the job from RUN_DIR/job.yaml: give no command, -n, -s, "
                             "--run-dir, --local or --cluster with it (--hosts FILE: a --hosts job on other hosts; "
                             "--cluster NAME --detach --resume RUN: a detached run on the cluster as it is now)")
        if detach:  # the run's job.yaml is on the cluster's EFS: instance 0 reads it (launcher/jobs/detached.py)
            from mxlaunch.launcher.jobs import detached
            resumed = [*(["--num-epochs", str(num_epochs)] if num_epochs is not None else []),
                       *(["--timeout", repr(timeout)] if timeout is not None else []),
                       *([] if watch_spot is None else ["--watch-spot" if watch_spot else "--no-watch-spot"]),
                       *(["--workdir", workdir] if workdir else [])]
            target = _target(False, None, cluster, None, python, ssh)
            started = detached.resume(cluster, target, resume_dir, [*resumed, *_detach_passed(
                grace, max_restarts, restart_delay, scheduler_port, verbose)], user_env(env, env_files))
            click.echo(started.run)
            click.echo(detached.started_text(started), err=True, nl=False)
            return
        # --hosts: a --hosts job on other hosts (e.g. a detached run's, its instances replaced)
        target = (rundir.resume_target(resume_dir, python, ssh, workdir, hosts=hosts) if hosts
                  else _resume_target(resume_dir, workdir, python, ssh))
        spec, run_dir = rundir.resume_spec(resume_dir, extra_env=user_env(env, env_files), timeout=timeout,
                                           target=target, num_epochs=num_epochs, watch_spot=watch_spot)
        job_id = rundir.load_job(run_dir).get("job_id") or rundir.new_job_id()
    else:
        target = _target(local, hosts, cluster, workdir, python, ssh)
        if num_workers is None:
            raise UsageError("-n/--num-workers is required")
        command = workload.with_gpus(command, target.gpus_per_host)
        if not command:
            raise UsageError("missing command: put it after '--', e.g. launch train --local -n 2 -- python train.py")
        spec = JobSpec(command=workload.resolve_program(command) if target.local else _on_hosts(command, target),
                       num_workers=num_workers,
                       num_servers=num_servers if num_servers is not None else num_workers,
                       hosts=target.job_hosts(num_workers), local=target.local,
                       env=target.env + user_env(env, env_files),
                       env_worker=env_pairs(env_worker, "--env-worker"),
                       env_server=env_pairs(env_server, "--env-server"), workdir=target.workdir,
                       timeout=timeout, watch_spot=bool(cluster) if watch_spot is None else watch_spot).validate()
        job_id = rundir.new_job_id()
        run_dir = run_dir or rundir.default_run_dir(job_id)
    if detach:  # the launcher itself goes to instance 0, with the job as resolved here (launcher/jobs/detached.py)
        from mxlaunch.launcher.jobs import detached
        passed = _detach_passed(grace, max_restarts, restart_delay, scheduler_port, verbose)
        started = detached.start(cluster, target, spec, passed, detached.new_run_id())
        click.echo(started.run)  # alone on stdout: RUN=$(launch train ... --detach)
        click.echo(detached.started_text(started), err=True, nl=False)
        return
    cwd = spec.workdir or os.getcwd()
    run_dir = os.path.abspath(run_dir)
    remote_dir = None  # SSH mode: the roles' own run directory, on their hosts
    if not target.local:
        remote_dir = (rundir.resume_remote_run_dir(run_dir, cwd, job_id) if resume_dir
                      else rundir.remote_run_dir(cwd, run_dir, job_id))
    cpus = _local_cpus()

    def make_plan(port: int):
        return plan_job(spec, job_id=job_id, run_dir=run_dir, port=port, local_cpus=cpus, remote_run_dir=remote_dir)

    first_port = scheduler_port or ports.choose_port(span=1 + spec.num_servers + spec.num_workers)
    if dry_run:
        click.echo(rundir.render_plan(make_plan(first_port), cwd, target), nl=False)
        if not target.local:  # SSH mode: the exact command and stdin of every role, per host
            from mxlaunch.launcher.jobs.runners import dry_run_text
            click.echo(dry_run_text(make_plan(first_port), target, cwd), nl=False)
        return
    if not resume_dir:
        rundir.refuse_used(run_dir)
    runner = _make_runner(spec, target, make_plan(first_port))
    prefix = workload.model_prefix(spec.command)
    try:  # only now: a preflight that refuses the job leaves no empty run directory behind
        # a new job's restarts never resume from the checkpoints its prefix held before it (another run's);
        # a resumed job's restarts continue from whatever is there
        older = (checkpoints.older_checkpoints(target, dataclasses.replace(spec, workdir=cwd), prefix,
                                               workload.load_point(spec.command))
                 if prefix and max_restarts and not resume_dir else None)
        rundir.prepare(run_dir, resume=bool(resume_dir))
    except BaseException:
        runner.close()
        raise
    from mxlaunch.launcher.jobs import restarts as restart_loop
    def resume_point() -> "restart_loop.ResumePoint":
        """The newest whole checkpoint (mid-epoch ones too) of this job every worker can load, as --resume
        finds it, less those older than the job (unless its command loads that very one)."""
        if not prefix:  # no checkpoints: the workload starts again from scratch
            return restart_loop.ResumePoint(None)
        ran = dataclasses.replace(spec, workdir=cwd)  # where the roles ran (and wrote their checkpoints)
        point, ignored = checkpoints.newest_of_job(target, ran, prefix, older)
        if ignored:
            click.echo(f"[launch] ignoring {ignored} checkpoint{'s' if ignored != 1 else ''} of {prefix} older "
                       f"than this job", err=True)
        if point is None:
            return restart_loop.ResumePoint(None)
        return restart_loop.ResumePoint(point.epoch, checkpoints.checkpoint_time(target, ran, prefix, point),
                                        point.batch)

    if not max_restarts:
        outcome = run_and_report(make_plan, first_port, runner, cwd, grace, append_logs=bool(resume_dir),
                                 target=target, verbose=verbose)
        if outcome.status != 0:
            raise JobFailed(final_message(outcome, resume_point), outcome.status)
        return

    def attempt(number: int, epoch: Optional[int], done: tuple) -> JobOutcome:
        if number == 1:
            return run_and_report(make_plan, first_port, runner, cwd, grace, append_logs=bool(resume_dir),
                                  target=target, verbose=verbose, restarts=done)
        again = spec if epoch is None else dataclasses.replace(
            spec, command=workload.with_load_epoch(spec.command, epoch, done[-1].from_batch))

        def make_again(port: int):
            return plan_job(again, job_id=job_id, run_dir=run_dir, port=port, local_cpus=cpus,
                            remote_run_dir=remote_dir)

        port = scheduler_port or ports.choose_port(span=1 + spec.num_servers + spec.num_workers)
        return run_and_report(make_again, port, _make_runner(again, target, make_again(port)), cwd, grace,
                              append_logs=True, target=target, verbose=verbose, restarts=done,
                              marker=restart_loop.marker(done[-1], max_restarts))

    def restart_point(failed: JobOutcome) -> "restart_loop.ResumePoint":
        nonlocal target, spec
        if target.cluster:  # the cluster made whole first: its checkpoints are then read through hosts that answer,
            # and the next attempt's roles are planned on its hosts as they are now
            target, spec = _cluster_made_whole(target, spec, ssh, failed.spot_hosts)
        return resume_point()

    try:  # a noticed (spot) host is restarted on only where it can be replaced: --cluster
        result = restart_loop.run_with_restarts(attempt, restart_point, failure_text,
                                                restart_loop.RestartPolicy(max_restarts, restart_delay,
                                                                           replaces_hosts=bool(target.cluster)),
                                                lambda text: click.echo(f"[launch] {text}", err=True))
    except CommandError as exc:  # a restart that cannot begin (a host still unreachable, its preflight refused)
        from mxlaunch.exits import Exit
        then = "the AWS credentials are refreshed" if exc.exit_code == Exit.AWS_CREDENTIALS else "the hosts are back"
        raise JobFailed(f"could not restart the job: {exc.format_message()} (run directory {run_dir}; "
                        f"`launch train --resume {run_dir}` once {then})", exc.exit_code) from exc
    outcome = result.outcome
    if result.spot_not_restarted:  # "could not restart": a detached launcher adds how to repair its cluster
        raise JobFailed(f"could not restart the job: {final_message(outcome, resume_point)} once the noticed "
                        f"instance is replaced (`launch cluster repair NAME` if the hosts are a cluster's): "
                        f"restarted on the same hosts it would only be interrupted again", outcome.status)
    if result.interrupted_waiting:
        from mxlaunch.launcher.jobs import summary
        summary.amend_summary(outcome, result.restarts)
        raise JobFailed(f"{outcome.reason.value} while waiting to restart (nothing was running) after: "
                        f"{failure_text(outcome)} (run directory {outcome.plan.run_dir})", outcome.status)
    if outcome.status != 0:
        spent = f" (after {len(result.restarts)} restart{'s' if len(result.restarts) != 1 else ''})"
        raise JobFailed(final_message(outcome, resume_point) + (spent if result.restarts else ""), outcome.status)


def _check_detach(cluster: Optional[str], dry_run: bool, run_dir: Optional[str]) -> None:
    if not cluster:
        raise UsageError("--detach runs the launcher on a cluster's instance 0: give --cluster NAME")
    if dry_run:
        raise UsageError("--dry-run shows the plan without --detach (a detached launcher runs the same plan)")
    if run_dir:
        raise UsageError("--run-dir: a detached run's directory is WORKDIR/runs/<run id> on the cluster's EFS")
    # --resume RUN: RUN is a run id (launch runs --cluster NAME), checked by launcher/jobs/detached.py


def _detach_passed(grace: float, max_restarts: int, restart_delay: float, scheduler_port: Optional[int],
                   verbose: bool) -> list:
    """The options a detached launcher takes as they were given here."""
    return ["--grace", repr(grace), "--max-restarts", str(max_restarts), "--restart-delay", repr(restart_delay),
            *(["--scheduler-port", str(scheduler_port)] if scheduler_port else []), *(["-v"] if verbose else [])]


def _as_detached(cluster: str) -> None:
    """This very command (less --detached-from), as the launcher of a detached job: a restart that cannot
    begin also says what only a machine with the cluster's state can do (the instances hold no AWS
    credentials, so this launcher cannot replace one). However it ends (SIGKILL aside), the key that was
    copied for it is removed (its folder, ~/.mxlaunch/detach/NAME/RUN: launcher/jobs/detached.py)."""
    from mxlaunch.infra.transport.remote.detach_starter import KEYS, remove_keys

    params = click.get_current_context().params
    run = os.path.basename(os.path.normpath(params.get("resume_dir") or params.get("run_dir") or "RUN"))
    try:
        train.callback(**{**params, "detached_from": None})
    except JobFailed as exc:
        if exc.message.startswith("could not restart"):
            exc.message += (f"; this launcher, detached on cluster {cluster}, cannot replace an instance: from a "
                            f"machine with the cluster's state run `launch cluster repair {cluster}`, then "
                            f"`launch train --cluster {cluster} --detach --resume {run}`")
        raise
    finally:
        key = params.get("ssh_key")
        folder = os.path.dirname(os.path.abspath(key)) if key else ""
        # only the folder made for this run: never a key the launcher was not given by --detach
        if folder == os.path.join(os.path.expanduser("~"), KEYS, cluster, run):
            remove_keys(folder)


def _cluster_made_whole(target: JobTarget, spec: JobSpec, ssh: "SSHOptions",
                        doomed: Sequence[str] = ()) -> Tuple[JobTarget, JobSpec]:
    """Before a restart under --cluster (infra/cloud/repair.py restart_hosts): the same hosts when every one answers
    SSH and none had a spot notice (`doomed`: their private addresses), with no AWS call; else the cluster made
    whole, and the job's hosts taken from it as it is now."""
    from mxlaunch.infra.cloud.repair import restart_hosts

    cluster = restart_hosts(target.cluster, [h.address for h in spec.hosts], doomed,
                            lambda text: click.echo(f"[launch] {text}", err=True))
    if cluster is None:
        return target, spec
    found = dataclasses.replace(cluster.job_target(target.workdir, target.python, ssh), cluster=target.cluster)
    return found, dataclasses.replace(spec, hosts=found.job_hosts(spec.num_workers)).validate()
