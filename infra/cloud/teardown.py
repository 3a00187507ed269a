"""`down`: remove everything tagged with the cluster, in dependency order; and the same primitives undo a
failed `up` (only what that `up` created). Safe to re-run: what is already gone is skipped. `down` returns once
the names are free again (EFS creation token, placement group), so that an `up` of the same name can follow."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, TypeVar

from mxlaunch.infra.cloud import local_state, wait
from mxlaunch.infra.cloud.aws import CONSISTENCY, JUST_CREATED_DENIED, Aws, AwsError
from mxlaunch.infra.cloud.record import ClusterRecord, tag_filter

T = TypeVar("T")

TERMINATE_TIMEOUT = 600.0
DELETE_TIMEOUT = 300.0
INTERVAL = 5.0
GONE = {"InvalidInstanceID.NotFound", "InvalidGroup.NotFound", "InvalidKeyPair.NotFound",
        "InvalidPlacementGroup.Unknown", "FileSystemNotFound", "MountTargetNotFound", "InvalidVolume.NotFound"}
IN_USE = {"DependencyViolation", "InvalidPlacementGroup.InUse", "FileSystemInUse", "VolumeInUse"}
ALIVE = ("pending", "running", "stopping", "stopped")  # an instance in these states bills (or its volume does)


@dataclass(frozen=True)
class Step:
    """One thing to remove: `label` names it; `run` removes it and returns the line to report, or None when it
    was already gone."""

    label: str
    run: Callable[[], Optional[str]]


def settle(action: Callable[[], T]) -> T:
    """A call on a resource created seconds ago: AWS's not-yet-visible codes retried with backoff (about 5
    minutes), and a denial for about 30 s (a tag-conditioned policy may not see its tags yet)."""
    return wait.retry(action, CONSISTENCY, JUST_CREATED_DENIED)


def _delete(action: Callable[[], object], *, fresh: bool, in_use: bool = False, what: str = "") -> bool:
    """Run a delete; False when the resource was already gone. `fresh`: created by this run seconds ago, so
    NotFound may only mean 'not visible yet': retried (bounded) before it counts as gone. `in_use`: wait
    (bounded) while what depends on it goes away."""
    def once() -> bool:
        try:
            if fresh:
                settle(action)
            else:
                action()
            return True
        except AwsError as exc:
            if exc.code in GONE:
                return False
            raise
    if not in_use:
        return once()
    return wait.retry_codes(once, IN_USE, timeout=DELETE_TIMEOUT, interval=INTERVAL, what=what)


def instance_states(aws: Aws, ids: List[str]) -> Dict[str, str]:
    """id -> state of those of `ids` that DescribeInstances shows (a filter, not InstanceIds: an id AWS does
    not show fails no call)."""
    found = {}
    for reservation in aws.paginate("ec2", "describe_instances", "Reservations",
                                    Filters=[{"Name": "instance-id", "Values": list(ids)}]):
        for d in reservation.get("Instances", []):
            found[d["InstanceId"]] = d.get("State", {}).get("Name", "?")
    return found


def terminate_visible(aws: Aws, ids: List[str]) -> None:
    """TerminateInstances for `ids`. One id AWS does not show fails the whole call (InvalidInstanceID.NotFound):
    then it is sent again for the ids DescribeInstances shows, alone."""
    try:
        aws.call("ec2", "terminate_instances", InstanceIds=list(ids))
    except AwsError as exc:
        if exc.code != "InvalidInstanceID.NotFound":
            raise
        visible = [i for i, st in instance_states(aws, ids).items() if st in ALIVE]
        if visible:
            aws.call("ec2", "terminate_instances", InstanceIds=visible)


def terminate_instances(aws: Aws, name: str, ids: List[str], echo, fresh: bool = False) -> None:
    """Terminate `ids` of cluster `name` and confirm it with DescribeInstances: every one shutting down or gone.
    AWS's NotFound for an instance is no proof that it is gone (eventual consistency:
    https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html); an id that shows up still
    alive is sent again. `fresh`: launched by this run, so an id not shown yet is waited for."""
    if not ids:
        return
    terminate_visible(aws, ids)
    if aws.dry_run:
        return
    last = [None]

    def left() -> List[str]:
        states = instance_states(aws, ids)
        alive = [i for i in ids if states.get(i) in ALIVE]
        if alive:
            terminate_visible(aws, alive)
        return alive + ([i for i in ids if i not in states] if fresh else [])

    def show(pending: List[str]) -> None:
        if len(pending) != last[0]:
            echo(f"  terminating: {len(ids) - len(pending)}/{len(ids)} terminated")
            last[0] = len(pending)
    wait.poll(left, lambda pending: not pending, timeout=TERMINATE_TIMEOUT, interval=INTERVAL,
              what=f"{len(ids)} instance(s) of cluster {name} to terminate", progress=show)


def _until_gone(fetch_state: Callable[[], str], echo, what: str) -> None:
    """Poll `fetch_state` ('gone' once AWS no longer knows it) until gone or deleted, bounded, one progress line
    per state: a name (EFS creation token, placement group) stays taken until then."""
    seen = [None]

    def show(state):
        if state != seen[0] and state not in ("gone", "deleted"):
            echo(f"  waiting for {what} to be deleted ({state})")
        seen[0] = state
    wait.poll(fetch_state, lambda state: state in ("gone", "deleted"), timeout=DELETE_TIMEOUT, interval=INTERVAL,
              what=f"{what} to be deleted", progress=show)


def delete_mount_target(aws: Aws, mt: str, fresh: bool = False) -> bool:
    return _delete(lambda: aws.call("efs", "delete_mount_target", MountTargetId=mt), fresh=fresh,
                   what=f"delete mount target {mt}")


def delete_mount_targets(aws: Aws, fs_id: str, mount_ids: List[str], fresh: bool = False) -> None:
    for mt in mount_ids:
        delete_mount_target(aws, mt, fresh)
    if aws.dry_run or not mount_ids:
        return

    def left():
        try:
            return aws.call("efs", "describe_mount_targets", FileSystemId=fs_id).get("MountTargets", [])
        except AwsError as exc:
            if exc.code in GONE:
                return []
            raise
    wait.poll(left, lambda mts: not mts, timeout=DELETE_TIMEOUT, interval=INTERVAL,
              what=f"the mount targets of {fs_id} to be deleted")


def delete_file_system(aws: Aws, fs_id: str, echo, fresh: bool = False) -> bool:
    if not _delete(lambda: aws.call("efs", "delete_file_system", FileSystemId=fs_id), fresh=fresh, in_use=True,
                   what=f"delete {fs_id}"):
        return False
    if not aws.dry_run:
        def state() -> str:
            try:
                found = aws.call("efs", "describe_file_systems", FileSystemId=fs_id).get("FileSystems", [])
            except AwsError as exc:
                if exc.code == "FileSystemNotFound":
                    return "gone"
                raise
            return found[0].get("LifeCycleState", "?") if found else "gone"
        _until_gone(state, echo, f"EFS {fs_id}")
    return True


def delete_placement_group(aws: Aws, group: str, echo, fresh: bool = False) -> bool:
    if not _delete(lambda: aws.call("ec2", "delete_placement_group", GroupName=group), fresh=fresh, in_use=True,
                   what=f"delete placement group {group}"):
        return False
    if not aws.dry_run:
        def state() -> str:
            try:
                found = aws.call("ec2", "describe_placement_groups", GroupNames=[group]).get("PlacementGroups", [])
            except AwsError as exc:
                if exc.code == "InvalidPlacementGroup.Unknown":
                    return "gone"
                raise
            return next((p.get("State", "?") for p in found if p.get("GroupName") == group), "gone")
        _until_gone(state, echo, f"placement group {group}")
    return True


def delete_security_group(aws: Aws, group_id: str, fresh: bool = False) -> bool:
    """DependencyViolation is retried (bounded): terminating instances and deleted mount targets release
    their network interfaces a little after they are reported gone."""
    return _delete(lambda: aws.call("ec2", "delete_security_group", GroupId=group_id), fresh=fresh, in_use=True,
                   what=f"delete security group {group_id}")


def delete_key_pair(aws: Aws, key_name: str, fresh: bool = False) -> bool:
    return _delete(lambda: aws.call("ec2", "delete_key_pair", KeyName=key_name), fresh=fresh,
                   what=f"delete key pair {key_name}")


def delete_volumes(aws: Aws, name: str) -> List[str]:
    """Volumes tagged for the cluster and attached to nothing (a root volume an image kept after its instance,
    a volume someone detached): they bill until deleted."""
    ids = [v["VolumeId"] for v in aws.paginate("ec2", "describe_volumes", "Volumes", Filters=tag_filter(name) + [
        {"Name": "status", "Values": ["available", "error"]}])]
    return [v for v in ids if _delete(lambda v=v: aws.call("ec2", "delete_volume", VolumeId=v), fresh=False,
                                      in_use=True, what=f"delete volume {v}")]


def steps(aws: Aws, record: ClusterRecord, echo, remove_local_key: bool, fresh: bool = False) -> List[Step]:
    """What removing `record` takes, in dependency order. `fresh`: everything in it was created by this run
    seconds ago (a rollback)."""
    todo: List[Step] = []
    present = [i.id for i in record.instances]
    if present:
        what = f"{len(present)} instance(s): {' '.join(present)}"

        def instances():
            if not aws.dry_run:
                echo(f"terminating {what}")
            terminate_instances(aws, record.name, present, echo, fresh=fresh)
            return what
        todo.append(Step(what, instances))
    if present or record.volumes:
        def volumes():
            gone = delete_volumes(aws, record.name)
            return f"volume(s): {' '.join(gone)}" if gone else None
        todo.append(Step(f"volumes tagged launch:cluster={record.name}", volumes))
    fs = record.file_system
    if fs and record.mount_targets:
        mts = [m for m, _ in record.mount_targets]
        todo.append(Step(f"EFS mount target(s): {' '.join(mts)}",
                         lambda: delete_mount_targets(aws, fs, mts, fresh) or f"EFS mount target(s): {' '.join(mts)}"))
    if fs:
        todo.append(Step(f"EFS file system {fs}", lambda: delete_file_system(aws, fs, echo, fresh) and
                         f"EFS file system {fs}" or None))
    pg = record.placement_group
    if pg:
        todo.append(Step(f"placement group {pg}", lambda: delete_placement_group(aws, pg, echo, fresh) and
                         f"placement group {pg}" or None))
    # The EFS group refers to the cluster group in its NFS rule: it goes first.
    for group in (record.efs_security_group, record.security_group):
        if group:
            todo.append(Step(f"security group {group}", lambda g=group: delete_security_group(aws, g, fresh) and
                             f"security group {g}" or None))
    if record.key_name:
        key = record.key_name
        todo.append(Step(f"key pair {key}", lambda: delete_key_pair(aws, key, fresh) and f"key pair {key}" or None))
    if remove_local_key and not aws.dry_run:
        path = local_state.key_path(record.name)
        todo.append(Step(f"private key {path}", lambda: local_state.remove_key(record.name) and f"private key {path}"
                         or None))
    return todo


def remove(aws: Aws, record: ClusterRecord, echo, remove_local_key: bool) -> List[str]:
    """Delete what `record` holds, in dependency order; returns one line per removed thing."""
    return [line for line in (step.run() for step in steps(aws, record, echo, remove_local_key)) if line]


def down(aws: Aws, record: ClusterRecord, echo) -> List[str]:
    """`launch cluster down`: remove what `record` holds, then the cluster's local state (key, hostfile,
    ssh config) only when the cluster was recorded in the region searched: a `down --region` of another
    region never deletes the key of a cluster that still runs elsewhere. One line per removed thing."""
    recorded = local_state.read_meta(record.name).region
    own = recorded in (None, aws.region)
    removed = remove(aws, record, echo, remove_local_key=own and bool(record.key_name))
    if aws.dry_run:
        return removed
    if own:
        local_state.remove_dir(record.name)
    elif local_state.cluster_dir(record.name).exists():
        echo(f"kept the local state {local_state.cluster_dir(record.name)}: cluster {record.name} is recorded "
             f"in {recorded}, not {aws.region}")
    return removed
