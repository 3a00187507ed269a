"""The job plan: pure data from pure functions (no processes, no files, no clock).

`JobSpec` is what the user asked for (from the command line, or from a run's job.yaml on --resume);
`plan_job` turns it into a `JobPlan`: one `Role` per process (scheduler, servers, workers), each with
its host and its complete environment. Local and SSH modes share this code; only the hosts differ.
"""
from __future__ import annotations

import dataclasses
import posixpath
import re
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

from mxlaunch.errors import UsageError
from mxlaunch.launcher.jobs import workload
from mxlaunch.infra.transport.hosts import Host, place
from mxlaunch.infra.transport.roles import MARKER_KEY, Env, Role, RoleId

# Set by the launcher for every role; a user value would break the job, so it is refused.
RESERVED_KEYS = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER",
                 "DMLC_NUM_WORKER", "DMLC_NODE_HOST", "PORT")
RESERVED_PREFIX = "LAUNCH_"
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASS|PWD|CREDENTIAL|PRIVATE|APIKEY|(^|_)KEY($|_)|AUTH", re.IGNORECASE)
MASK = "***"
# user:password@host in any value (a database or proxy URL): the password is masked, the rest kept
URL_PASSWORD = re.compile(r"(?P<head>(?:[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*|[^\s/:@]+):)[^\s/]+(?=@[^\s@/]+)")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # fullmatch: `$` would let a trailing newline through


def parse_env_pair(text: str, option: str = "--env") -> Tuple[str, str]:
    """'KEY=VALUE' -> (KEY, VALUE); the value is kept byte for byte (it may hold '=', spaces, ...)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"{option} {text!r}: expected KEY=VALUE")
    check_env_key(key, option)
    return key, value


def check_env_key(key: str, option: str = "--env") -> str:
    """A name a role's environment may take. Errors show the name only: the value may be a secret."""
    if not ENV_KEY.fullmatch(key):
        raise UsageError(f"{option}: {key!r} is not a valid environment variable name "
                         f"(letters, digits and '_', not starting with a digit)")
    if key in RESERVED_KEYS or key.startswith(RESERVED_PREFIX):
        raise UsageError(f"{option} {key}: set by the launcher for every role, it cannot be overridden")
    return key


def is_secret(key: str) -> bool:
    return bool(SECRET_NAME.search(key))


def mask_value(value: str) -> str:
    """A value with the passwords of URLs in it masked (scheme://user:***@host)."""
    return URL_PASSWORD.sub(lambda m: m.group("head") + MASK, value)


def masked(env: Mapping[str, str]) -> Dict[str, str]:
    """The environment as it may be written to a file or screen: the values of secret-looking names masked,
    and passwords in URLs in any other value."""
    return {k: (MASK if is_secret(k) else mask_value(v)) for k, v in env.items()}


@dataclass(frozen=True)
class JobSpec:
    """What the user asked for. `hosts` is (Host.loopback(),) in local mode."""

    command: Tuple[str, ...]
    num_workers: int
    num_servers: int
    hosts: Tuple[Host, ...]
    local: bool = True
    env: Env = ()
    env_worker: Env = ()
    env_server: Env = ()
    workdir: Optional[str] = None  # where roles run; None = the launcher's cwd (local mode)
    timeout: Optional[float] = None
    watch_spot: bool = False  # each host's spot interruption notice is watched (launch train --watch-spot)

    def validate(self) -> "JobSpec":
        if not self.command:
            raise UsageError("missing command: put it after '--', e.g. launch train --local -n 2 -- python train.py")
        if self.num_workers < 1:
            raise UsageError(f"-n/--num-workers must be at least 1, got {self.num_workers}")
        if self.num_servers < 1:
            raise UsageError(f"-s/--num-servers must be at least 1 (a dist_sync job needs a server), "
                             f"got {self.num_servers}")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError(f"--timeout must be positive, got {self.timeout:g}")
        workload.check_kv_store(self.command, self.num_workers)
        return self


@dataclass(frozen=True)
class JobPlan:
    spec: JobSpec
    job_id: str
    run_dir: str  # the launcher's own, on this machine: job.yaml, logs, summary
    port: int
    roles: Tuple[Role, ...]  # start order: scheduler, servers, workers
    remote_run_dir: Optional[str] = None  # SSH mode: where roles write on their hosts (WORKDIR/runs/<id>)

    @property
    def scheduler(self) -> Role:
        return self.roles[0]

    @property
    def workers(self) -> Tuple[Role, ...]:
        return tuple(r for r in self.roles if r.kind == "worker")

    def role(self, name: str) -> Role:
        return next(r for r in self.roles if r.name == name)

    def spot_watchers(self) -> Tuple[str, ...]:
        """The roles whose guards watch for spot notices: the first planned on each host (one poller per
        host), none unless the job watches."""
        if not self.spec.watch_spot:
            return ()
        firsts: Dict[Host, str] = {}
        for role in self.roles:
            firsts.setdefault(role.host, role.name)
        return tuple(firsts.values())

    def hosts_used(self) -> Tuple[Host, ...]:
        seen = []
        for role in self.roles:
            if role.host not in seen:
                seen.append(role.host)
        return tuple(seen)


def cpu_contexts(command) -> int:
    """How many CPU contexts a trainer worker drives (`trainer fit --cpus N`: N engine pools), else 1."""
    return workload.cpus(command) or 1


def _thread_defaults(kind: str, workers_on_host: int, local_cpus: Optional[int], contexts: int = 1) -> Dict[str, str]:
    # Scheduler and servers mostly wait on the network; several MXNet processes on one machine
    # oversubscribe its cores unless each is told how many OpenMP threads it may use (a worker with
    # `--cpus N` runs N pools of them).
    if kind != "worker":
        return {"OMP_NUM_THREADS": "1"}
    if local_cpus:  # only known for the launching machine
        return {"OMP_NUM_THREADS": str(max(1, local_cpus // (max(1, workers_on_host) * contexts)))}
    return {}


def role_env(kind: str, host: Host, scheduler: Host, port: int, spec: JobSpec, job_id: str,
             run_dir: str, name: str, workers_on_host: int, local_cpus: Optional[int],
             node_port: Optional[int] = None) -> Env:
    """A role's environment: thread defaults < --env < --env-worker/--env-server < the launcher's own.
    `run_dir` is LAUNCH_RUN_DIR: a path on the role's own host (never the launcher's, in SSH mode)."""
    env: Dict[str, str] = _thread_defaults(kind, workers_on_host, local_cpus, cpu_contexts(spec.command))
    # PS_VERBOSE=1 adds a few start/stop lines per role, and they are how the launcher knows what
    # ps-lite does not otherwise tell: the scheduler's "Bind to role=scheduler ... port=P" (the port is
    # ours before any worker connects to it) and each node's "W[id] is connected" (its MXNet rank).
    env["PS_VERBOSE"] = "1"
    env.update(spec.env)
    env.update({"worker": spec.env_worker, "server": spec.env_server}.get(kind, ()))
    verbose = env["PS_VERBOSE"].strip()
    if kind == "scheduler" and not (verbose.isdigit() and int(verbose) >= 1):
        env["PS_VERBOSE"] = "1"  # without its bind line the other roles would wait for the ready timeout
    env.update({
        "DMLC_ROLE": kind,
        "DMLC_PS_ROOT_URI": scheduler.address,
        "DMLC_PS_ROOT_PORT": str(port),
        "DMLC_NUM_SERVER": str(spec.num_servers),
        "DMLC_NUM_WORKER": str(spec.num_workers),
        "DMLC_NODE_HOST": host.address,
        "LAUNCH_RUN_DIR": run_dir,
        MARKER_KEY: job_id,
        "LAUNCH_ROLE": name,
    })
    if node_port is not None:  # ps-lite binds it: with the host, it decides the node's rank (rank_order)
        env["PORT"] = str(node_port)
    return tuple(env.items())


def rank_order(workers: Tuple[Host, ...]) -> Tuple[Host, ...]:
    """Workers in MXNet rank order. ps-lite's scheduler sorts nodes by DMLC_NODE_HOST as a string,
    descending, then by port ascending, and hands out ranks in that order (src/van.cc of the ps-lite MXNet
    1.9.1 bundles). Numbering workers this way, with ports ascending by index on each host, makes
    worker-i the worker of rank i on any host layout. Stable: one host keeps its hostfile order."""
    return tuple(sorted(workers, key=lambda h: h.address.encode("utf-8"), reverse=True))


def node_ports(port: int, count: int) -> Tuple[int, ...]:
    """`PORT` of each server and worker, in plan order: the block right after the scheduler's port
    (right before it when that would pass 65535), ascending by index as rank_order needs."""
    first = port + 1 if port + count <= 65535 else port - count
    return tuple(range(first, first + count))


def plan_job(spec: JobSpec, job_id: str, run_dir: str, port: int, local_cpus: Optional[int] = None,
             remote_run_dir: Optional[str] = None) -> JobPlan:
    """Pure: the same inputs always give the same plan. In SSH mode roles get `remote_run_dir` (a path on
    their hosts, under the workdir) as LAUNCH_RUN_DIR: the launcher's `run_dir` exists only on this machine."""
    role_run_dir = run_dir if spec.local or not remote_run_dir else remote_run_dir
    if role_run_dir is remote_run_dir and not posixpath.isabs(remote_run_dir) and spec.workdir:
        role_run_dir = posixpath.relpath(remote_run_dir, spec.workdir)  # roles run in a relative workdir
    spec.validate()
    placement = place(spec.hosts, spec.num_workers, spec.num_servers)
    placement = dataclasses.replace(placement, workers=rank_order(placement.workers))
    workers_per_host: Dict[Host, int] = {}
    for host in placement.workers:
        workers_per_host[host] = workers_per_host.get(host, 0) + 1
    roles = []
    placed = placement.roles()
    ports = (None,) + node_ports(port, len(placed) - 1)  # the scheduler binds DMLC_PS_ROOT_PORT
    for (kind, index, host), node_port in zip(placed, ports):
        env = role_env(kind, host, placement.scheduler, port, spec, job_id, role_run_dir, RoleId(kind, index).name,
                       workers_per_host.get(host, 0), local_cpus if spec.local else None, node_port)
        roles.append(Role(kind=kind, index=index, host=host, env=env))
    return JobPlan(spec=spec, job_id=job_id, run_dir=run_dir, port=port, roles=tuple(roles),
                   remote_run_dir=None if spec.local else remote_run_dir)
