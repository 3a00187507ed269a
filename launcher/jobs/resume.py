"""`launch train --resume RUN_DIR`: the job of a run directory again, from the newest checkpoint every one of
its workers can load (where it runs: launcher/jobs/where.py resume_target).

    resume_spec(run_dir, target, ...) -> (JobSpec, run_dir)   its command with --load-epoch E [--load-batch B]
    resume_remote_run_dir(run_dir, workdir, job_id)            the roles' run directory of the resumed job
    with_num_epochs(command, n)                                the command training to n epochs
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import Dict, Mapping, Optional, Sequence, Tuple

from mxlaunch.errors import UsageError
from mxlaunch.infra.transport.target import JobTarget
from mxlaunch.launcher.jobs import checkpoints, rundir, workload
from mxlaunch.launcher.jobs.job_record import JobRecord
from mxlaunch.launcher.jobs.plan import MASK, JobSpec
from mxlaunch.launcher.jobs.where import recorded_target

Env = Tuple[Tuple[str, str], ...]


def _newest_everywhere(run_dir: str, target: JobTarget, spec: JobSpec, prefix: str,
                       remote=checkpoints.remote_points, said=None) -> checkpoints.Checkpoint:
    point, found = checkpoints.newest_everywhere(target, spec, prefix, remote, said=said)
    if point is not None:
        return point
    if target.local:
        raise UsageError(f"cannot resume {run_dir}: no whole checkpoint {prefix}-NNNN.params (with "
                         f"{prefix}-symbol.json) in {spec.workdir}")
    where = posixpath.join(spec.workdir, prefix)
    # Checkpoint's own wording ("epoch E batch B"): one way to say a position
    seen = "; ".join(f"{h.target}: {', '.join(str(c) for c in sorted(e)) or 'none'}" for h, e in found.items())
    raise UsageError(f"cannot resume {run_dir}: no checkpoint {where}-NNNN.params that every worker host has "
                     f"(epochs per host: {seen}); the workers must all see it, e.g. on EFS")


def with_num_epochs(command: Sequence[str], num_epochs: Optional[int]) -> Tuple[str, ...]:
    """The command training to `num_epochs` (its --num-epochs, or the alias --num-epoch, replaced)."""
    command = tuple(command)
    if num_epochs is None:
        return command
    if num_epochs < 1:
        raise UsageError(f"--num-epochs must be at least 1, got {num_epochs}")
    return workload.without_option(workload.without_option(command, "--num-epoch"), "--num-epochs") + (
        "--num-epochs", str(num_epochs))


def _refuse_nothing_to_train(run_dir: str, point: checkpoints.Checkpoint, num_epochs: Optional[int],
                             command: Sequence[str]) -> None:
    """--num-epochs N at or below the newest checkpoint's epoch E (E epochs done; a mid-epoch one is in epoch E)
    would start every role to train nothing: refused before any starts. Without --num-epochs, a trainer command
    whose own --num-epochs (or the trainer's default) is done, a finished run, is refused the same way. Remote
    runs know E here too: the checkpoint search already ran on the worker hosts."""
    done = f"{point.epoch} epoch{'s' if point.epoch != 1 else ''} done"
    if num_epochs is not None and num_epochs <= point.epoch:
        raise UsageError(f"--num-epochs {num_epochs}: the newest checkpoint of {run_dir} is {point} ({done}), so "
                         f"nothing is left to train; give --num-epochs above {point.epoch}")
    own = workload.num_epochs(command) if num_epochs is None else None
    if own is not None and own <= point.epoch:
        raise UsageError(f"{run_dir} has trained its {own} epochs (newest checkpoint {point}, {done}): nothing "
                         f"to resume; to train more, add --num-epochs N with N above {point.epoch}")


def _unmasked(run_dir: str, recorded: Mapping[str, str], given: Dict[str, str]) -> Env:
    """A recorded environment with the values this launch gives (--env, taken out of `given`), and each value
    job.yaml masks taken from this environment (it is never in the file)."""
    pairs = []
    for key, value in recorded.items():
        if key in given:
            value = given.pop(key)
        elif MASK in value:  # masked whole, or a URL's password
            if key not in os.environ:
                raise UsageError(f"cannot resume {run_dir}: job.yaml masks {key}; export it and pass "
                                 f"--env {key} (or --env-file FILE)")
            value = os.environ[key]
        pairs.append((key, value))
    return tuple(pairs)


def recorded_watch_spot(record: JobRecord) -> bool:
    """job.yaml's `watch_spot`; where it is not recorded, the default of where the job ran (on for --cluster)."""
    if record.watch_spot is not None:
        return record.watch_spot
    return bool(record.target and record.target.cluster)


def resume_spec(run_dir: str, target: Optional[JobTarget] = None, extra_env: Env = (), timeout: Optional[float] = None,
                num_epochs: Optional[int] = None, remote_checkpoints=checkpoints.remote_points,
                watch_spot: Optional[bool] = None, said=None) -> Tuple[JobSpec, str]:
    """(JobSpec, absolute run_dir) to run RUN_DIR's job again on `target` (default: its own, where.py
    recorded_target) with `--load-epoch <newest checkpoint
    every worker has>` (`--load-batch B` too for a mid-epoch one; and `--num-epochs N` when given: more than
    that checkpoint's epoch). `extra_env`: --env pairs (over the recorded ones). `remote_checkpoints(target,
    hosts, prefix)`: how a remote job's checkpoints are listed (SSH). `watch_spot`: None keeps job.yaml's.
    `said(line)`: told when newer checkpoints that are not whole are passed over."""
    record = rundir.load_job(run_dir)
    target = target or recorded_target(run_dir)
    command = tuple(record.command)
    prefix = workload.model_prefix(command)
    if not prefix:
        raise UsageError(f"cannot resume {run_dir}: its command has no --model-prefix, so there are no checkpoints")
    given = dict(extra_env)
    env, env_worker, env_server = (_unmasked(run_dir, recorded, given)
                                   for recorded in (record.env, record.env_worker, record.env_server))
    spec = JobSpec(command=with_num_epochs(command, num_epochs), num_workers=record.num_workers,
                   num_servers=record.num_servers, hosts=target.job_hosts(record.num_workers), local=target.local,
                   env=env + tuple(given.items()), env_worker=env_worker, env_server=env_server,
                   workdir=target.workdir or os.getcwd(), timeout=timeout if timeout is not None else record.timeout,
                   watch_spot=recorded_watch_spot(record) if watch_spot is None else watch_spot).validate()
    point = _newest_everywhere(run_dir, target, spec, prefix, remote_checkpoints, said)
    _refuse_nothing_to_train(run_dir, point, num_epochs, command)
    spec = dataclasses.replace(spec, command=workload.resumed(spec.command, point.epoch, point.batch))
    return spec, os.path.abspath(run_dir)


def resume_remote_run_dir(run_dir: str, workdir: str, job_id: str) -> str:
    """The resumed job's remote run directory: the recorded one (its metrics.jsonl goes on), unless the
    job now runs in another workdir."""
    record = rundir.load_job(run_dir)
    if record.remote_run_dir and record.workdir == workdir:
        return record.remote_run_dir
    return rundir.remote_run_dir(workdir, run_dir, job_id)
