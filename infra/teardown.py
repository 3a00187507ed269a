"""`down`: remove everything tagged with the cluster, in dependency order; and the same primitives undo a
failed `up` (only what that `up` created). Safe to re-run: what is already gone is skipped."""
from __future__ import annotations

from typing import Callable, List

from mxlaunch.infra import state, wait
from mxlaunch.infra.aws import Aws, AwsError
from mxlaunch.infra.record import ClusterRecord, find_instances

TERMINATE_TIMEOUT = 600.0
DELETE_TIMEOUT = 300.0
INTERVAL = 5.0
GONE = {"InvalidInstanceID.NotFound", "InvalidGroup.NotFound", "InvalidKeyPair.NotFound",
        "InvalidPlacementGroup.Unknown", "FileSystemNotFound", "MountTargetNotFound"}
IN_USE = {"DependencyViolation", "InvalidPlacementGroup.InUse", "FileSystemInUse"}


def _ignore_gone(action: Callable[[], object]) -> bool:
    """Run a delete; False when the resource was already gone."""
    try:
        action()
        return True
    except AwsError as exc:
        if exc.code in GONE:
            return False
        raise


def terminate_instances(aws: Aws, name: str, ids: List[str], echo) -> None:
    if not ids:
        return
    aws.call("ec2", "terminate_instances", InstanceIds=list(ids))
    if aws.dry_run:
        return
    wanted = set(ids)

    def remaining():
        return [i for i in find_instances(aws, name) if i.id in wanted]

    last = [None]

    def show(left):
        if len(left) != last[0]:
            echo(f"  terminating: {len(ids) - len(left)}/{len(ids)} terminated")
            last[0] = len(left)
    wait.poll(remaining, lambda left: not left, timeout=TERMINATE_TIMEOUT, interval=INTERVAL,
              what=f"{len(ids)} instance(s) of cluster {name} to terminate", progress=show)


def delete_mount_targets(aws: Aws, fs_id: str, mount_ids: List[str]) -> None:
    for mt in mount_ids:
        _ignore_gone(lambda mt=mt: aws.call("efs", "delete_mount_target", MountTargetId=mt))
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


def delete_file_system(aws: Aws, fs_id: str) -> bool:
    return wait.retry_codes(lambda: _ignore_gone(lambda: aws.call("efs", "delete_file_system", FileSystemId=fs_id)),
                            IN_USE, timeout=DELETE_TIMEOUT, interval=INTERVAL, what=f"delete {fs_id}")


def delete_placement_group(aws: Aws, group: str) -> bool:
    return wait.retry_codes(
        lambda: _ignore_gone(lambda: aws.call("ec2", "delete_placement_group", GroupName=group)),
        IN_USE, timeout=DELETE_TIMEOUT, interval=INTERVAL, what=f"delete placement group {group}")


def delete_security_group(aws: Aws, group_id: str) -> bool:
    """DependencyViolation is retried (bounded): terminating instances and deleted mount targets release
    their network interfaces a little after they are reported gone."""
    return wait.retry_codes(
        lambda: _ignore_gone(lambda: aws.call("ec2", "delete_security_group", GroupId=group_id)),
        IN_USE, timeout=DELETE_TIMEOUT, interval=INTERVAL, what=f"delete security group {group_id}")


def delete_key_pair(aws: Aws, key_name: str) -> bool:
    return _ignore_gone(lambda: aws.call("ec2", "delete_key_pair", KeyName=key_name))


def remove(aws: Aws, record: ClusterRecord, echo, remove_local_key: bool) -> List[str]:
    """Delete what `record` holds, in dependency order; returns one line per removed thing."""
    removed: List[str] = []
    present = [i.id for i in record.instances]
    if present:
        if not aws.dry_run:
            echo(f"terminating {len(present)} instance(s): {' '.join(present)}")
        terminate_instances(aws, record.name, present, echo)
        removed.append(f"{len(present)} instance(s): {' '.join(present)}")
    if record.file_system:
        if record.mount_targets:
            delete_mount_targets(aws, record.file_system, [m for m, _ in record.mount_targets])
            removed.append(f"EFS mount target(s): {' '.join(m for m, _ in record.mount_targets)}")
        if delete_file_system(aws, record.file_system):
            removed.append(f"EFS file system {record.file_system}")
    if record.placement_group and delete_placement_group(aws, record.placement_group):
        removed.append(f"placement group {record.placement_group}")
    # The EFS group refers to the cluster group in its NFS rule: it goes first.
    for group in (record.efs_security_group, record.security_group):
        if group and delete_security_group(aws, group):
            removed.append(f"security group {group}")
    if record.key_name and delete_key_pair(aws, record.key_name):
        removed.append(f"key pair {record.key_name}")
    if remove_local_key and not aws.dry_run and state.remove_key(record.name):
        removed.append(f"private key {state.key_path(record.name)}")
    return removed


def down(aws: Aws, record: ClusterRecord, echo) -> List[str]:
    """`launch cluster down`: remove what `record` holds, then the cluster's local state (key, hostfile,
    ssh config) only when the cluster was recorded in the region searched: a `down --region` of another
    region never deletes the key of a cluster that still runs elsewhere. One line per removed thing."""
    recorded = state.read_meta(record.name).get("region")
    own = recorded in (None, aws.region)
    removed = remove(aws, record, echo, remove_local_key=own and bool(record.key_name))
    if aws.dry_run:
        return removed
    if own:
        state.remove_dir(record.name)
    elif state.cluster_dir(record.name).exists():
        echo(f"kept the local state {state.cluster_dir(record.name)}: cluster {record.name} is recorded "
             f"in {recorded}, not {aws.region}")
    return removed
