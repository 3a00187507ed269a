"""Preflight for SSH mode: prove, on every host in parallel, that the job can start, before any role does.

Per host: reachable and authenticated (infra/transport/ssh.py); the interpreter exists and imports mxnet, with
the same mxnet version everywhere; the workdir exists; every role's DMLC_NODE_HOST is an address of
that host; the training script and the data files named in the command exist (data: on every worker
host); the scheduler's port is reachable from every host (a short-lived listener on the scheduler's host
at the scheduler's address and port; every host connects to it, bounded). A GPU job (the workload's
`--gpus`, or a target with GPUs) also gets, on every worker host, nvidia-smi's GPUs and one real operation
on every requested `mx.gpu(i)`, judged by infra/transport/gpu_check.py (a GPUS column and its problems).
The programs that run on the hosts are infra/transport/remote/host_check.py and port_listener.py.

A failure is a per-host table on stderr and a `PreflightError` (exit 3), with nothing started anywhere.
"""
from __future__ import annotations

import json
import os
import select
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import click

from mxlaunch.errors import CommandError
from mxlaunch.exits import Exit
from mxlaunch.infra.transport import gpu_check
from mxlaunch.launcher.jobs import workload
from mxlaunch.infra.transport.hosts import Host, Placement
from mxlaunch.infra.transport.remote import host_check, port_listener, source
from mxlaunch.infra.transport.ssh import Connection, HostResults, parallel

CHECK_TIMEOUT = 60.0  # one host's checks (importing mxnet on a busy host takes seconds)
PROBE_TIMEOUT = 3.0  # connecting to the scheduler's port
LISTEN_READY_TIMEOUT = 15.0


class PreflightError(CommandError):
    exit_code = Exit.PREFLIGHT


@dataclass(frozen=True)
class Checks:
    """What to check, per host."""

    python: str
    workdir: Optional[str]
    scheduler: Host
    worker_hosts: Tuple[Host, ...]
    script_files: Tuple[str, ...]
    data_files: Tuple[str, ...]
    node_hosts: Tuple[Tuple[Host, Tuple[str, ...]], ...] = ()  # host -> DMLC_NODE_HOST values to verify
    gpus: Tuple[int, ...] = ()  # the GPU indices every worker uses on its host (none: a CPU job)

    @classmethod
    def from_spec(cls, spec, python: str, placement: Placement, gpus_per_host: int = 0) -> "Checks":
        """`gpus_per_host`: the target's (a GPU cluster); the workload's own --gpus wins."""
        nodes = {}
        for _, _, host in placement.roles():
            nodes.setdefault(host, host.address)
        # the roles run in --workdir, else in the launcher's own current directory (launch train's cwd)
        return cls(python=python, workdir=spec.workdir or os.getcwd(), scheduler=placement.scheduler,
                   worker_hosts=tuple(dict.fromkeys(placement.workers)),
                   script_files=workload.script_files(spec.command), data_files=workload.data_files(spec.command),
                   node_hosts=tuple((h, (a,)) for h, a in nodes.items()),
                   gpus=job_gpus(spec.command, gpus_per_host))

    def files_for(self, host: Host) -> Tuple[str, ...]:
        return self.script_files + (self.data_files if host in self.worker_hosts else ())

    def binds_for(self, host: Host, resolve: Callable[[str], str]) -> Tuple[str, ...]:
        return tuple(resolve(a) for h, addrs in self.node_hosts if h == host for a in addrs)

    def gpus_for(self, host: Host) -> Tuple[int, ...]:
        """Only workers use GPUs: the scheduler and servers run on the CPU."""
        return self.gpus if host in self.worker_hosts else ()

    @property
    def timeout(self) -> float:
        """One host's checks, at most."""
        return CHECK_TIMEOUT + gpu_check.check_timeout(self.gpus)


def job_gpus(command, gpus_per_host: int = 0) -> Tuple[int, ...]:
    """The GPUs a job uses on each host: its `--gpus`, else every GPU of the target's hosts, else none."""
    named = workload.gpus(command)
    return tuple(range(gpus_per_host)) if named is None else named


@dataclass
class HostCheck:
    host: Host
    roles: str = ""
    ssh: str = "-"
    python: str = "-"
    mxnet: str = "-"
    workdir: str = "-"
    files: str = "-"
    port: str = "-"
    gpus: Optional[str] = None  # None: no GPU check (a CPU job, or a host without workers)
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Report:
    rows: List[HostCheck]

    @property
    def failed(self) -> List[HostCheck]:
        return [r for r in self.rows if not r.ok]

    def table(self) -> str:
        gpu = any(r.gpus is not None for r in self.rows)  # the GPUS column only for a GPU job
        head = ("HOST", "ROLES", "SSH", "PYTHON", "MXNET", "WORKDIR", "FILES", "PORT") + (("GPUS",) if gpu else ())
        lines = [head + ("PROBLEM",)]
        for r in self.rows:
            first, *rest = r.problems or ["-"]
            cells = (r.host.target, r.roles or "-", r.ssh, r.python, r.mxnet, r.workdir, r.files, r.port)
            lines.append(cells + ((r.gpus or "-",) if gpu else ()) + (first,))
            lines.extend(("",) * len(head) + (more,) for more in rest)
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(line[:-1], widths)) + "  " + line[-1]
                         for line in lines) + "\n"

    def raise_if_failed(self, echo: Optional[Callable[..., None]] = None) -> None:
        if not self.failed:
            return
        if echo is None:
            echo = click.echo
        echo("preflight failed; nothing was started:\n" + self.table(), err=True, nl=False)
        first = self.failed[0]
        raise PreflightError(f"preflight failed on {len(self.failed)} of {len(self.rows)} host(s), nothing started: "
                             f"{first.host.target}: {first.problems[0]}"
                             + (" (and more, see the table above)" if len(self.failed) > 1 or len(first.problems) > 1
                                else ""))


def _interpreter_problem(python: str, rc: int, err: str, timeout: float = CHECK_TIMEOUT) -> str:
    if rc == 127:
        return f"interpreter {python} not found (pass --python, the same absolute path on every host)"
    if rc == 126:
        return f"interpreter {python} is not executable (pass --python)"
    if rc == -1:
        return f"checks did not finish within {timeout:g}s"
    tail = " ".join(err.strip().splitlines()[-1:]) or f"exit status {rc}"
    return f"interpreter {python} failed: {tail}"


class _Listener:
    """The scheduler's port held open on the scheduler's host while the others probe it."""

    def __init__(self, conn: Connection, python: str, address: str, port: int):
        self.channel = conn.open_channel([python, "-u", "-c", source("port_listener"), address, str(port)])
        self.error: Optional[str] = None
        deadline = time.monotonic() + LISTEN_READY_TIMEOUT
        buf = b""
        while b"\n" not in buf:
            if self.channel.recv_ready():
                buf += self.channel.recv(4096)
                continue
            if self.channel.exit_status_ready() and not self.channel.recv_ready():
                self.error = "could not run the port check"
                break
            if time.monotonic() >= deadline:
                self.error = f"port check listener did not start within {LISTEN_READY_TIMEOUT:g}s"
                break
            select.select([self.channel], [], [], 0.05)
        line = buf.decode(errors="replace").strip()
        if line.startswith(port_listener.FAILED):
            reason = line[len(port_listener.FAILED):].strip()
            self.error = f"cannot listen on {address}:{port} on the scheduler's host: {reason}"

    def close(self) -> None:
        try:
            self.channel.shutdown_write()
            self.channel.status_event.wait(5)  # the port is free again before the scheduler binds it
        finally:
            self.channel.close()


def _check_host(conn: Connection, row: HostCheck, checks: Checks, probe: Optional[Tuple[str, int]],
                resolve: Callable[[str], str], full: bool = True) -> dict:
    gpus = checks.gpus_for(row.host) if full else ()
    request = {"workdir": checks.workdir, "files": list(checks.files_for(row.host)) if full else [],
               "bind": list(checks.binds_for(row.host, resolve)) if full else [],
               "probe": list(probe) if probe else None, "probe_timeout": PROBE_TIMEOUT, "full": full,
               **gpu_check.request(gpus)}
    rc, out, err = conn.run([checks.python, "-c", source("host_check")], timeout=checks.timeout,
                            stdin=(json.dumps(request) + "\n").encode())
    result = host_check.parse_reply(out)
    if result is None:
        row.python = "FAIL"
        row.problems.append(_interpreter_problem(checks.python, rc, err, checks.timeout))
        return {}
    row.python = result["python"]
    if "mxnet" in result:
        row.mxnet = result["mxnet"]
    elif full:
        row.mxnet = "FAIL"
        row.problems.append(f"{checks.python} cannot import mxnet: {result.get('mxnet_error')}")
    row.workdir = "ok" if result["workdir"] else "FAIL"
    if not result["workdir"]:
        row.problems.append(f"workdir {checks.workdir} does not exist (pass --workdir DIR, a directory on every host)")
    missing = result["missing"]
    if request["files"]:
        row.files = "ok" if not missing else "FAIL"
    for path in missing:
        row.problems.append(f"file {path} not found" + (f" (in {checks.workdir})" if checks.workdir and not
                                                         os.path.isabs(path) else ""))
    for bad in result["bind"]:
        row.problems.append(f"DMLC_NODE_HOST {bad} is not an address of this host")
    if probe:
        row.port = "ok" if result.get("probe") == "ok" else "FAIL"
        if result.get("probe") != "ok":
            row.problems.append(f"cannot reach the scheduler at {probe[0]}:{probe[1]}: {result.get('probe')}")
    if gpus:
        row.gpus = gpu_check.column(result.get("gpu"))
        row.problems.extend(gpu_check.judge(gpus, result.get("gpu"), checks.python))
    return result


def run(connections: HostResults, checks: Checks, plan=None,
        port: Optional[Tuple[str, int]] = None, full: bool = True) -> Report:
    """Every check on every host, in parallel. `plan` (or `port` = (address, port)) adds the port check;
    `full=False` runs only the port check."""
    rows: Dict[Host, HostCheck] = {h: HostCheck(h) for h in connections}
    if plan is not None:
        for role in plan.roles:
            if role.host in rows:
                rows[role.host].roles = ",".join(filter(None, [rows[role.host].roles, role.name]))
        env = plan.scheduler.env_dict()
        port = (env.get("DMLC_PS_ROOT_URI", plan.scheduler.host.address), int(plan.port))
    ips = {h.address: c.ip for h, c in connections.succeeded.items()}

    def resolve(address: str) -> str:
        return ips.get(address, address)

    for host, result in connections.items():
        row = rows[host]
        row.ssh = "ok" if host in connections.succeeded else "FAIL"
        if host not in connections.succeeded:
            row.problems.append(connections.message(host))
    listener = None
    probe = None
    sched_conn = connections.succeeded.get(checks.scheduler)
    if port and sched_conn is not None:
        probe = (resolve(port[0]), port[1])
        try:
            listener = _Listener(sched_conn, checks.python, probe[0], probe[1])
        except Exception as exc:
            rows[checks.scheduler].problems.append(f"port check: {exc}")
            probe = None
        else:
            if listener.error:
                # the interpreter problem (if that is the cause) is reported by the host's own checks
                rows[checks.scheduler].port = "FAIL"
                if "could not run" not in listener.error:
                    rows[checks.scheduler].problems.append(listener.error)
                listener.close()
                listener, probe = None, None
    try:
        live = connections.succeeded
        outcomes = parallel(lambda h: _check_host(live[h], rows[h], checks, probe, resolve, full), live,
                            timeout=checks.timeout + 10, name="preflight")
        for host, outcome in outcomes.items():
            if isinstance(outcome, BaseException):
                rows[host].problems.append(f"checks failed: {type(outcome).__name__}: {outcome}")
    finally:
        if listener is not None:
            listener.close()
    versions = {r.mxnet for r in rows.values() if r.mxnet not in ("-", "FAIL")}
    if len(versions) > 1:
        majority = max(versions, key=lambda v: sum(r.mxnet == v for r in rows.values()))
        for r in rows.values():
            if r.mxnet in versions and r.mxnet != majority:
                r.problems.append(f"mxnet {r.mxnet} here, {majority} on the other hosts: use one version everywhere")
    return Report([rows[h] for h in connections])


def check_port(connections: Dict[Host, Connection], checks: Checks, scheduler_role) -> Report:
    """Only the port check (used when the plan was not known at preflight time)."""
    env = scheduler_role.env_dict()
    results = HostResults(connections)
    return run(results, checks, port=(env["DMLC_PS_ROOT_URI"], int(env["DMLC_PS_ROOT_PORT"])), full=False)
