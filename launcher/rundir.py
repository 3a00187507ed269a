"""The run directory: where a job's plan, logs, summary and metrics live (layout fixed by design.md).

    RUN_DIR/job.yaml  hosts  logs/<role>.log  summary.json  metrics.jsonl  accuracy.png
"""
from __future__ import annotations

import datetime
import os
import secrets
from typing import Optional

import yaml

from mxlaunch.errors import UsageError
from mxlaunch.launcher import workload
from mxlaunch.launcher.plan import JobPlan, masked
from mxlaunch.launcher.render import render
from mxlaunch.launcher.target import JobTarget, ssh_target

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
    """A run directory holds one job: a used one is refused (unless resuming it)."""
    run_dir = os.path.abspath(run_dir)
    if os.path.exists(job_yaml(run_dir)):
        raise UsageError(f"run directory {run_dir} already holds a job (use a new --run-dir, or --resume it)")


def prepare(run_dir: str, resume: bool = False) -> str:
    """Create the run directory (absolute path returned). A used one is refused unless resuming."""
    run_dir = os.path.abspath(run_dir)
    if not resume:
        refuse_used(run_dir)
    try:
        os.makedirs(logs_dir(run_dir), exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create run directory {run_dir}: {exc.strerror}") from exc
    return run_dir


def render_plan(plan: JobPlan, workdir: str) -> str:
    """job.yaml text for a plan (secret-looking values masked)."""
    spec = plan.spec
    roles = [{"name": r.name, "kind": r.kind, "index": r.index, "host": r.host.address,
              "env": masked(r.env_dict())} for r in plan.roles]
    return render("job.yaml.j2", plan=plan, mode="local" if spec.local else "hosts", workdir=workdir,
                  hosts=[f"{h.target} slots={h.slots}" for h in spec.hosts],
                  user_env=masked(dict(spec.env)), user_env_worker=masked(dict(spec.env_worker)),
                  user_env_server=masked(dict(spec.env_server)), roles=roles)


def write_plan_files(plan: JobPlan, workdir: str) -> None:
    with open(job_yaml(plan.run_dir), "w", encoding="utf-8") as f:
        f.write(render_plan(plan, workdir))
    with open(os.path.join(plan.run_dir, "hosts"), "w", encoding="utf-8") as f:
        f.write(render("hosts.j2", hosts=plan.hosts_used()))


def load_job(run_dir: str) -> dict:
    """The job.yaml of a run, as data (for --resume)."""
    path = job_yaml(run_dir)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError as exc:
        raise UsageError(f"{run_dir} is not a run directory (no job.yaml)") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not data.get("command"):
        raise UsageError(f"{path} does not describe a job")
    return data


# ------------------------------------------------------------------------------------------------ resume

def newest_checkpoint(prefix: str) -> Optional[int]:
    """The highest N of PREFIX-NNNN.params (MXNet's checkpoint naming), or None."""
    import glob
    import re
    numbers = []
    for path in glob.glob(glob.escape(prefix) + "-*.params"):
        m = re.fullmatch(re.escape(prefix) + r"-(\d+)\.params", path)
        if m:
            numbers.append(int(m.group(1)))
    return max(numbers) if numbers else None


def resume_target(run_dir: str, python: Optional[str] = None, ssh=None) -> JobTarget:
    """Where RUN_DIR's job ran, from its job.yaml: on this machine, or over SSH on its hosts with this
    launch's --python and --ssh-* settings (`ssh`, an SSHOptions)."""
    from mxlaunch.launcher.hosts import parse_hostfile_text

    data = load_job(run_dir)
    hosts = parse_hostfile_text("\n".join(data.get("hosts") or ["127.0.0.1"]), name=job_yaml(run_dir))
    workdir = data.get("workdir") or os.getcwd()
    if data.get("mode") == "local":
        return JobTarget(hosts=hosts, local=True, workdir=workdir)
    return ssh_target(hosts, workdir, python, ssh)


def resume_spec(run_dir: str, extra_env=(), timeout: Optional[float] = None, target: Optional[JobTarget] = None):
    """(JobSpec, run_dir) to run RUN_DIR's job again on `target` (default: its own, resume_target) with
    `--load-epoch <newest checkpoint>`."""
    from mxlaunch.launcher.plan import MASK, JobSpec

    data = load_job(run_dir)
    target = target or resume_target(run_dir)
    command = [str(a) for a in data["command"]]
    workdir = target.workdir or os.getcwd()
    prefix = workload.model_prefix(command)
    if not prefix:
        raise UsageError(f"cannot resume {run_dir}: its command has no --model-prefix, so there are no checkpoints")
    epoch = newest_checkpoint(os.path.join(workdir, prefix))
    if epoch is None:
        raise UsageError(f"cannot resume {run_dir}: no checkpoint {prefix}-NNNN.params in {workdir}")
    extra = dict(extra_env)

    def env_of(key: str) -> tuple:
        pairs = []
        for k, v in (data.get(key) or {}).items():
            if k in extra:
                v = extra.pop(k)
            elif v == MASK:
                if k not in os.environ:
                    raise UsageError(f"cannot resume {run_dir}: job.yaml masks {k}; pass it again with --env {k}=...")
                v = os.environ[k]
            pairs.append((str(k), str(v)))
        return tuple(pairs)

    env, env_worker, env_server = env_of("env"), env_of("env_worker"), env_of("env_server")
    env += tuple(extra.items())
    num_workers = int(data["num_workers"])
    spec = JobSpec(command=workload.with_load_epoch(command, epoch), num_workers=num_workers,
                   num_servers=int(data["num_servers"]), hosts=target.job_hosts(num_workers), local=target.local,
                   env=env, env_worker=env_worker, env_server=env_server, workdir=workdir,
                   timeout=timeout if timeout is not None else data.get("timeout")).validate()
    return spec, os.path.abspath(run_dir)
