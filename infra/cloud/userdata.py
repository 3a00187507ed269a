"""The user data of a cluster's instances (templates/cluster_userdata.sh.j2): mounts EFS, prepares the venv's
needs, and arms the --max-hours deadline timer. Holds no secret; every value is validated or AWS-made."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from mxlaunch.templates import render

from mxlaunch.infra.cloud.spec import EFS_ROOT, VENV, ClusterSpec, deadline_text, validate_name, validate_ssh_user


def render_user_data(spec: ClusterSpec, efs_dns: Optional[str], deadline: Optional[dt.datetime] = None) -> str:
    """`deadline`: when the instance must end itself (--max-hours from now, or the cluster's when it grows);
    None: it runs until `launch cluster down`."""
    return render("cluster_userdata.sh.j2", name=validate_name(spec.name), efs_dns=efs_dns, efs_root=EFS_ROOT,
                  venv=VENV, ssh_user=validate_ssh_user(spec.ssh_user),
                  deadline_iso=deadline_text(deadline) if deadline else None,
                  deadline_epoch=int(deadline.timestamp()) if deadline else None)
