"""The cluster in a box: `launch cluster` against a moto server whose instances are real hosts of this run.

    box = up(3, hide=(checkout, tmp_root))      # 3 bed hosts that look like DLAMI instances, a moto server
    box.launch("cluster", "up", "c1", ..., "--wait", "running")   # the real CLI, in a subprocess, on box.env
    box.bed.inside(0, "cat", "/efs/x", user="ubuntu")            # host 0 as it sees itself (no SSH)
    box.down()                                   # -> [] when nothing is left: server, namespaces, user, mounts

What it is: a bed (testkit.bed) of `capacity` hosts made with an Image (testkit.image):
login user `ubuntu` (not root; refused over SSH), its own home, each host in its own mount namespace with an
empty tmpfs over /home, /root, /opt, /var/lib/mxlaunch and the launcher's working directories (`hide`, plus
the box's own directory, which holds MXLAUNCH_HOME), the bed's shared directory at /efs, the system python3,
no route out of the machine. A moto server on 127.0.0.1 in its own process (testkit.box_server)
answers placement groups too, and RunInstances hands out the hosts in launch order as the instances' public
and private addresses: these are the only addresses a test ever contacts.

What "booting" an instance does here (the harness plays cloud-init): the key pair's public key (moto's record
of `launch-NAME`) goes into ~ubuntu/.ssh/authorized_keys, and the end state of the user data that the product
relies on is set: /efs/mxlaunch, its work/ and wheels/ owned by ubuntu, /var/lib/mxlaunch/ready written.
What the box does NOT run by default: the user data script itself (templates/cluster_userdata.sh.j2) — no NFS
mount (a bind mount stands in for EFS), no apt-get (python3-venv, nfs-common), no `shutdown -h` for --max-hours,
no /var/log/mxlaunch-userdata.log — nor any other part of an AMI's boot (no systemd units, no NVIDIA driver or
GPU: `nvidia-smi` is absent, so GPU checks fail there; the hosts run on this machine's CPUs). Instances that
are terminated keep their host (no re-imaging), and a host is handed out once: size the box for the module.
Whoever changes the user data's file-system steps changes `image.BOOT` with it.

`up(..., user_data=True)`: a boot installs the key, then the instance's real user data runs on its host as
cloud-init would (testkit.box_server.run_user_data: EFS is already mounted, so the NFS mount is skipped; apt,
fuser, shutdown are stubbed in its own mount namespace; the host has its own /var/log); `no_efs` (hosts by
index): those cannot mount EFS, and their user data fails at that step within seconds. A user data with a
--max-hours deadline is not run (it would arm a shutdown of this machine).

`host_python()`: an interpreter for the hosts at /efs/box-venv/bin/python — this checkout's wheel in a venv of
the system python3, with the third-party packages of the test run's own venv visible read-only at
/opt/frameworks (what the AMI ships preinstalled). A stand-in for `launch cluster up --wait ssh`, for tests of
the run path that do not test the install.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from testkit import bed as beds
from testkit.checkout import REPO, with_testkit
from testkit.image import EFS, FRAMEWORKS, Image
from testkit.procs import OWNER_KEY
from testkit.system import BedError, kill_and_wait

REGION = "us-east-1"
SERVER_START_TIMEOUT = 60.0
HOST_VENV = "box-venv"  # under /efs
AMI_NAME = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) in a box"


@dataclass
class Box:
    bed: beds.Bed
    dir: str  # the launcher side's own state (MXLAUNCH_HOME, the server's config and events); hidden from hosts
    server: subprocess.Popen
    endpoint: str  # http://127.0.0.1:PORT
    ami: str = ""  # the Deep Learning AMI of the box (registered in its moto at `up`): pass it as --ami

    @property
    def home(self) -> str:
        return os.path.join(self.dir, "mxlaunch-home")

    @property
    def events(self) -> str:
        return os.path.join(self.dir, "events.jsonl")

    def env(self, **extra: str) -> dict:
        """The environment of `launch` run against the box: none of the user's AWS or mxlaunch settings, no
        ssh-agent; fake credentials, the moto endpoint (boto3's own AWS_ENDPOINT_URL), a private MXLAUNCH_HOME.
        The test run's owner mark stays (what the CLI starts is swept if the run is killed)."""
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("AWS_", "MXLAUNCH_", "XDG_CONFIG", "SSH_AUTH_SOCK")) or k == OWNER_KEY}
        none = os.path.join(self.dir, "no-aws-config")
        keep.update(AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                    AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE=none, AWS_SHARED_CREDENTIALS_FILE=none,
                    AWS_EC2_METADATA_DISABLED="true", MXLAUNCH_HOME=self.home, NO_PROXY="127.0.0.1",
                    no_proxy="127.0.0.1", NO_COLOR="1")
        keep.update(extra)
        return keep

    def launch(self, *args, timeout: float = 120, env: Optional[dict] = None) -> Tuple[int, str, str]:
        """`launch ARGS...` as a user runs it (the real entry point, its own process group), bounded in time:
        (exit status, stdout, stderr). Overrunning kills its process group and fails with what it printed."""
        proc = subprocess.Popen([sys.executable, "-m", "mxlaunch.launcher", *map(str, args)], env=env or self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                stdin=subprocess.DEVNULL)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            out, err = proc.communicate(timeout=10)
            raise AssertionError(f"launch {' '.join(map(str, args))} did not end within {timeout}s\n{out}\n{err}")
        return proc.returncode, out, err

    def cluster_dir(self, name: str) -> str:
        """The launcher's local state of cluster `name` (id_key, hosts, ssh_config, known_hosts)."""
        return os.path.join(self.home, "clusters", name)

    def booted(self) -> List[dict]:
        """One record per instance RunInstances made, in launch order: instance_id, address, key_name, booted."""
        with contextlib.suppress(FileNotFoundError), open(self.events) as fh:
            return [json.loads(line) for line in fh]
        return []

    def client(self, service: str):
        import boto3
        return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                             region_name=REGION).client(service, endpoint_url=self.endpoint)

    def ssh(self, name: str, index: int, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """The stock OpenSSH client with cluster `name`'s ssh config (its key, user, known_hosts): what
        `launch cluster ssh NAME INDEX` runs."""
        return subprocess.run(["ssh", "-F", os.path.join(self.cluster_dir(name), "ssh_config"),
                               f"{name}-{index}", command], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=self.env())

    def host_python(self) -> str:
        """The hosts' interpreter (/efs/box-venv/bin/python), made on first use: see the module docstring."""
        venv = os.path.join(self.bed.shared, HOST_VENV)
        if not os.path.exists(os.path.join(venv, ".complete")):
            _make_host_venv(venv, os.path.join(self.dir, "wheel"))
        return f"{EFS}/{HOST_VENV}/bin/python"

    def down(self, timeout: float = 10) -> List[str]:
        """Stop the server (its stdin is its lifeline), tear the bed down. Returns the problems ([]: clean)."""
        problems = _stop(self.server, timeout)
        problems += self.bed.down()
        if not problems:
            shutil.rmtree(self.dir, ignore_errors=True)
        return problems


def _stop(server: subprocess.Popen, timeout: float) -> List[str]:
    with contextlib.suppress(OSError):
        server.stdin.close()
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    left = kill_and_wait([server.pid], 5) if server.poll() is None else []
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=1)
    server.stdout.close()
    return [f"moto server {server.pid} survives SIGKILL"] if left else []


def _make_host_venv(venv: str, wheel_dir: str) -> None:
    """A venv of the system python3 at `venv` (a path under the shared directory: /efs/... on the hosts), with
    this checkout's wheel and a .pth line that adds the read-only frameworks directory."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True, timeout=60,
                   capture_output=True)
    shutil.rmtree(wheel_dir, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", wheel_dir, REPO], check=True,
                   timeout=300, capture_output=True)
    site = subprocess.run([os.path.join(venv, "bin", "python"), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True,
                          timeout=30).stdout.strip()
    wheels = [os.path.join(wheel_dir, w) for w in os.listdir(wheel_dir) if w.endswith(".whl")]
    subprocess.run(pip + ["install", "--no-deps", "--no-index", "--target", site, *wheels], check=True, timeout=300,
                   capture_output=True)
    with open(os.path.join(site, "box-frameworks.pth"), "w") as fh:
        fh.write(FRAMEWORKS + "\n")  # a plain path line: the .pth files found there are not run
    open(os.path.join(venv, ".complete"), "w").close()


def up(capacity: int, hide: Iterable[str] = (), dir: Optional[str] = None, user_data: bool = False,
       no_efs: Iterable[int] = ()) -> Box:
    """A box of `capacity` hosts (none booted yet) and its moto server. `hide`: the launcher's working
    directories; `dir`: where the launcher side keeps its state (default: a new temporary directory);
    `user_data`, `no_efs`: see the module docstring."""
    dir = dir or tempfile.mkdtemp(prefix="mxlaunch-box-")
    os.makedirs(dir, exist_ok=True)
    frameworks = sysconfig.get_paths()["purelib"]  # this run's own third-party packages (mxnet, numpy, ...)
    image = Image(hide=tuple(dict.fromkeys([*hide, os.path.abspath(dir)])), frameworks=frameworks)
    bed = beds.up(capacity, image=image)
    try:
        config = os.path.join(dir, "server.json")
        with open(config, "w") as fh:
            json.dump({"image_user": image.user, "events": os.path.join(dir, "events.jsonl"),
                       "hosts": [{"address": m.address, "sshd_pid": m.sshd_pid} for m in bed.members],
                       "user_data": user_data, "no_efs": [bed.members[i].address for i in no_efs]}, fh)
        with open(os.path.join(dir, "server.log"), "w") as log:
            server = subprocess.Popen([sys.executable, "-m", "testkit.box_server", config],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                      env=with_testkit())
    except BaseException:
        bed.down()
        raise
    box = Box(bed=bed, dir=dir, server=server, endpoint="")
    try:
        ready, _, _ = select.select([server.stdout], [], [], SERVER_START_TIMEOUT)
        line = server.stdout.readline().strip() if ready else ""
        if not line.startswith("http://127.0.0.1:"):
            raise BedError(f"the box's moto server did not start within {SERVER_START_TIMEOUT:.0f}s "
                           f"(exit status {server.poll()}, said {line!r})")
        box.endpoint = line
        box.ami = box.client("ec2").register_image(Name=AMI_NAME, Description="the box's DLAMI")["ImageId"]
    except BaseException:
        box.down()
        raise
    return box
