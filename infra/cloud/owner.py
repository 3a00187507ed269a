"""Where a cluster lives and who owns it, and the checks every command makes before it acts on one.

A cluster is (partition, account, region, name). `up` records its `Binding` in cluster.json and in tags
(spec.ACCOUNT_TAG, spec.REGION_TAG), and its `Owner` on its security group (made first, removed last) and its
instances: the creator's AWS identity (STS ARN), the local id of the mxlaunch state directory that ran `up`,
user@host and when.

    caller(aws) -> (Owner, Binding)       who calls, and where: STS GetCallerIdentity (needs no permission)
    bound(aws, name, action) -> Owner     cluster.json's binding against the caller's account and region
    check(aws, name, action, force, echo, record=None, destructive=False) -> (Owner, foreign)

`bound` is the whole check of the commands that use a cluster (ssh settings, train --cluster, put, exec, the
--cluster forms of runs/logs/stop): credentials of another account, or --region of another region, would find
another cluster of the same name or none, so they are refused (one line naming both, exit 2) before anything
is read or changed. `check` adds, for the commands that change a cluster (up, down, repair, ssh):
- a destructive command (`destructive`: down, repair, up changing a cluster that exists) from a machine that
  holds no local state of the cluster needs --force, whatever the AWS identity: the line says who created
  it, from where and when;
- a cluster another owner recorded needs --force. Same owner: the same AWS identity OR the same local id.
  Either alone is enough because each can change legitimately: a role session name that botocore makes up
  per session (`botocore-session-<time>`) changes the ARN; a second machine of the same IAM user has another
  local id (and, holding no local state, still needs --force to destroy).
A cluster.json of an older mxlaunch names no account: the first check that finds the cluster in the caller's
account records it there; a destructive command that finds nothing needs --force (it cannot tell "gone"
from "in another account").
"""
from __future__ import annotations

import dataclasses
import getpass
import os
import socket
import uuid
import weakref
from typing import Callable, Optional

from mxlaunch.errors import CommandError, UsageError

from mxlaunch.infra.cloud import local_state
from mxlaunch.infra.cloud.aws import Aws
from mxlaunch.infra.cloud.record import ClusterRecord, find_instances, tag_filter
from mxlaunch.infra.cloud.spec import ROLE_TAG, Binding, Owner

_CALLERS: "weakref.WeakKeyDictionary[Aws, tuple]" = weakref.WeakKeyDictionary()


def local_id() -> str:
    """This state directory's id: made once (random), kept in $MXLAUNCH_HOME/owner-id."""
    path = local_state.owner_id_path()
    try:
        text = path.read_text().strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another `launch` made it in between
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(uuid.uuid4().hex + "\n")
    return path.read_text().strip()


def origin() -> str:
    """user@host of this machine, as a cluster's creator is shown to others."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        user = "?"
    return f"{user}@{socket.gethostname() or '?'}"


def caller(aws: Aws) -> tuple:
    """(Owner, Binding) of whoever calls through `aws`: STS GetCallerIdentity, once per Aws."""
    if aws not in _CALLERS:
        who = aws.call("sts", "get_caller_identity")
        arn = who["Arn"]
        partition = arn.split(":")[1] if arn.startswith("arn:") and arn.count(":") >= 5 else "aws"
        _CALLERS[aws] = (Owner(arn=arn, local_id=local_id(), origin=origin()),
                         Binding(partition=partition, account=who["Account"], region=aws.region))
    return _CALLERS[aws]


def current(aws: Aws) -> Owner:
    """Who is calling: the AWS identity and this state directory's id."""
    return caller(aws)[0]


def bound(aws: Aws, name: str, action: str) -> Owner:
    """The caller, when cluster.json of `name` (if any) binds it to the caller's account and region; else a
    UsageError naming both, before anything is read or changed."""
    meta = local_state.read_meta(name)
    me, here = caller(aws)
    there = meta.binding
    if there is not None and there != here:
        mine = f"lives in {there.describe()} (its local state: {local_state.cluster_dir(name)})"
        yours = f"these credentials and region act in {here.describe()}"
    elif there is None and meta.region and meta.region != aws.region:
        mine = f"lives in region {meta.region} (its local state: {local_state.cluster_dir(name)})"
        yours = f"this command acts in region {aws.region}"
    else:
        return me
    raise UsageError(f"cluster {name} {mine}; {yours}: refusing to {action} it, nothing was changed; use the "
                     f"cluster's account and region (--profile, --region), or for another cluster of this name "
                     f"another state directory (MXLAUNCH_HOME)")


def recorded(aws: Aws, name: str) -> Optional[Owner]:
    """The owner recorded on the cluster's security group (made first, removed last), else on an instance."""
    for group in aws.paginate("ec2", "describe_security_groups", "SecurityGroups", Filters=tag_filter(name)):
        tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
        if tags.get(ROLE_TAG, "cluster") == "cluster" and Owner.from_tags(tags):
            return Owner.from_tags(tags)
    return _instances_owner(find_instances(aws, name))


def _instances_owner(instances) -> Optional[Owner]:
    return next(filter(None, (Owner.from_tags(dict(i.tags)) for i in instances)), None)


def check(aws: Aws, name: str, action: str, force: bool, echo: Callable[[str], None],
          record: Optional[ClusterRecord] = None, destructive: bool = False) -> tuple:
    """(caller, foreign) once `name` may be acted on (see the module docstring), else a UsageError (exit 2).
    `record`: the cluster as discovered (without it, its owner is looked up); `foreign`: the caller goes on
    with --force, so nothing of the owner's may be taken away (their SSH rule)."""
    me = bound(aws, name, action)
    theirs = (record.owner or _instances_owner(record.instances)) if record is not None else recorded(aws, name)
    exists = not record.empty if record is not None else theirs is not None
    _adopt_legacy(aws, name, action, exists, refuse=not force)
    if destructive and exists and not local_state.holds(name):
        made = f"was created by {theirs.describe()}" if theirs else "records no creator"
        whose = (f"cluster {name} in {aws.region} {made}; this machine holds no local state of it "
                 f"({local_state.cluster_dir(name)})")
        return me, _forced(whose, action, force, echo)
    if theirs is None or theirs.same(me):
        return me, False
    whose = f"cluster {name} in {aws.region} belongs to {theirs.describe()}, not to you ({me.arn}, id {me.local_id})"
    return me, _forced(whose, action, force, echo)


def _forced(whose: str, action: str, force: bool, echo: Callable[[str], None]) -> bool:
    if not force:
        raise UsageError(f"{whose}: refusing to {action} it; pass --force to {action} it anyway")
    echo(f"warning: {whose}; --force: {action} it anyway")
    return True


def _adopt_legacy(aws: Aws, name: str, action: str, exists: bool, refuse: bool) -> None:
    """A cluster.json that names no account (an older mxlaunch's): the account is recorded once the cluster is
    found in the caller's; finding nothing cannot tell "gone" from "elsewhere", so `refuse` (any command
    without --force: an `up` would bind the state to the caller's account, after which `down` removes the key
    of a cluster that lives on elsewhere) refuses then."""
    meta = local_state.read_meta(name)
    if meta.binding is not None or not local_state.meta_path(name).exists():
        return
    _, here = caller(aws)
    if exists:
        local_state.write_meta(name, account=here.account, partition=here.partition, region=here.region)
    elif refuse:
        raise UsageError(f"cluster {name}: its cluster.json ({local_state.meta_path(name)}, from an older mxlaunch) "
                         f"names no account, and nothing of it is in {here.describe()}: it may live in another "
                         f"account; use that account's credentials, or pass --force to {action} it anyway")


def creator(me: Owner, when: str) -> Owner:
    """`me` as the creator of a new cluster, at `when` (ISO-8601 UTC)."""
    return dataclasses.replace(me, created=when)
