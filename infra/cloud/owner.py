"""Who owns a cluster: recorded at creation as two tags (spec.OWNER_TAG: the caller's AWS identity from STS;
spec.OWNER_ID_TAG: the local id of the mxlaunch state directory that ran `up`), checked before `up`, `down`
and `ssh` act on an existing cluster, so that two users of one account who pick the same name cannot
terminate, take over or lock each other out of a cluster without saying `--force`.

Same owner: the same AWS identity OR the same local id. Either alone is enough because each can change
legitimately: a role session name that botocore makes up per session (`botocore-session-<time>`) changes
the ARN; a second machine of the same IAM user has another local id.
"""
from __future__ import annotations

import os
import uuid
from typing import Callable, Optional

from mxlaunch.errors import CommandError, UsageError

from mxlaunch.infra.cloud import local_state
from mxlaunch.infra.cloud.aws import Aws
from mxlaunch.infra.cloud.record import find_instances, tag_filter
from mxlaunch.infra.cloud.spec import ROLE_TAG, Owner


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


def current(aws: Aws) -> Owner:
    """Who is calling: STS GetCallerIdentity (needs no permission) and this state directory's id."""
    return Owner(arn=aws.call("sts", "get_caller_identity")["Arn"], local_id=local_id())


def recorded(aws: Aws, name: str) -> Optional[Owner]:
    """The owner recorded on the cluster's security group (made first, removed last), else on an instance."""
    for group in aws.paginate("ec2", "describe_security_groups", "SecurityGroups", Filters=tag_filter(name)):
        tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
        if tags.get(ROLE_TAG, "cluster") == "cluster" and Owner.from_tags(tags):
            return Owner.from_tags(tags)
    for instance in find_instances(aws, name):
        if Owner.from_tags(dict(instance.tags)):
            return Owner.from_tags(dict(instance.tags))
    return None


def check(aws: Aws, name: str, action: str, force: bool, echo: Callable[[str], None]) -> tuple:
    """(caller, foreign): refuses (one line, exit 2) to `action` a cluster another owner recorded, unless
    `force`; `foreign` says the caller goes on with --force on someone else's cluster."""
    me = current(aws)
    theirs = recorded(aws, name)
    if theirs is None or theirs.same(me):
        return me, False
    whose = f"cluster {name} in {aws.region} belongs to {theirs.arn} (mxlaunch id {theirs.local_id})"
    if not force:
        raise UsageError(f"{whose}, not to you ({me.arn}, id {me.local_id}): refusing to {action} it; choose "
                         f"another name, or pass --force to {action} it anyway")
    echo(f"warning: {whose}; --force: {action} it anyway")
    return me, True
