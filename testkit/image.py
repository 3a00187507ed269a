"""What a bed host looks like from the inside when it stands in for an EC2 instance of the Deep Learning AMI
(`Image`), and what happens when such an instance "boots" (`boot`: the harness plays cloud-init).

A host of an image runs its sshd in its own mount namespace (and so does every session and every process it
starts): an empty tmpfs over /home, /root, /opt, /var/lib/mxlaunch and over each of the launcher's working
directories (`hide`: the checkout, the test run's tmp dirs), the bed's shared directory bind-mounted at
/efs (the EFS mount), and the login user's home /home/USER. The interpreter is the system python3; with
`frameworks`, a site-packages directory of this machine shows read-only at /opt/frameworks (what the AMI
ships preinstalled). sshd lets the user in with the key in ~USER/.ssh/authorized_keys (put there by `boot`)
and refuses root, as the AMI does; the harness itself gets in with `inside_argv` (nsenter), not over SSH.
"""
from __future__ import annotations

import os
import pwd
import shlex
import subprocess
from dataclasses import dataclass
from typing import List, Optional, Tuple

from mxlaunch.infra.cloud.spec import EFS_ROOT
from testkit.system import BedError

DEFAULT_USER = "ubuntu"
EFS = "/efs"
FRAMEWORKS = "/opt/frameworks"
READY_DIR = "/var/lib/mxlaunch"  # the user data's `ready` mark lives here (infra/cloud/install.py waits for it)
PRIVATE = (("/home", "755"), ("/root", "700"), (READY_DIR, "755"))  # every host has its own


@dataclass(frozen=True)
class Image:
    user: str = DEFAULT_USER
    hide: Tuple[str, ...] = ()  # the launcher's working directories: no host sees into them
    frameworks: Optional[str] = None  # shown read-only at /opt/frameworks

    @property
    def home(self) -> str:
        return f"/home/{self.user}"

    @property
    def mountpoints(self) -> Tuple[str, ...]:
        """Directories this machine must have for the mounts (made when missing: testkit.users)."""
        return EFS, READY_DIR

    def check(self, bed_dir: str) -> None:
        """sshd reads its files from the bed's directory after the mounts: no hidden directory may hold it."""
        for d in self.hide:
            if os.path.commonpath([os.path.abspath(d), bed_dir]) == os.path.abspath(d):
                raise BedError(f"cannot hide {d} from the hosts: it holds the bed's own files ({bed_dir})")

    def mount_script(self, shared: str) -> str:
        """The shell script (run as root in the host's fresh mount namespace, before it execs "$@": sshd)."""
        q = shlex.quote
        lines = ["set -e", "mount --make-rprivate /", "mount -t tmpfs -o mode=755 tmpfs /opt"]
        if self.frameworks:  # first: its source may lie under a directory hidden below
            lines += [f"mkdir {FRAMEWORKS}", f"mount --bind -o ro {q(self.frameworks)} {FRAMEWORKS}"]
        for d, mode in PRIVATE:
            lines.append(f"mount -t tmpfs -o mode={mode} tmpfs {d}")
        for d in self.hide:
            lines.append(f"if [ -d {q(d)} ]; then mount -t tmpfs -o mode=755 tmpfs {q(d)}; fi")
        lines += [f"install -d -m 750 -o {q(self.user)} -g {q(self.user)} {q(self.home)}",
                  f"mount --bind {q(shared)} {EFS}", 'exec "$@"']
        return "\n".join(lines)

    def start_argv(self, shared: str, argv: List[str]) -> List[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", self.mount_script(shared), "sh", *argv]


def inside_argv(pid: int, user: Optional[str] = None) -> List[str]:
    """The prefix that runs a command inside the namespaces (mount and network) of process `pid` (a host's
    sshd): as root, or as `user` with a login-like environment."""
    argv = ["nsenter", "--target", str(pid), "--mount", "--net"]
    if not user:
        return argv + ["--"]
    pw = pwd.getpwnam(user)
    return argv + [f"--setuid={pw.pw_uid}", f"--setgid={pw.pw_gid}", f"--wdns={pw.pw_dir}", "--", "env", "-i",
                   f"HOME={pw.pw_dir}", f"USER={user}", f"LOGNAME={user}", "PATH=/usr/local/bin:/usr/bin:/bin"]


# cloud-init: the key pair's public key for the login user; the user data's end state as far as the product
# relies on it: EFS at /efs (already mounted), its root and work folders owned by the user, the `ready` mark.
BOOT = """\
set -e
u="$1"; home="$2"; efs_root="$3"; ready="$4"
install -d -m 700 -o "$u" -g "$u" "$home/.ssh"
cat >> "$home/.ssh/authorized_keys"
chown "$u:" "$home/.ssh/authorized_keys"; chmod 600 "$home/.ssh/authorized_keys"
efs=$(dirname "$efs_root")
mkdir -p "$efs/data" "$efs_root/work" "$efs_root/wheels"
chown "$u:" "$efs" "$efs/data" "$efs_root" "$efs_root/work" "$efs_root/wheels"
date -u +%FT%TZ > "$ready/ready"
"""


def boot(sshd_pid: int, image: Image, public_key: str, timeout: float = 15) -> None:
    """What an instance's first boot does, as far as the box plays it (see testkit/box.py)."""
    proc = subprocess.run(inside_argv(sshd_pid) + ["sh", "-c", BOOT, "boot", image.user, image.home, EFS_ROOT,
                                                   READY_DIR],
                          input=public_key.strip() + "\n", capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BedError(f"boot of the host of sshd {sshd_pid} failed: {proc.stderr.strip()}")
