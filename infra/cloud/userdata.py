"""The user data of a cluster's instances (templates/cluster_userdata.sh.j2): mounts EFS, prepares the venv's
needs, and arms the --max-hours deadline timer. It ends by writing READY, or FAILED naming the step that failed
(`launch cluster up --wait ssh` waits for either, and reads LOG's tail on failure). Holds no secret; every value
is validated or AWS-made."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from mxlaunch.templates import render

from mxlaunch.infra.cloud.spec import EFS_ROOT, VENV, ClusterSpec, deadline_text, validate_name, validate_ssh_user

MARKS = "/var/lib/mxlaunch"
READY = f"{MARKS}/ready"  # the user data's last step writes it
FAILED = f"{MARKS}/failed"  # "STEP: why", written instead when a step fails
LOG = "/var/log/mxlaunch-userdata.log"
# numpy 1.23.5 (MXNet 1.9.1's) has wheels for CPython 3.8-3.11: a python3 this new or newer cannot install it
PYTHON_TOO_NEW = (3, 12)


def render_user_data(spec: ClusterSpec, efs_dns: Optional[str], deadline: Optional[dt.datetime] = None) -> str:
    """`deadline`: when the instance must end itself (--max-hours from now, or the cluster's when it grows);
    None: it runs until `launch cluster down`."""
    return render("cluster_userdata.sh.j2", name=validate_name(spec.name), efs_dns=efs_dns, efs_root=EFS_ROOT,
                  venv=VENV, ssh_user=validate_ssh_user(spec.ssh_user), marks=MARKS, ready=READY, failed=FAILED,
                  log=LOG, python_too_new=".".join(map(str, PYTHON_TOO_NEW)),
                  python_too_new_tuple=", ".join(map(str, PYTHON_TOO_NEW)),
                  deadline_iso=deadline_text(deadline) if deadline else None,
                  deadline_epoch=int(deadline.timestamp()) if deadline else None)
