"""The runner of a job's target: local processes, or SSH after the preflight has proven every host ready.

    runner_for(spec, target, plan)   LocalRunner for --local; else connect to every host in parallel, run the
                                     preflight (preflight.py), make the roles' run directory, and return an
                                     SSHRunner (a failure: a per-host table on stderr, PreflightError, nothing
                                     started anywhere)
    dry_run_text(plan, target, cwd)  `--dry-run`: every role's SSH command and what its stdin carries
"""
from __future__ import annotations

import json
import os
import shlex
from typing import Dict, Optional

from mxlaunch.errors import UsageError
from mxlaunch.infra.transport.hosts import Host, place
from mxlaunch.infra.transport.remote import roleguard
from mxlaunch.infra.transport.runner import RoleLaunch
from mxlaunch.infra.transport.ssh import Connection, SSHOptions, connect_all, parallel
from mxlaunch.infra.transport.ssh_runner import SSHRunner
from mxlaunch.infra.transport.target import JobTarget, default_python
from mxlaunch.launcher.jobs import preflight, workload
from mxlaunch.launcher.jobs.plan import masked
from mxlaunch.templates import render

MKDIR_TIMEOUT = 15.0


def make_remote_run_dir(connections: Dict[Host, Connection], remote_dir: str) -> None:
    """Create the roles' run directory on every host (in parallel): a host where the job's user cannot
    is refused before anything starts (PreflightError, naming each host and why)."""
    def mkdir(host: Host):
        return connections[host].run(["mkdir", "-p", "--", remote_dir], timeout=MKDIR_TIMEOUT)

    failed = []
    for host, result in parallel(mkdir, list(connections), timeout=MKDIR_TIMEOUT + 5, name="mkdir").items():
        if isinstance(result, BaseException) or result[0] != 0:
            why = result if isinstance(result, BaseException) else (result[2].strip() or f"exit {result[0]}")
            failed.append(f"{host.target}: {why}")
    if failed:
        raise preflight.PreflightError(f"cannot create the run directory {remote_dir} on {len(failed)} host(s): "
                             + "; ".join(failed))


def dry_run_text(plan, target: JobTarget, workdir: Optional[str]) -> str:
    """For `--dry-run`: the exact command of every role's channel and what its stdin carries, per host
    (secret-looking values masked). YAML, like job.yaml."""
    by_host: Dict[Host, list] = {}
    for role in plan.roles:
        config = {"argv": list(plan.spec.command), "env": masked(role.env_dict()), "cwd": workdir}
        by_host.setdefault(role.host, []).append({"name": role.name,
                                                  "config_json": json.dumps(config, ensure_ascii=False)})
    command = shlex.join(roleguard.bootstrap_argv(target.python or default_python()))
    return render("ssh_commands.j2", remote_command_json=json.dumps(command, ensure_ascii=False),
                  guard_bytes=len(roleguard.bootstrap_payload()),
                  hosts=[{"target_json": json.dumps(h.target), "roles": roles} for h, roles in by_host.items()])


def runner_for(spec, target: JobTarget, plan=None, echo=None) -> SSHRunner:
    """Build the SSH runner for `launch train --hosts/--cluster/--resume` on `target` (SSH mode): connect to
    every host of the job in parallel, run the preflight, and return the runner (or raise PreflightError,
    nothing started).

    With `plan` (the JobPlan of the first port) the preflight also proves the scheduler's port is
    reachable from every host before anything starts; without it that check runs just before the
    scheduler starts."""
    python = target.python or default_python()
    if not os.path.isabs(python):
        raise UsageError(f"--python must be an absolute path on the hosts, got {python!r} "
                         f"(a relative interpreter resolves differently on every host)")
    placement = place(spec.hosts, spec.num_workers, spec.num_servers)
    connections = connect_all(placement.hosts_used(), target.ssh or SSHOptions())
    checks = preflight.Checks.from_spec(spec, python, placement, gpus_per_host=target.gpus_per_host)
    try:
        report = preflight.run(connections, checks, plan=plan)
        report.raise_if_failed(echo=echo)
    except BaseException:
        connections.close()
        raise

    def port_check(launch: RoleLaunch) -> None:
        if plan is None and launch.role.kind == "scheduler":
            late = preflight.check_port(connections.succeeded, checks, launch.role)
            late.raise_if_failed(echo=echo)

    run_dirs = None
    if plan is not None and plan.remote_run_dir:
        try:
            make_remote_run_dir(connections.succeeded, plan.remote_run_dir)
        except BaseException:
            connections.close()
            raise
        run_dirs = (plan.run_dir, plan.remote_run_dir)
    return SSHRunner(connections.succeeded, python, before_first_start=port_check, run_dirs=run_dirs,
                     run_files=workload.run_files(spec.command, spec.num_workers, spec.num_servers))
