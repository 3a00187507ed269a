"""`launch train`: plan a parameter-server job, start it, watch it, report it."""
from __future__ import annotations

import os
import shutil
import sys
from typing import Optional, Sequence, Tuple

import click

from mxlaunch.launcher import ports, rundir
from mxlaunch.errors import CommandError, UsageError
from mxlaunch.launcher.hosts import Host, parse_hosts
from mxlaunch.launcher.job import Job, JobOutcome, JobSettings
from mxlaunch.launcher.plan import JobSpec, parse_env_pair, plan_job



class JobFailed(CommandError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _env_pairs(values: Sequence[str], option: str) -> Tuple[Tuple[str, str], ...]:
    return tuple(parse_env_pair(v, option) for v in values)


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _resolve_local_command(command: Tuple[str, ...]) -> Tuple[str, ...]:
    """`trainer`, `python` ... found on PATH, or else beside this launcher's interpreter (an
    un-activated venv), so that `.venv/bin/launch train --local -- trainer fit ...` just works."""
    if not command or os.sep in command[0] or shutil.which(command[0]):
        return command
    sibling = os.path.join(os.path.dirname(sys.executable), command[0])
    return ((sibling,) + command[1:]) if os.access(sibling, os.X_OK) else command


def _make_runner(spec: JobSpec, options: dict):
    if spec.local:
        from mxlaunch.launcher.local_runner import LocalRunner
        return LocalRunner()
    try:  # SSH mode lives in its own module (another part of the launcher)
        from mxlaunch.launcher.ssh_runner import runner_from_options
    except ImportError as exc:
        raise CommandError("--hosts/--cluster: SSH mode is not available in this build") from exc
    return runner_from_options(spec=spec, **options)


def _hosts_for(local: bool, hosts: Optional[str], cluster: Optional[str]) -> Tuple[Host, ...]:
    chosen = [name for name, given in (("--local", local), ("--hosts", hosts), ("--cluster", cluster)) if given]
    if len(chosen) != 1:
        raise UsageError("choose where the job runs: exactly one of --local, --hosts FILE|h1,h2, --cluster NAME"
                         + (f" (got {' and '.join(chosen)})" if chosen else ""))
    if local:
        return (Host.loopback(),)
    if hosts:
        return parse_hosts(hosts)
    return ()  # --cluster: the hosts come from the cluster's tags


def _with_cluster_gpus(command: Tuple[str, ...], gpus_arg: str) -> Tuple[str, ...]:
    """A trainer command on a GPU cluster gets every GPU of its host unless it names its own --gpus."""
    is_trainer = any(os.path.basename(word) in ("trainer", "mxlaunch.trainer") for word in command[:3])  # trainer, .venv/bin/trainer, -m mxlaunch.trainer
    if not gpus_arg or not is_trainer or any(w == "--gpus" or w.startswith("--gpus=") for w in command):
        return command
    return command + ("--gpus", gpus_arg)


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--local", is_flag=True, help="Run every role on this machine, bound to 127.0.0.1.")
@click.option("--hosts", metavar="FILE|h1,h2:2222", help="Run over SSH on these hosts.")
@click.option("--cluster", metavar="NAME", help="Run over SSH on the hosts of a `launch cluster`.")
@click.option("-n", "--num-workers", type=int, help="Number of workers.")
@click.option("-s", "--num-servers", type=int, help="Number of servers (default: as many as workers).")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run directory (default runs/<UTC time>-<id>).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment for every role.")
@click.option("--env-worker", multiple=True, metavar="KEY=VALUE", help="Environment for workers only.")
@click.option("--env-server", multiple=True, metavar="KEY=VALUE", help="Environment for servers only.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Directory the roles run in (default: here).")
@click.option("--python", metavar="PATH", help="Python on the hosts that runs each role's guard.")
@click.option("--ssh-key", type=click.Path(dir_okay=False), help="SSH private key.")
@click.option("--ssh-user", help="SSH user (default: the hostfile's, else yours).")
@click.option("--known-hosts", type=click.Path(dir_okay=False), help="known_hosts file to verify hosts with.")
@click.option("--accept-new-host-keys", is_flag=True, help="Trust and record hosts seen for the first time.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Stop the whole job after this long.")
@click.option("--grace", type=float, default=1.0, show_default=True, metavar="SECONDS",
              help="Between SIGTERM and SIGKILL when roles are stopped.")
@click.option("--scheduler-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Try this scheduler port first (default: a random free one); another is tried if it is taken.")
@click.option("--dry-run", is_flag=True, help="Print the plan (job.yaml) and exit.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="Run the job of RUN_DIR again from the newest checkpoint its workers wrote.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def train(local, hosts, cluster, num_workers, num_servers, run_dir, env, env_worker, env_server, workdir,
          python, ssh_key, ssh_user, known_hosts, accept_new_host_keys, timeout, grace, scheduler_port, dry_run,
          resume_dir, command) -> None:
    """Run COMMAND as every role of an MXNet parameter-server job (1 scheduler, S servers, N workers).

    \b
    launch train --local -n 2 -s 1 -- trainer fit --network resnet ...
    launch train --resume runs/20260101-120000-ab12cd34
    """
    ssh_options = {"python": python, "ssh_key": ssh_key, "ssh_user": ssh_user, "known_hosts": known_hosts,
                   "accept_new_host_keys": accept_new_host_keys}
    if grace <= 0:
        raise UsageError(f"--grace must be positive, got {grace:g}")
    if resume_dir:
        if command or num_workers is not None or num_servers is not None or local or hosts or cluster or run_dir:
            raise UsageError("--resume RUN_DIR takes the job from RUN_DIR/job.yaml: give no command, -n, -s, "
                             "--run-dir or --local/--hosts/--cluster with it")
        spec, run_dir = rundir.resume_spec(resume_dir, extra_env=_env_pairs(env, "--env"), timeout=timeout)
        job_id = rundir.load_job(run_dir).get("job_id") or rundir.new_job_id()
    else:
        job_hosts = _hosts_for(local, hosts, cluster)
        if cluster:  # hosts, interpreter, EFS workdir, SSH settings and GPUs all come from the cluster's tags
            from mxlaunch.infra.targets import cluster_target

            target = cluster_target(cluster)
            job_hosts, workdir = target.hosts, workdir or target.workdir
            python = python or target.python
            ssh_options.update(python=python, ssh_key=ssh_key or (str(target.ssh_key) if target.ssh_key else None),
                               ssh_user=ssh_user or target.ssh_user,
                               known_hosts=known_hosts or str(target.known_hosts),
                               config_path=str(target.ssh_config))
            command = _with_cluster_gpus(tuple(command), target.gpus_arg)
        if num_workers is None:
            raise UsageError("-n/--num-workers is required")
        if not command:
            raise UsageError("missing command: put it after '--', e.g. launch train --local -n 2 -- python train.py")
        spec = JobSpec(command=_resolve_local_command(tuple(command)) if local else tuple(command),
                       num_workers=num_workers,
                       num_servers=num_servers if num_servers is not None else num_workers,
                       hosts=(Host.loopback(slots=num_workers),) if local else job_hosts, local=local,
                       env=_env_pairs(env, "--env"), env_worker=_env_pairs(env_worker, "--env-worker"),
                       env_server=_env_pairs(env_server, "--env-server"),
                       workdir=os.path.abspath(workdir) if workdir and local else workdir,
                       timeout=timeout).validate()
        job_id = rundir.new_job_id()
        run_dir = run_dir or rundir.default_run_dir(job_id)
    cwd = spec.workdir or os.getcwd()
    run_dir = os.path.abspath(run_dir)
    cpus = _local_cpus()

    def make_plan(port: int):
        return plan_job(spec, job_id=job_id, run_dir=run_dir, port=port, local_cpus=cpus)

    first_port = scheduler_port or ports.choose_port()
    if dry_run:
        click.echo(rundir.render_plan(make_plan(first_port), cwd), nl=False)
        if not spec.local:  # SSH mode: the exact command and stdin of every role, per host
            from mxlaunch.launcher.ssh_runner import dry_run_text
            click.echo(dry_run_text(make_plan(first_port), python, cwd), nl=False)
        return
    if not resume_dir:
        rundir.refuse_used(run_dir)
    # SSH mode: the preflight proves the scheduler's port reachable from every host, so it needs the plan
    runner = _make_runner(spec, ssh_options if spec.local else dict(ssh_options, plan=make_plan(first_port)))
    try:  # only now: a preflight that refuses the job leaves no empty run directory behind
        rundir.prepare(run_dir, resume=bool(resume_dir))
    except BaseException:
        runner.close()
        raise
    outcome = run_and_report(make_plan, first_port, runner, cwd, grace, append_logs=bool(resume_dir))
    if outcome.status != 0:
        raise JobFailed(_final_message(outcome), outcome.status)


def run_and_report(make_plan, first_port: int, runner, cwd: str, grace: float, append_logs: bool) -> JobOutcome:
    from mxlaunch.launcher import plotting, summary
    from mxlaunch.launcher.output import RoleOutputSink

    plan = make_plan(first_port)
    rundir.write_plan_files(plan, cwd)
    sink = RoleOutputSink(plan.run_dir, plan.roles, show_host=not plan.spec.local, append=append_logs)
    sink.notice(f"run directory {plan.run_dir}")
    try:
        job = Job(make_plan, first_port, runner, sink, JobSettings(grace=grace), cwd=cwd)
        outcome = job.run()
        if outcome.plan.port != plan.port:  # the scheduler moved: the record says where it really ran
            rundir.write_plan_files(outcome.plan, cwd)
        summary.write_summary(outcome)
        click.echo(summary.table(outcome), nl=False)
        if outcome.first_failure is not None:
            for line in summary.failure_lines(outcome, sink.tail(outcome.first_failure.name)):
                click.echo(line, err=True)
        png = plotting.plot_run_if_metrics(plan.run_dir)
        if png:
            sink.notice(f"accuracy plot {png}")
    finally:
        sink.close()
    return outcome


def _final_message(outcome: JobOutcome) -> str:
    where = f"(run directory {outcome.plan.run_dir})"
    if outcome.first_failure is not None:
        from mxlaunch.launcher.summary import describe
        failure = outcome.first_failure
        return f"{describe(failure, outcome.rank_of(failure.name))}; every other role was stopped {where}"
    if outcome.reason == "timeout":
        return f"the job exceeded --timeout {outcome.plan.spec.timeout:g}s; every role was stopped {where}"
    if outcome.reason in ("interrupted", "terminated", "hung up"):
        return f"{outcome.reason}; every role was stopped {where}"
    return f"not every worker exited 0 {where}"
