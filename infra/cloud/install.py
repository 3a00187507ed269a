"""`--wait ssh`: wait for SSH to answer on every instance (bounded, with a per-instance diagnosis), then
install mxlaunch with its `cpu` or `gpu` extra into ONE virtual environment on EFS (created on instance 0;
every other instance only verifies it), from PyPI, or with `--wheelhouse DIR` from those wheels alone
(uploaded to EFS, `pip install --no-index --find-links`). It ends by checking every instance: the venv's
python imports mxnet and mxlaunch, and with the `gpu` extra on a GPU type the GPU preflight of `launch train`
(infra/transport/gpu_check.py: nvidia-smi's GPUs and a real operation on every GPU through the venv).

The wheel of mxlaunch itself: one in the wheelhouse if it has one; else built from the running copy, with
`pip wheel` from a source checkout (editable install), or packed from the installed distribution's own files
(its RECORD) when there is no source tree.

One venv on EFS (not one per instance on local disk): one install, one place to look, nothing to keep in
step. Its cost is that every role start reads MXNet (and with `gpu` ~2.3 GB of CUDA libraries) over NFS;
venvs on each local disk, installed in parallel from the wheelhouse on EFS, would start faster. To be
measured in the cluster box (bytes read, time to first batch per role start) before choosing otherwise.

Everything goes through `ssh -F <cluster ssh_config>` (the file `launch cluster ssh` uses), so host keys land
in the cluster's own known_hosts. The subprocess runner is a parameter: tests check the commands without
ever connecting (moto's addresses are made up and must never be contacted).
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import shlex
import socket
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mxlaunch.errors import CommandError, UsageError
from mxlaunch.exits import Exit
from mxlaunch.infra.transport import gpu_check
from mxlaunch.infra.transport.remote import host_check, source
from mxlaunch.templates import render

from mxlaunch.infra.cloud import wait
from mxlaunch.infra.cloud.spec import EFS_ROOT, VENV

SSH_TIMEOUT = 600.0
READY_TIMEOUT = 900.0
INTERVAL = 10.0
CMD_TIMEOUT = 60.0
INSTALL_TIMEOUT = 1800.0
UPLOAD_TIMEOUT = 3600.0  # the gpu extra's wheelhouse is ~2 GB
WHEELS = f"{EFS_ROOT}/wheels"
EXTRAS = ("cpu", "gpu")
WHEEL_SUFFIXES = (".whl", ".tar.gz", ".zip")  # what pip --find-links takes
# the two extras hold different MXNet wheels, which must never share an environment
MXNET_OF = {"cpu": "mxnet", "gpu": "mxnet-cu112"}

# importing mxnet (from EFS: seconds), then nvidia-smi and the GPU operation, each bounded on the host too
GPU_CHECK_TIMEOUT = CMD_TIMEOUT + gpu_check.SMI_TIMEOUT + gpu_check.OP_TIMEOUT

Runner = Callable[..., subprocess.CompletedProcess]


class GpuCheckFailed(CommandError):
    """An instance cannot run GPU jobs (the same verdict `launch train`'s preflight would give)."""
    exit_code = Exit.PREFLIGHT


@dataclass(frozen=True)
class Install:
    """What `--wait ssh` installs: the extra, and the wheelhouse (None: PyPI)."""
    extra: str = "gpu"
    wheelhouse: Optional[Path] = None


def install_options(extra: Optional[str], wheelhouse: Optional[str], gpus_per_host: int) -> Install:
    """--extra (default: gpu on a GPU type) and --wheelhouse, checked before anything is created."""
    extra = extra or ("gpu" if gpus_per_host > 0 else "cpu")
    if extra not in EXTRAS:
        raise UsageError(f"--extra must be one of {', '.join(EXTRAS)}, got {extra!r}")
    if wheelhouse is None:
        return Install(extra)
    path = Path(wheelhouse).expanduser().resolve()
    if not path.is_dir() or not wheelhouse_files(path):
        raise UsageError(f"--wheelhouse {wheelhouse}: not a directory of wheels (make one with "
                         f"`pip download 'mxlaunch[{extra}]' -d DIR` for the instances' Python)")
    return Install(extra, path)


def wheelhouse_files(wheelhouse: Path) -> List[Path]:
    return sorted(p for p in wheelhouse.iterdir() if p.is_file() and p.name.endswith(WHEEL_SUFFIXES))


def source_root() -> Optional[Path]:
    """The checkout of the running copy (an editable or source install: pyproject.toml there), or None."""
    root = Path(__file__).resolve().parents[2]  # infra/cloud/install.py
    return root if (root / "pyproject.toml").exists() else None


def build_wheel(outdir: Path, run: Runner = subprocess.run) -> Path:
    """A wheel of the running mxlaunch: `pip wheel` of its source checkout, or packed from the installed files."""
    root = source_root()
    if root is None:
        return wheel_from_installed(outdir)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(outdir),
           str(root)]
    proc = run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise CommandError(f"building the mxlaunch wheel failed: {(proc.stderr or '').strip()[-300:]}")
    wheels = sorted(outdir.glob("mxlaunch-*.whl"))
    if not wheels:
        raise CommandError(f"building the mxlaunch wheel produced nothing in {outdir}")
    return wheels[-1]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_from_installed(outdir: Path) -> Path:
    """The installed mxlaunch distribution packed back into a wheel: every file its RECORD lists inside
    site-packages (the package, the .pth, the .dist-info with METADATA, WHEEL, entry_points.txt), no
    bytecode; console scripts come back from entry_points.txt when pip installs it."""
    try:
        dist = importlib.metadata.distribution("mxlaunch")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    files = [f for f in (dist.files or [])] if dist else []
    if not any(f.as_posix() == "mxlaunch/__init__.py" for f in files):
        raise CommandError("cannot make a wheel of the running mxlaunch (no source checkout, no installed "
                           "files): pass --wheelhouse DIR holding an mxlaunch wheel")
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    path = outdir / f"mxlaunch-{dist.version}-py3-none-any.whl"
    records, info_dir = [], None
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            name = f.as_posix()
            if name.startswith("../") or "__pycache__" in f.parts or name.endswith(".pyc"):
                continue  # scripts outside site-packages, bytecode
            if f.parts[0].endswith(".dist-info"):
                info_dir = f.parts[0]
                if f.name in skip:
                    continue
            data = Path(f.locate()).read_bytes()
            zf.writestr(name, data)
            records.append(f"{name},{_record_hash(data)},{len(data)}")
        records.append(f"{info_dir}/RECORD,,")
        zf.writestr(f"{info_dir}/RECORD", "\n".join(records) + "\n")
    return path


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

    def upload(self, alias: str, files: Sequence[Path], dest: str = WHEELS) -> List[str]:
        """Copy `files` into `dest` on `alias` (scp, over SFTP), skipping those already there with the same
        size and mtime (`scp -p` keeps it): a second `up` uploads nothing. Returns the names copied."""
        listing = self._ok(alias, f"mkdir -p {shlex.quote(dest)} && find {shlex.quote(dest)} -maxdepth 1 -type f "
                                  f"-printf '%f %s %T@\\n'")
        if listing.returncode != 0:
            raise CommandError(f"cannot create {dest} on {alias}: {_tail(listing)}")
        there: Dict[str, Tuple[int, int]] = {}
        for line in (listing.stdout or "").splitlines():
            name, size, mtime = (line.rsplit(" ", 2) + ["", ""])[:3]
            if size.isdigit():
                there[name] = (int(size), int(float(mtime or 0)))
        todo = [f for f in files if there.get(f.name) != (f.stat().st_size, int(f.stat().st_mtime))]
        if todo:
            self.echo(f"  uploading {len(todo)} file(s) to {alias}:{dest} ({len(files) - len(todo)} already there)")
            proc = self.run_cmd(["scp", "-F", str(self.ssh_config), "-p", "-q", *map(str, todo), f"{alias}:{dest}/"],
                                capture_output=True, text=True, timeout=UPLOAD_TIMEOUT)
            if proc.returncode != 0:
                raise CommandError(f"copying {len(todo)} file(s) to {alias}:{dest} failed: {_tail(proc)}")
        return [f.name for f in todo]

    def install(self, hosts: Sequence[tuple], wheel: Path, efs: bool, options: Install = Install()) -> None:
        """The venv with mxlaunch[extra]: made once on instance 0 when it lives on EFS (else on each),
        then proven usable on every instance."""
        files = [wheel] + ([f for f in wheelhouse_files(options.wheelhouse) if f.name != wheel.name]
                           if options.wheelhouse else [])
        script = render("cluster_install.sh.j2", venv=VENV, wheel=f"{WHEELS}/{wheel.name}", wheels=WHEELS, efs=efs,
                        extra=options.extra, offline=options.wheelhouse is not None,
                        conflicting=MXNET_OF["gpu" if options.extra == "cpu" else "cpu"])
        targets = hosts[:1] if efs else hosts  # one venv on EFS serves every host
        for alias, _ in targets:
            self.upload(alias, files)
            self.echo(f"  installing mxlaunch[{options.extra}] into {VENV} on {alias}"
                      + (f" from the wheelhouse {options.wheelhouse}" if options.wheelhouse else ""))
            proc = self._ok(alias, "bash", "-s", timeout=INSTALL_TIMEOUT, stdin=script)
            if proc.returncode != 0:
                raise CommandError(f"installing on {alias} failed (exit {proc.returncode}): "
                                   f"{' '.join((proc.stderr or proc.stdout or '').split())[-300:]}")
        self.verify(hosts)

    def verify(self, hosts: Sequence[tuple]) -> None:
        """Every instance's view of the venv imports mxnet and mxlaunch (all at once; each failure named)."""
        check = ["'import mxnet, mxlaunch.launcher, mxlaunch.trainer'"]
        with ThreadPoolExecutor(max_workers=min(len(hosts), 16)) as pool:
            found = list(pool.map(lambda host: (host[0], self._ok(host[0], f"{VENV}/bin/python", "-c", *check)),
                                  hosts))
        failed = [f"{alias}: {_tail(proc, 200)}" for alias, proc in found if proc.returncode != 0]
        if failed:
            raise CommandError(f"{len(failed)} of {len(hosts)} instance(s) cannot use {VENV}: " + "; ".join(failed))
        self.echo(f"  {VENV} imports mxnet and mxlaunch on {len(hosts)} instance(s)")

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


def _tail(proc, n: int = 300) -> str:
    return " ".join((proc.stderr or proc.stdout or "").split())[-n:] or f"exit {proc.returncode}"


def mxlaunch_wheel(wheelhouse: Optional[Path], outdir: Path, run: Runner = subprocess.run) -> Path:
    """The wheelhouse's mxlaunch wheel if it has one (installed as given), else one of the running copy."""
    if wheelhouse is not None:
        found = sorted(wheelhouse.glob("mxlaunch-*.whl"))
        if found:
            return found[-1]
    return build_wheel(outdir, run=run)


def wait_ssh_and_install(hosts: Sequence[tuple], ssh_config: Path, efs: bool, echo,
                         run: Runner = subprocess.run, diagnose=tcp_diagnosis, gpus_per_host: int = 0,
                         options: Optional[Install] = None) -> None:
    """`gpus_per_host` (the instance type's) > 0 with the gpu extra ends with the GPU check on every instance."""
    options = options or install_options(None, None, gpus_per_host)
    remote = Remote(ssh_config, echo, run=run, diagnose=diagnose)
    echo("waiting for SSH")
    remote.wait_for(hosts, ["true"], "SSH answering", SSH_TIMEOUT)
    remote.wait_for(hosts, ["test", "-f", "/var/lib/mxlaunch/ready"], "user data finished", READY_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="mxlaunch-wheel-") as tmp:
        remote.install(hosts, mxlaunch_wheel(options.wheelhouse, Path(tmp), run=run), efs, options)
    if gpus_per_host > 0 and options.extra == "gpu":
        remote.check_gpus(hosts, gpus_per_host)
    elif gpus_per_host > 0:
        echo(f"  --extra {options.extra}: no GPU check (this MXNet build does not use the GPUs)")
