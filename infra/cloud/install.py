"""`--wait ssh`: wait for SSH to answer on every instance (bounded, with a per-instance diagnosis), then for its
user data to write its ready marker (a failed marker ends the wait at once; either way out names the step and
the tail of the user data's log, read over SSH), then install mxlaunch with its `cpu` or `gpu` extra into ONE
virtual environment on EFS (created on instance 0; every other instance only verifies it), from PyPI, or with
`--wheelhouse DIR` from those wheels alone (uploaded to EFS, `pip install --no-index --find-links`). It ends by checking every instance: the venv's
python imports mxnet and mxlaunch, and with the `gpu` extra on a GPU type the GPU preflight of `launch train`
(infra/transport/gpu_check.py: nvidia-smi's GPUs and a real operation on every GPU through the venv).

The wheel of mxlaunch itself: one in the wheelhouse if it has one; else built from the running copy, with
`pip wheel` from a source checkout (editable install), or packed from the installed distribution's own files
(its RECORD) when there is no source tree.

One venv on EFS (not one per instance on local disk): one install, one place to look, nothing to keep in
step. Its cost is that every role start reads MXNet (and with `gpu` ~2.3 GB of CUDA libraries) over NFS;
venvs on each local disk, installed in parallel from the wheelhouse on EFS, would start faster. To be
measured in the cluster box (bytes read, time to first batch per role start) before choosing otherwise.

Everything goes over the one SSH transport (infra/transport: a connection per instance, kept across the
steps; files over SFTP), with the cluster's ssh config, key, user and known_hosts as `launch train --cluster`
uses them: a host key seen for the first time is recorded in the cluster's known_hosts, a changed one refused.
The connector is a parameter (and `CONNECT` where none is passed): tests use a fake one and never connect
(moto's addresses are made up and must never be contacted). Bounds: infra/transport/timeouts.py.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from mxlaunch.errors import CommandError, UsageError
from mxlaunch.exits import Exit
from mxlaunch.infra.transport import gpu_check, timeouts
from mxlaunch.infra.transport import upload as transfer
from mxlaunch.infra.transport.group import Connector, Group, Outcome
from mxlaunch.infra.transport.hosts import Host
from mxlaunch.infra.transport.remote import host_check, source
from mxlaunch.infra.transport.ssh import SSHConnectError
from mxlaunch.infra.transport.ssh_options import HOST_KEY, LOGIN, REFUSED, UNREACHABLE, SSHOptions
from mxlaunch.templates import render

from mxlaunch.infra.cloud import wait
from mxlaunch.infra.cloud.spec import EFS_ROOT, VENV
from mxlaunch.infra.cloud.userdata import FAILED, LOG, READY

# How far a host's user data is: exit 0 ready; FAILED_STATUS failed (the marker, "STEP: why", on stdout); else
# still running.
FAILED_STATUS = 3
USER_DATA_STATE = f"if [ -f {FAILED} ]; then cat {FAILED}; exit {FAILED_STATUS}; fi; test -f {READY}"
LOG_LINES = 12  # of the user data's log, in the error of a host whose user data failed or never finished
WHEELS = f"{EFS_ROOT}/wheels"
EXTRAS = ("cpu", "gpu")
WHEEL_SUFFIXES = (".whl", ".tar.gz", ".zip")  # what pip --find-links takes
# the two extras hold different MXNet wheels, which must never share an environment
MXNET_OF = {"cpu": "mxnet", "gpu": "mxnet-cu112"}

CONNECT: Optional[Connector] = None  # how instances are reached where no caller passes `connect`: the transport;
# tests put testkit.fake_ssh's connector here (install and repair alike)

# importing mxnet (from EFS: seconds), then nvidia-smi and the GPU operation, each bounded on the host too
GPU_CHECK_TIMEOUT = timeouts.COMMAND + gpu_check.SMI_TIMEOUT + gpu_check.OP_TIMEOUT

Runner = Callable[..., subprocess.CompletedProcess]  # runs a local command (the wheel build)


class UserDataFailed(CommandError):
    """An instance's user data failed (its failed marker): the instance stays, its log names why."""


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
    """The directory holding setup.py of the running copy (an editable or source install), or None."""
    root = Path(__file__).resolve().parents[2]  # infra/cloud/install.py in a checkout
    return root if (root / "setup.py").exists() else None


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


def diagnosis(outcome: Outcome, address: Optional[str], port: int = 22) -> str:
    """Why one instance did not answer, in a user's terms: from how its last try failed (port refused,
    unreachable, or SSH answering but the login failing)."""
    if not address:
        return "no public address"
    kind = outcome.kind
    if kind == REFUSED:
        return f"port {port} refused: sshd not started yet"
    if kind == UNREACHABLE:
        return f"port {port} unreachable: is your address inside --ssh-cidr? still booting?"
    if kind == LOGIN:
        return f"port {port} open: SSH answers but the login failed"
    if kind is not None:
        return f"port {port} open: no SSH session yet (still booting?)"
    if outcome.status == -1:
        return "SSH answers; the command did not finish"
    return f"SSH answers; the command exited {outcome.status}"


class Remote:
    """The cluster's instances over the SSH transport (one connection per instance, kept across the steps):
    the waits, the upload, the install and the checks. Instances are (alias, public address) pairs; the alias
    is resolved through the cluster's ssh config in `ssh` (address, user, key), host keys against its
    known_hosts."""

    def __init__(self, ssh: SSHOptions, echo: Callable[[str], None], connect: Optional[Connector] = None):
        self.echo = echo
        self.group = Group(ssh, connect or CONNECT)

    def run(self, hosts: Sequence[tuple], argv: Sequence[str], timeout: float = timeouts.COMMAND,
            stdin: Optional[str] = None) -> Dict[str, Outcome]:
        """`argv` on every instance at once: alias -> Outcome."""
        found = self.group.run([Host(alias) for alias, _ in hosts], argv, timeout, stdin)
        return {host.address: outcome for host, outcome in found.items()}

    def wait_for(self, hosts: Sequence[tuple], command: Sequence[str], what: str, timeout: float) -> None:
        """Poll until `command` exits 0 on every instance (all at once); then a WaitTimeout that diagnoses
        each one that never did. A host key that is not accepted (changed) ends the wait at once."""
        def judge(alias: str, outcome: Outcome, address: Optional[str]) -> None:
            if outcome.kind == HOST_KEY:  # not a booting host: waiting would not change the key
                raise SSHConnectError(f"{alias}: {outcome.why}")

        def explain(alias: str, address: Optional[str], outcome: Optional[Outcome]) -> str:
            if outcome is None:
                return f"{alias}: no answer"
            return (f"{alias}: {diagnosis(outcome, address, self.group.endpoint(Host(alias)).port)} "
                    f"(ssh: {outcome.tail(200)})")
        self._poll_every(hosts, command, what, what, timeout, judge, explain)

    def wait_user_data(self, hosts: Sequence[tuple], timeout: float) -> None:
        """Poll every instance until its user data wrote the ready marker (bounded). One that wrote the failed
        marker ends the wait at once, with the step it names and the tail of its log; at the timeout each one
        not ready is named with its log's tail (or, when SSH failed, the SSH diagnosis)."""
        def judge(alias: str, outcome: Outcome, address: Optional[str]) -> None:
            if outcome.status == FAILED_STATUS:
                raise UserDataFailed(f"the user data of {alias} failed at step {outcome.out.strip() or '?'}; "
                                     f"{self.log_tail(alias, address)}")
        self._poll_every(hosts, ["sh", "-c", USER_DATA_STATE], "the user data to finish", "user data finished",
                         timeout, judge, self.still)

    def _poll_every(self, hosts: Sequence[tuple], command: Sequence[str], what: str, progress: str,
                    timeout: float, judge: Callable, explain: Callable) -> None:
        """Run `command` on every instance not yet done, all at once, until it exits 0 on each (bounded by
        `timeout`). `judge(alias, outcome, address)` may raise to end the wait at once; at the timeout
        `explain(alias, address, last outcome)` says why each one left is not done."""
        pending = dict(hosts)
        last: Dict[str, Outcome] = {}

        def attempt() -> int:
            for alias, outcome in self.run(list(pending.items()), command).items():
                judge(alias, outcome, pending[alias])
                if outcome.ok:
                    del pending[alias]
                else:
                    last[alias] = outcome
            return len(pending)

        def show(left: int) -> None:
            self.echo(f"  {progress}: {len(hosts) - left}/{len(hosts)}")
        try:
            wait.poll(attempt, lambda left: left == 0, timeout=timeout, interval=timeouts.POLL, what=what,
                      progress=show)
        except wait.WaitTimeout as exc:
            details = "; ".join(explain(alias, address, last.get(alias)) for alias, address in pending.items())
            raise wait.WaitTimeout(f"{exc.format_message()}: {details}") from exc

    def still(self, alias: str, address: Optional[str], outcome: Optional[Outcome]) -> str:
        """Why `alias` is not ready: SSH's diagnosis when the last try did not get in, else its log's tail."""
        if outcome is not None and outcome.error is not None:
            return f"{alias}: {diagnosis(outcome, address, self.group.endpoint(Host(alias)).port)}"
        return f"{alias}: still running; {self.log_tail(alias, address)}"

    def log_tail(self, alias: str, address: Optional[str]) -> str:
        """The last lines of the user data's log on `alias`, on one line (read over SSH, bounded)."""
        outcome = self.run([(alias, address)], ["tail", "-n", str(LOG_LINES), LOG])[alias]
        if not outcome.ok:
            return f"its log {LOG} could not be read ({outcome.tail(200)})"
        lines = [line.strip() for line in outcome.out.splitlines() if line.strip()]
        return f"the end of its log {LOG}: " + " | ".join(lines) if lines else f"its log {LOG} is empty"

    def upload(self, alias: str, files: Sequence[Path], dest: str = WHEELS) -> List[str]:
        """Copy `files` into `dest` on `alias` over SFTP, skipping those already there with the same size and
        mtime: a second `up` uploads nothing. Returns the names copied."""
        return transfer.upload(self.group.connection(Host(alias)), files, dest, timeouts.UPLOAD, self.echo)

    def install(self, hosts: Sequence[tuple], wheel: Path, efs: bool, options: Install = Install()) -> None:
        """The venv with mxlaunch[extra]: made once on instance 0 when it lives on EFS (else on each),
        then proven usable on every instance."""
        files = [wheel] + ([f for f in wheelhouse_files(options.wheelhouse) if f.name != wheel.name]
                           if options.wheelhouse else [])
        script = render("cluster_install.sh.j2", venv=VENV, wheel=f"{WHEELS}/{wheel.name}", wheels=WHEELS, efs=efs,
                        extra=options.extra, offline=options.wheelhouse is not None,
                        conflicting=MXNET_OF["gpu" if options.extra == "cpu" else "cpu"])
        targets = hosts[:1] if efs else hosts  # one venv on EFS serves every host
        for alias, address in targets:
            self.upload(alias, files)
            self.echo(f"  installing mxlaunch[{options.extra}] into {VENV} on {alias}"
                      + (f" from the wheelhouse {options.wheelhouse}" if options.wheelhouse else ""))
            outcome = self.run([(alias, address)], ["bash", "-s"], timeouts.INSTALL, stdin=script)[alias]
            if outcome.error is not None:
                raise CommandError(f"installing on {alias} failed: {outcome.why}")
            if not outcome.ok:
                raise CommandError(f"installing on {alias} failed ({outcome.why}): {outcome.tail()}")
        self.verify(hosts)

    def verify(self, hosts: Sequence[tuple]) -> None:
        """Every instance's view of the venv imports mxnet and mxlaunch (all at once; each failure named)."""
        found = self.run(hosts, [f"{VENV}/bin/python", "-c", "import mxnet, mxlaunch.launcher, mxlaunch.trainer"])
        failed = [f"{alias}: {outcome.tail(200)}" for alias, outcome in found.items() if not outcome.ok]
        if failed:
            raise CommandError(f"{len(failed)} of {len(hosts)} instance(s) cannot use {VENV}: " + "; ".join(failed))
        self.echo(f"  {VENV} imports mxnet and mxlaunch on {len(hosts)} instance(s)")

    def check_gpus(self, hosts: Sequence[tuple], gpus_per_host: int) -> None:
        """Every instance's GPU preflight through the venv's interpreter, all at once; a GpuCheckFailed naming
        each failing instance and why."""
        gpus = tuple(range(gpus_per_host))
        self.echo(f"checking GPUs {','.join(map(str, gpus))} on {len(hosts)} instance(s)")
        python = f"{VENV}/bin/python"
        request = {"workdir": None, "files": [], "bind": [], "probe": None, "probe_timeout": 0, "full": True,
                   **gpu_check.request(gpus)}
        found = self.run(hosts, [python, "-c", source("host_check")], GPU_CHECK_TIMEOUT,
                         stdin=json.dumps(request) + "\n")
        failed = [(alias, problems) for alias, problems in
                  ((alias, gpu_problems(outcome, python, gpus)) for alias, outcome in found.items()) if problems]
        if failed:
            raise GpuCheckFailed(f"GPU check failed on {len(failed)} of {len(hosts)} instance(s): "
                                 + "; ".join(f"{alias}: {' / '.join(problems)}" for alias, problems in failed))

    def close(self) -> None:
        self.group.close()


def gpu_problems(outcome: Outcome, python: str, gpus: Sequence[int]) -> List[str]:
    """One instance's GPU preflight verdict from its host_check reply: its problems ([] = it can run)."""
    reply = host_check.parse_reply(outcome.out)
    if reply is None:
        return [f"the GPU check did not answer ({outcome.tail(200)})"]
    problems = [] if "mxnet" in reply else [f"{python} cannot import mxnet: {reply.get('mxnet_error')}"]
    return problems + gpu_check.judge(gpus, reply.get("gpu"), python)


def mxlaunch_wheel(wheelhouse: Optional[Path], outdir: Path, run: Runner = subprocess.run) -> Path:
    """The wheelhouse's mxlaunch wheel if it has one (installed as given), else one of the running copy."""
    if wheelhouse is not None:
        found = sorted(wheelhouse.glob("mxlaunch-*.whl"))
        if found:
            return found[-1]
    return build_wheel(outdir, run=run)


def wait_ssh_and_install(hosts: Sequence[tuple], ssh: SSHOptions, efs: bool, echo, gpus_per_host: int = 0,
                         options: Optional[Install] = None, connect: Optional[Connector] = None,
                         run: Runner = subprocess.run) -> None:
    """`hosts`: (alias, public address) of every instance; `ssh`: the cluster's SSH settings
    (local_state.ssh_options). `gpus_per_host` (the instance type's) > 0 with the gpu extra ends with the GPU
    check on every instance. `connect`: the SSH seam (tests pass a fake); `run`: how the local wheel build runs."""
    options = options or install_options(None, None, gpus_per_host)
    remote = Remote(ssh, echo, connect)
    try:
        echo("waiting for SSH")
        remote.wait_for(hosts, ["true"], "SSH answering", timeouts.BOOT)
        remote.wait_user_data(hosts, timeouts.READY)
        with tempfile.TemporaryDirectory(prefix="mxlaunch-wheel-") as tmp:
            remote.install(hosts, mxlaunch_wheel(options.wheelhouse, Path(tmp), run=run), efs, options)
        if gpus_per_host > 0 and options.extra == "gpu":
            remote.check_gpus(hosts, gpus_per_host)
        elif gpus_per_host > 0:
            echo(f"  --extra {options.extra}: no GPU check (this MXNet build does not use the GPUs)")
    finally:
        remote.close()
