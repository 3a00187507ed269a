"""What `launch cluster status` says of --max-hours: the deadlines the instances carry, and what a passed one
left behind."""
from __future__ import annotations

import datetime as dt

from mxlaunch.infra.cloud import spec
from mxlaunch.infra.cloud.aws import Aws
from mxlaunch.infra.cloud.local_state import ClusterMeta
from mxlaunch.infra.cloud.record import find_instances


def status_lines(aws: Aws, record, meta: ClusterMeta) -> list:
    """`status` on --max-hours: each deadline the live instances carry (their launch:deadline tag, which their
    own timer enforces); with none left alive, whether a deadline ended them and what still bills."""
    now = dt.datetime.now(dt.timezone.utc)
    lines = []
    live = record.live
    deadlines = sorted({spec.instance_deadline(i) for i in live} - {None})
    for when in deadlines:
        n = sum(1 for i in live if spec.instance_deadline(i) == when)
        left = when - now
        due = f"in {_duration(left)}" if left.total_seconds() > 0 else "passed: shutting down"
        lines.append(f"deadline: {n} instance(s) terminate themselves at {spec.deadline_text(when)} ({due}); "
                     f"EFS and the rest stay until `launch cluster down {record.name}`")
    unarmed = sum(1 for i in live if spec.instance_deadline(i) is None)
    if deadlines and unarmed:
        lines.append(f"no deadline: {unarmed} instance(s) run until `launch cluster down {record.name}`")
    if live or record.empty:
        return lines
    gone = find_instances(aws, record.name, states=("shutting-down", "terminated"))
    ended = spec.cluster_deadline(gone) or spec.parse_deadline(meta.deadline)
    why = (f"the --max-hours deadline {spec.deadline_text(ended)} passed and they terminated themselves"
           if ended and ended <= now else "none are running")
    bills = f"EFS {record.file_system} still bills (storage)" if record.file_system else "nothing left bills"
    lines.append(f"no instances: {why}; {bills} until `launch cluster down {record.name}` removes it all")
    return lines


def _duration(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
