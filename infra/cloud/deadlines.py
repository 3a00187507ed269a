"""A cluster's --max-hours deadline: absolute, recorded where it outlives every instance, inherited by every
later launch, and what `launch cluster status` says of it.

    inherited(record, meta) -> datetime | None       the cluster's deadline as recorded
    for_launch(name, max_hours, record, meta, now, again) -> deadline | None
    status_lines(aws, record, meta) -> [line]

`up` writes the deadline at creation into cluster.json and onto the cluster's security group (the
`launch:deadline` tag: made first, removed last, so it is there when no instance is left), and each instance
carries it too (its own timer enforces it). Every later launch (`up` completing or growing the cluster, a
repair, a restart under `launch train --max-restarts`) gives its instances the recorded deadline; once it has
passed, a launch needs a new --max-hours, which becomes the cluster's deadline in cluster.json (the group keeps
its creation's: the IAM policy grants tags at creation only, infra/cloud/policy.py).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Optional

from mxlaunch.errors import UsageError

from mxlaunch.infra.cloud import spec
from mxlaunch.infra.cloud.aws import Aws
from mxlaunch.infra.cloud.local_state import ClusterMeta
from mxlaunch.infra.cloud.record import ClusterRecord, find_instances

MARGIN = dt.timedelta(minutes=1)  # a deadline this close is as good as passed: an instance would end at once


def inherited(record: ClusterRecord, meta: ClusterMeta) -> Optional[dt.datetime]:
    """The cluster's deadline: cluster.json's (the latest --max-hours), else its security group's tag (the one
    it was created with: a machine without its local state), else the earliest its live instances carry (a
    cluster made before either was recorded)."""
    return spec.parse_deadline(meta.deadline) or record.deadline or spec.cluster_deadline(record.live)


def for_launch(name: str, max_hours: Optional[float], record: ClusterRecord, meta: ClusterMeta, now: dt.datetime,
               again: str, margin: dt.timedelta = MARGIN) -> Optional[dt.datetime]:
    """The deadline of instances launched `now`: --max-hours from now, else the cluster's own (None: it has
    none, or nothing of it exists yet). A recorded deadline that has passed, or is less than `margin` away, is
    refused (a UsageError ending with `again`, the way on), never given to an instance that would end at once."""
    if max_hours is not None:
        return now.replace(microsecond=0) + dt.timedelta(hours=max_hours)
    if record.empty:  # a new cluster: a cluster.json left from an earlier one of the name is no record of it
        return None
    recorded = inherited(record, meta)
    if recorded is not None and recorded <= now + margin:
        when = ("has passed" if recorded <= now + MARGIN
                else f"is less than {margin.total_seconds() / 60:.0f} minutes away")
        raise UsageError(f"cluster {name}'s --max-hours deadline {spec.deadline_text(recorded)} {when}: {again}")
    return recorded


def status_lines(aws: Aws, record, meta: ClusterMeta) -> list:
    """`status` on --max-hours: the cluster's recorded deadline, each deadline the live instances carry (their
    launch:deadline tag, which their own timer enforces); with none left alive, whether a deadline ended them
    and what still bills."""
    now = dt.datetime.now(dt.timezone.utc)
    lines = []
    own = inherited(dataclasses.replace(record, instances=()), meta)
    if own is not None:
        lines.append(f"cluster deadline: {spec.deadline_text(own)}; every instance launched later (up, repair, "
                     f"restarts) inherits it")
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
    ended = spec.cluster_deadline(gone) or own
    why = (f"the --max-hours deadline {spec.deadline_text(ended)} passed and they terminated themselves"
           if ended and ended <= now else "none are running")
    bills = f"EFS {record.file_system} still bills (storage)" if record.file_system else "nothing left bills"
    lines.append(f"no instances: {why}; {bills} until `launch cluster down {record.name}` removes it all")
    return lines


def _duration(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
