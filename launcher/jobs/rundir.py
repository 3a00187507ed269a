"""The run directory: where a job's plan, logs, summary and metrics live (layout fixed by design.md).

    RUN_DIR/job.yaml  hosts  logs/<role>.log  summary.json  metrics.jsonl  accuracy.png

In SSH mode roles never see RUN_DIR (it is on the launcher's machine): they write under
WORKDIR/runs/<id> on their own hosts (`remote_run_dir`, recorded in job.yaml), and the runner fetches
metrics.jsonl back. `--resume` reads job.yaml back: the command, and where the job ran (`target`).
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import posixpath
import secrets
from typing import Optional

import yaml

from mxlaunch.errors import UsageError
from mxlaunch.launcher.jobs import checkpoints, workload
from mxlaunch.launcher.jobs.plan import JobPlan, masked
from mxlaunch.templates import render
from mxlaunch.infra.transport.target import JobTarget, ssh_target
from mxlaunch.files import open_new

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
    """job.yaml text for a plan (secret-looking values masked); with `target`, where the job ran (for
    --resume: hosts, interpreter, workdir, SSH settings, cluster)."""
    spec = plan.spec
    roles = [{"name": r.name, "kind": r.kind, "index": r.index, "host": r.host.address,
              "env": masked(r.env_dict())} for r in plan.roles]
    return render("job.yaml.j2", plan=plan, mode="local" if spec.local else "hosts", workdir=workdir,
                  hosts=[f"{h.target} slots={h.slots}" for h in spec.hosts],
                  user_env=masked(dict(spec.env)), user_env_worker=masked(dict(spec.env_worker)),
                  user_env_server=masked(dict(spec.env_server)), roles=roles,
                  target=target.record() if target is not None else None)


def write_plan_files(plan: JobPlan, workdir: str, target: Optional[JobTarget] = None) -> None:
    with open_new(job_yaml(plan.run_dir)) as f:
        f.write(render_plan(plan, workdir, target))
    with open_new(os.path.join(plan.run_dir, "hosts")) as f:
        f.write(render("hosts.j2", hosts=plan.hosts_used()))


def load_job(run_dir: str) -> dict:
    """The job.yaml of a run, as data (for --resume), checked: a damaged one is one error, never a guess
    (a missing `mode:` must not make a local job an SSH one)."""
    path = job_yaml(run_dir)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError as exc:
        raise UsageError(f"{run_dir} is not a run directory (no job.yaml)") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    problem = _job_problem(data)
    if problem:
        raise UsageError(f"{path} is damaged ({problem}): it does not describe a job that can be resumed")
    return data


def _job_problem(data) -> Optional[str]:
    """What is wrong with job.yaml's data, or None."""
    def text_or_none(value) -> bool:
        return value is None or isinstance(value, str)

    def count(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if not isinstance(data, dict):
        return "not a mapping"
    command = data.get("command")
    if not (isinstance(command, list) and command and all(isinstance(a, (str, int, float)) for a in command)):
        return "command: expected a list of arguments"
    if data.get("mode") not in ("local", "hosts"):
        return f"mode: expected local or hosts, got {data.get('mode')!r}"
    for key in ("num_workers", "num_servers"):
        if not count(data.get(key)):
            return f"{key}: expected a whole number >= 1, got {data.get(key)!r}"
    hosts = data.get("hosts")
    if hosts is not None and not (isinstance(hosts, list) and all(isinstance(h, str) for h in hosts)):
        return "hosts: expected a list of hostfile lines"
    for key in ("env", "env_worker", "env_server"):
        env = data.get(key)
        if env is not None and not (isinstance(env, dict) and all(isinstance(k, str) for k in env)
                                    and all(isinstance(v, (str, int, float)) for v in env.values())):
            return f"{key}: expected a mapping of names to values"
    timeout = data.get("timeout")
    if timeout is not None and not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
                                    and math.isfinite(timeout) and timeout > 0):
        return f"timeout: expected a positive number of seconds, got {timeout!r}"
    for key in ("job_id", "workdir", "remote_run_dir"):
        if not text_or_none(data.get(key)):
            return f"{key}: expected text"
    target = data.get("target")
    if target is not None:
        if not isinstance(target, dict):
            return "target: expected a mapping"
        if not all(text_or_none(target.get(k)) for k in ("python", "cluster", "workdir")):
            return "target: python, cluster and workdir must be text"
        ssh = target.get("ssh")
        if ssh is not None and not (isinstance(ssh, dict)
                                    and all(text_or_none(ssh.get(k)) for k in ("user", "key", "known_hosts", "config"))):
            return "target.ssh: expected a mapping of SSH settings"
        if not (target.get("gpus_per_host") is None or count(target.get("gpus_per_host"))
                or target.get("gpus_per_host") == 0):
            return "target.gpus_per_host: expected a whole number"
    return None


# ------------------------------------------------------------------------------------------------ resume

def _recorded_ssh(recorded: dict, given):
    """This launch's --ssh-* flags over the ones job.yaml recorded (None: no SSH settings recorded)."""
    from mxlaunch.infra.transport.ssh import SSHOptions

    given = given or SSHOptions()
    if not recorded:
        return given
    return dataclasses.replace(given, key=given.key or recorded.get("key"), user=given.user or recorded.get("user"),
                               known_hosts=given.known_hosts or recorded.get("known_hosts"),
                               accept_new=given.accept_new or bool(recorded.get("accept_new")),
                               config_path=recorded.get("config", given.config_path))


def recorded_target(run_dir: str) -> dict:
    """job.yaml's record of where the job ran ({} for a job.yaml written before it was recorded)."""
    return load_job(run_dir).get("target") or {}


def resume_target(run_dir: str, python: Optional[str] = None, ssh=None, workdir: Optional[str] = None,
                  hosts: Optional[str] = None) -> JobTarget:
    """Where RUN_DIR's job ran, from its job.yaml: on this machine, or over SSH on its hosts with its
    interpreter, workdir and SSH settings, each overridden by this launch's --python, --workdir, --ssh-*.
    (A cluster's job re-resolves the cluster: launch train does that, the CLI being where infra is met.)
    `hosts` (--hosts FILE|h1,h2): a --hosts job on other hosts (_moved_hosts)."""
    from mxlaunch.infra.transport.hosts import parse_hostfile_text

    data = load_job(run_dir)
    recorded = data.get("target") or {}
    hosts = parse_hostfile_text("\n".join(data.get("hosts") or ["127.0.0.1"]), name=job_yaml(run_dir)) \
        if hosts is None else _moved_hosts(run_dir, data, hosts)
    workdir = workdir or data.get("workdir") or os.getcwd()
    if data.get("mode") == "local":
        return JobTarget(hosts=hosts, local=True, workdir=workdir)
    return ssh_target(hosts, workdir, python or recorded.get("python"), _recorded_ssh(recorded.get("ssh"), ssh),
                      gpus_per_host=int(recorded.get("gpus_per_host") or 0))


def _moved_hosts(run_dir: str, data: dict, text: str) -> tuple:
    """--resume RUN_DIR --hosts FILE|h1,h2: the job of a --hosts run on other hosts (a detached run's after
    `launch cluster repair`: its instances' addresses changed). Only a --hosts job (a local one has no hosts, a
    cluster's resolves its cluster again), and with as many worker slots as it had: the job's shape (workers,
    servers, ranks per host) is job.yaml's, only where it runs moves."""
    from mxlaunch.infra.transport.hosts import parse_hostfile_text, parse_hosts

    if data.get("mode") != "hosts" or (data.get("target") or {}).get("cluster"):
        ran = "on this machine (--local)" if data.get("mode") != "hosts" else \
            f"on cluster {data['target']['cluster']}, which --resume resolves again by itself"
        raise UsageError(f"--resume {run_dir} --hosts: its job ran {ran}; --hosts moves only a --hosts job")
    hosts = parse_hosts(text)
    recorded = parse_hostfile_text("\n".join(data.get("hosts") or []), name=job_yaml(run_dir))
    had, has = sum(h.slots for h in recorded), sum(h.slots for h in hosts)
    if has != had:
        raise UsageError(f"--resume {run_dir} --hosts: its job ran on {had} worker slot{'s' if had != 1 else ''}, "
                         f"these hosts offer {has}: give hosts with as many (slots=N in a hostfile)")
    return hosts


def _newest_everywhere(run_dir: str, target: JobTarget, spec, prefix: str,
                       remote=checkpoints.remote_points) -> "checkpoints.Checkpoint":
    point, found = checkpoints.newest_everywhere(target, spec, prefix, remote)
    if point is not None:
        return point
    if target.local:
        raise UsageError(f"cannot resume {run_dir}: no whole checkpoint {prefix}-NNNN.params (with "
                         f"{prefix}-symbol.json) in {spec.workdir}")
    where = posixpath.join(spec.workdir, prefix)
    seen = "; ".join(f"{h.target}: {', '.join(_short(c) for c in sorted(e)) or 'none'}" for h, e in found.items())
    raise UsageError(f"cannot resume {run_dir}: no checkpoint {where}-NNNN.params that every worker host has "
                     f"(epochs per host: {seen}); the workers must all see it, e.g. on EFS")


def _short(point: "checkpoints.Checkpoint") -> str:
    return str(point)  # Checkpoint's own wording ("epoch E batch B"): one way to say a position


def with_num_epochs(command, num_epochs: Optional[int]) -> tuple:
    """The command training to `num_epochs` (its --num-epochs, or the alias --num-epoch, replaced)."""
    command = tuple(command)
    if num_epochs is None:
        return command
    if num_epochs < 1:
        raise UsageError(f"--num-epochs must be at least 1, got {num_epochs}")
    return workload.without_option(workload.without_option(command, "--num-epoch"), "--num-epochs") + (
        "--num-epochs", str(num_epochs))


def _refuse_nothing_to_train(run_dir: str, point: "checkpoints.Checkpoint", num_epochs: Optional[int],
                             command) -> None:
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


def resume_spec(run_dir: str, extra_env=(), timeout: Optional[float] = None, target: Optional[JobTarget] = None,
                num_epochs: Optional[int] = None, remote_checkpoints=checkpoints.remote_points,
                watch_spot: Optional[bool] = None):
    """(JobSpec, run_dir) to run RUN_DIR's job again on `target` (default: its own, resume_target) with
    `--load-epoch <newest checkpoint every worker has>` (`--load-batch B` too for a mid-epoch one; and
    `--num-epochs N` when given: more than that checkpoint's epoch). `remote_checkpoints(target, hosts,
    prefix)`: how a remote job's checkpoints are listed (SSH). `watch_spot`: None keeps job.yaml's (a job.yaml
    without it: on for a cluster's job)."""
    from mxlaunch.launcher.jobs.plan import MASK, JobSpec

    data = load_job(run_dir)
    target = target or resume_target(run_dir)
    command = [str(a) for a in data["command"]]
    workdir = target.workdir or os.getcwd()
    prefix = workload.model_prefix(command)
    if not prefix:
        raise UsageError(f"cannot resume {run_dir}: its command has no --model-prefix, so there are no checkpoints")
    extra = dict(extra_env)

    def env_of(key: str) -> tuple:
        pairs = []
        for k, v in (data.get(key) or {}).items():
            if k in extra:
                v = extra.pop(k)
            elif MASK in str(v):  # masked whole, or a URL's password
                if k not in os.environ:
                    raise UsageError(f"cannot resume {run_dir}: job.yaml masks {k}; export it and pass "
                                     f"--env {k} (or --env-file FILE)")
                v = os.environ[k]
            pairs.append((str(k), str(v)))
        return tuple(pairs)

    env, env_worker, env_server = env_of("env"), env_of("env_worker"), env_of("env_server")
    env += tuple(extra.items())
    num_workers = int(data["num_workers"])
    spec = JobSpec(command=with_num_epochs(command, num_epochs), num_workers=num_workers,
                   num_servers=int(data["num_servers"]), hosts=target.job_hosts(num_workers), local=target.local,
                   env=env, env_worker=env_worker, env_server=env_server, workdir=workdir,
                   timeout=timeout if timeout is not None else data.get("timeout"),
                   watch_spot=recorded_watch_spot(data) if watch_spot is None else watch_spot).validate()
    point = _newest_everywhere(run_dir, target, spec, prefix, remote_checkpoints)
    _refuse_nothing_to_train(run_dir, point, num_epochs, command)
    spec = dataclasses.replace(spec, command=workload.with_load_epoch(spec.command, point.epoch, point.batch))
    return spec, os.path.abspath(run_dir)


def recorded_watch_spot(data: dict) -> bool:
    """job.yaml's `watch_spot`; where it is not recorded, the default of where the job ran (on for --cluster)."""
    recorded = data.get("watch_spot")
    if isinstance(recorded, bool):
        return recorded
    return bool((data.get("target") or {}).get("cluster"))


def resume_remote_run_dir(run_dir: str, workdir: str, job_id: str) -> str:
    """The resumed job's remote run directory: the recorded one (its metrics.jsonl goes on), unless the
    job now runs in another workdir."""
    data = load_job(run_dir)
    recorded = data.get("remote_run_dir")
    if recorded and data.get("workdir") == workdir:
        return recorded
    return remote_run_dir(workdir, run_dir, job_id)
