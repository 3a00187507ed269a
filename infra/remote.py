"""`--wait ssh`: wait for SSH to answer on every instance (bounded, with a per-instance diagnosis), then
build a wheel of the running copy of mxlaunch and install it with the `gpu` extra into ONE virtual
environment on EFS, shared by every host; on a GPU type, end with the GPU preflight of `launch train` on
every instance (launcher/gpu_check.py: nvidia-smi's GPUs and a real operation on every GPU through the venv).

Everything goes through `ssh -F <cluster ssh_config>` (the file `launch cluster ssh` uses), so host keys land
in the cluster's own known_hosts. The subprocess runner is a parameter: tests check the commands without
ever connecting (moto's addresses are made up and must never be contacted).
"""
from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from mxlaunch.errors import CommandError
from mxlaunch.exits import Exit
from mxlaunch.launcher import gpu_check
from mxlaunch.launcher.remote import host_check, source
from mxlaunch.launcher.render import render

from mxlaunch.infra import wait
from mxlaunch.infra.spec import EFS_ROOT, VENV

SSH_TIMEOUT = 600.0
READY_TIMEOUT = 900.0
INTERVAL = 10.0
CMD_TIMEOUT = 60.0
INSTALL_TIMEOUT = 1800.0

# importing mxnet (from EFS: seconds), then nvidia-smi and the GPU operation, each bounded on the host too
GPU_CHECK_TIMEOUT = CMD_TIMEOUT + gpu_check.SMI_TIMEOUT + gpu_check.OP_TIMEOUT

Runner = Callable[..., subprocess.CompletedProcess]


class GpuCheckFailed(CommandError):
    """An instance cannot run GPU jobs (the same verdict `launch train`'s preflight would give)."""
    exit_code = Exit.PREFLIGHT


def source_root() -> Path:
    """The directory holding setup.py of the running copy (an editable or source install)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "setup.py").exists():
        raise CommandError(f"cannot build a wheel: the running mxlaunch ({root}) is not a source checkout; "
                           f"install with `pip install -e .` from the repository, or use --wait running")
    return root


def build_wheel(outdir: Path, run: Runner = subprocess.run) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(outdir),
           str(source_root())]
    proc = run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise CommandError(f"building the mxlaunch wheel failed: {(proc.stderr or '').strip()[-300:]}")
    wheels = sorted(outdir.glob("mxlaunch-*.whl"))
    if not wheels:
        raise CommandError(f"building the mxlaunch wheel produced nothing in {outdir}")
    return wheels[-1]


def tcp_diagnosis(address: Optional[str], port: int = 22, timeout: float = 5.0) -> str:
    if not address:
        return "no public address"
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return f"port {port} open: SSH answers but the login failed"
    except socket.timeout:
        return f"port {port} unreachable (timed out): is your address inside --ssh-cidr? still booting?"
    except ConnectionRefusedError:
        return f"port {port} refused: sshd not started yet"
    except OSError as exc:
        return f"port {port}: {exc}"


class Remote:
    def __init__(self, ssh_config: Path, echo: Callable[[str], None], run: Runner = subprocess.run,
                 diagnose: Callable[[Optional[str]], str] = tcp_diagnosis):
        self.ssh_config, self.echo, self.run_cmd, self.diagnose = ssh_config, echo, run, diagnose

    def ssh_argv(self, alias: str, *command: str) -> List[str]:
        return ["ssh", "-F", str(self.ssh_config), alias, *command]

    def _ok(self, alias: str, *command: str, timeout: float = CMD_TIMEOUT, stdin: Optional[str] = None):
        try:
            return self.run_cmd(self.ssh_argv(alias, *command), input=stdin, capture_output=True, text=True,
                                timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(self.ssh_argv(alias, *command), 255, "", "timed out")

    def wait_for(self, hosts: Sequence[tuple], command: Sequence[str], what: str, timeout: float) -> None:
        """Poll until `command` exits 0 on every host ((alias, public address) pairs); then a WaitTimeout
        that diagnoses each host that never answered."""
        pending = {alias: address for alias, address in hosts}
        last_err: dict = {}

        def attempt():
            for alias in list(pending):
                proc = self._ok(alias, *command)
                if proc.returncode == 0:
                    del pending[alias]
                else:
                    last_err[alias] = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            return len(pending)

        def show(left):
            self.echo(f"  {what}: {len(hosts) - left}/{len(hosts)}")
        try:
            wait.poll(attempt, lambda left: left == 0, timeout=timeout, interval=INTERVAL, what=what,
                      progress=show)
        except wait.WaitTimeout as exc:
            details = "; ".join(f"{alias}: {self.diagnose(addr)} (ssh: {last_err.get(alias, ['?'])[0]})"
                                for alias, addr in pending.items())
            raise wait.WaitTimeout(f"{exc.format_message()}: {details}") from exc

    def install(self, hosts: Sequence[tuple], wheel: Path, efs: bool) -> None:
        first = hosts[0][0]
        dest = f"{EFS_ROOT}/wheels/{wheel.name}"
        proc = self.run_cmd(["scp", "-F", str(self.ssh_config), str(wheel), f"{first}:{dest}"],
                            capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise CommandError(f"copying {wheel.name} to {first} failed: {(proc.stderr or '').strip()[-300:]}")
        script = render("cluster_install.sh.j2", venv=VENV, wheel=dest, efs=efs)
        targets = hosts[:1] if efs else hosts  # one venv on EFS serves every host
        for alias, _ in targets:
            if not efs and alias != first:
                self.run_cmd(["scp", "-F", str(self.ssh_config), str(wheel), f"{alias}:{dest}"],
                             capture_output=True, text=True, timeout=600)
            self.echo(f"  installing mxlaunch[gpu] into {VENV} on {alias}")
            proc = self._ok(alias, "bash", "-s", timeout=INSTALL_TIMEOUT, stdin=script)
            if proc.returncode != 0:
                raise CommandError(f"installing on {alias} failed (exit {proc.returncode}): "
                                   f"{' '.join((proc.stderr or proc.stdout or '').split())[-300:]}")
        for alias, _ in hosts:
            proc = self._ok(alias, f"{VENV}/bin/python", "-c", "'import mxlaunch.launcher, mxlaunch.trainer'")
            if proc.returncode != 0:
                raise CommandError(f"{alias} cannot use {VENV}: {(proc.stderr or '').strip()[-200:]}")

    def gpu_problems(self, alias: str, gpus: Sequence[int]) -> List[str]:
        """One instance's GPU preflight through the venv's interpreter: its problems ([] = it can run)."""
        python = f"{VENV}/bin/python"
        request = {"workdir": None, "files": [], "bind": [], "probe": None, "probe_timeout": 0, "full": True,
                   **gpu_check.request(gpus)}
        proc = self._ok(alias, python, "-c", shlex.quote(source("host_check")), timeout=GPU_CHECK_TIMEOUT,
                        stdin=json.dumps(request) + "\n")
        reply = host_check.parse_reply(proc.stdout or "")
        if reply is None:
            tail = " ".join((proc.stderr or "").split())[-200:] or f"exit {proc.returncode}"
            return [f"the GPU check did not answer ({tail})"]
        problems = [] if "mxnet" in reply else [f"{python} cannot import mxnet: {reply.get('mxnet_error')}"]
        return problems + gpu_check.judge(gpus, reply.get("gpu"), python)

    def check_gpus(self, hosts: Sequence[tuple], gpus_per_host: int) -> None:
        """Every instance at once; a GpuCheckFailed naming each failing instance and why."""
        gpus = tuple(range(gpus_per_host))
        self.echo(f"checking GPUs {','.join(map(str, gpus))} on {len(hosts)} instance(s)")
        with ThreadPoolExecutor(max_workers=min(len(hosts), 16)) as pool:
            found = list(pool.map(lambda host: (host[0], self.gpu_problems(host[0], gpus)), hosts))
        failed = [(alias, problems) for alias, problems in found if problems]
        if failed:
            raise GpuCheckFailed(f"GPU check failed on {len(failed)} of {len(hosts)} instance(s): "
                                 + "; ".join(f"{alias}: {' / '.join(problems)}" for alias, problems in failed))


def wait_ssh_and_install(hosts: Sequence[tuple], ssh_config: Path, efs: bool, echo,
                         run: Runner = subprocess.run, diagnose=tcp_diagnosis, gpus_per_host: int = 0) -> None:
    """`gpus_per_host` (the instance type's): > 0 ends with the GPU check on every instance."""
    remote = Remote(ssh_config, echo, run=run, diagnose=diagnose)
    echo("waiting for SSH")
    remote.wait_for(hosts, ["true"], "SSH answering", SSH_TIMEOUT)
    remote.wait_for(hosts, ["test", "-f", "/var/lib/mxlaunch/ready"], "user data finished", READY_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="mxlaunch-wheel-") as tmp:
        wheel = build_wheel(Path(tmp), run=run)
        remote.install(hosts, wheel, efs)
    if gpus_per_host > 0:
        remote.check_gpus(hosts, gpus_per_host)
