"""What `launch train` was asked for: one typed request, checked in one place before anything resolves a host,
reads a run's files or connects anywhere. The modes of the job (launcher/jobs/modes.py) take it.

    parse(**options) -> TrainRequest    click's values; a usage error is one line (exit 2)
    TrainRequest.mode                   NEW, RESUME, DETACH or DETACHED (the launcher --detach started)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

from mxlaunch.errors import UsageError
from mxlaunch.launcher.jobs.env_options import env_pairs, user_env

if TYPE_CHECKING:
    from mxlaunch.infra.transport.ssh import SSHOptions

Env = Tuple[Tuple[str, str], ...]
NEW, RESUME, DETACH, DETACHED = "new", "resume", "detach", "detached"
MISSING_COMMAND = "missing command: put it after '--', e.g. launch train --local -n 2 -- python train.py"


@dataclass(frozen=True)
class TrainRequest:
    """`launch train`'s options, parsed and checked; the environment options resolved to pairs (--env KEY
    alone takes its value from this environment; --env-file FILEs first, then --env)."""

    command: Tuple[str, ...] = ()
    local: bool = False
    hosts: Optional[str] = None  # --hosts FILE|h1,h2:2222
    cluster: Optional[str] = None
    num_workers: Optional[int] = None
    num_servers: Optional[int] = None  # None: as many as workers
    run_dir: Optional[str] = None
    env: Env = ()
    env_worker: Env = ()
    env_server: Env = ()
    workdir: Optional[str] = None
    python: Optional[str] = None
    ssh_key: Optional[str] = None
    ssh_user: Optional[str] = None
    known_hosts: Optional[str] = None
    accept_new_host_keys: bool = False
    timeout: Optional[float] = None
    grace: float = 1.0
    scheduler_port: Optional[int] = None
    dry_run: bool = False
    resume: Optional[str] = None  # RUN_DIR; with --detach a run id of the cluster's
    num_epochs: Optional[int] = None
    max_restarts: int = 0
    restart_delay: float = 5.0
    watch_spot: Optional[bool] = None  # None: the default of where the job runs (on for --cluster)
    verbose: bool = False
    detach: bool = False
    detached_from: Optional[str] = None  # set by --detach on the launcher it starts: its cluster

    @property
    def mode(self) -> str:
        if self.detached_from:
            return DETACHED
        if self.detach:
            return DETACH
        return RESUME if self.resume else NEW

    @property
    def ssh(self) -> Optional["SSHOptions"]:
        """The SSH settings given (None with --local)."""
        if self.local:
            return None
        from mxlaunch.infra.transport.ssh import SSHOptions  # heavy

        return SSHOptions(key=self.ssh_key, user=self.ssh_user, known_hosts=self.known_hosts,
                          accept_new=self.accept_new_host_keys)


def _seconds(option: str, value: Optional[float]) -> Optional[float]:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{option} {value:g}: expected a positive number of seconds")
    return value


def _check_detach(request: TrainRequest) -> None:
    if not request.cluster:
        raise UsageError("--detach runs the launcher on a cluster's instance 0: give --cluster NAME")
    if request.dry_run:
        raise UsageError("--dry-run shows the plan without --detach (a detached launcher runs the same plan)")
    if request.run_dir:
        raise UsageError("--run-dir: a detached run's directory is WORKDIR/runs/<run id> on the cluster's EFS")
    # --resume RUN: RUN is a run id (launch runs --cluster NAME), checked by launcher/jobs/detached.py


def _check_resume(request: TrainRequest) -> None:
    if (request.command or request.num_workers is not None or request.num_servers is not None or request.local
            or request.run_dir or (request.cluster and (request.hosts or not request.detach))):
        raise UsageError("--resume RUN_DIR takes the job from RUN_DIR/job.yaml: give no command, -n, -s, "
                         "--run-dir, --local or --cluster with it (--hosts FILE: a --hosts job on other hosts; "
                         "--cluster NAME --detach --resume RUN: a detached run on the cluster as it is now)")


def _check_new(request: TrainRequest) -> None:
    chosen = [name for name, given in (("--local", request.local), ("--hosts", request.hosts),
                                       ("--cluster", request.cluster)) if given]
    if len(chosen) != 1:
        raise UsageError("choose where the job runs: exactly one of --local, --hosts FILE|h1,h2, --cluster NAME"
                         + (f" (got {' and '.join(chosen)})" if chosen else ""))
    if request.num_workers is None:
        raise UsageError("-n/--num-workers is required")
    if not request.command:
        raise UsageError(MISSING_COMMAND)


def check(request: TrainRequest) -> TrainRequest:
    """The request, or the first usage error in it (each one line, exit 2)."""
    _seconds("--grace", request.grace)
    _seconds("--timeout", request.timeout)
    if request.detach:
        _check_detach(request)
    if not (math.isfinite(request.restart_delay) and request.restart_delay >= 0):
        raise UsageError(f"--restart-delay {request.restart_delay:g}: expected a number of seconds >= 0")
    if request.num_epochs is not None and not request.resume:
        raise UsageError("--num-epochs goes with --resume RUN_DIR (a new job takes its own after '--')")
    if request.resume:
        _check_resume(request)
    else:
        _check_new(request)
    return request


def parse(env: Sequence[str] = (), env_files: Sequence[str] = (), env_worker: Sequence[str] = (),
          env_server: Sequence[str] = (), command: Sequence[str] = (), **options) -> TrainRequest:
    """click's values of `launch train` as a checked request: the options first, then the environment
    (files read, KEY alone looked up here), whose errors name the option and key, never a value."""
    request = check(TrainRequest(command=tuple(command), **options))
    return replace(request, env=user_env(env, env_files), env_worker=env_pairs(env_worker, "--env-worker"),
                   env_server=env_pairs(env_server, "--env-server"))
