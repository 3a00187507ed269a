"""Two users of one account, one cluster name (moto; --wait running). The owner is recorded at creation
(launch:owner = the caller's ARN, launch:owner-id = the local mxlaunch id, launch:origin = user@host,
launch:created); `up`, `down` and `ssh` on a cluster someone else owns refuse with one line unless --force, and
--force never takes the owner's SSH rule away; `up` changing and `down` removing a cluster need --force on a
machine that holds no local state of it, whoever the caller is. moto's STS always answers one ARN: a second
user is a hook answering GetCallerIdentity, plus another MXLAUNCH_HOME (another local id, no copy of the first
user's state)."""
from __future__ import annotations

import pytest

from aws_fixtures import AMI, TAG, launch, plain_client, tagged_everything, up_args
from mxlaunch.exits import Exit
from testkit.aws import HttpStub

pytestmark = pytest.mark.aws
KNOWN_AMI = "ami-12c6146b"  # an image moto's DescribeImages knows (`up` checks the image exists)
BOB = "arn:aws:iam::123456789012:user/bob"


def up(name, count, *extra):
    args = up_args(name, count, *extra)
    args[args.index(AMI)] = KNOWN_AMI
    return launch(*args)


class CallerIs:
    """Answer sts:GetCallerIdentity with another identity (before-call short-circuit)."""

    def __init__(self, arn: str):
        self.arn = arn

    def install(self, client) -> None:
        if client.meta.service_model.service_name == "sts":
            client.meta.events.register("before-call.sts.GetCallerIdentity", self._answer)

    def _answer(self, **_):
        return HttpStub(200), {"Arn": self.arn, "Account": "123456789012", "UserId": "AIDBOB",
                               "ResponseMetadata": {"HTTPStatusCode": 200}}


def become(monkeypatch, hooks, tmp_path, who: str, arn=None):
    """Switch to another user: their own MXLAUNCH_HOME (local id) and, with `arn`, their own AWS identity."""
    monkeypatch.setenv("MXLAUNCH_HOME", str(tmp_path / f"home-{who}"))
    hooks[:] = [h for h in hooks if not isinstance(h, CallerIs)]
    if arn:
        hooks.append(CallerIs(arn))


def ssh_cidrs(name):
    (group,) = [g for g in tagged_everything(name)["security_groups"] if not g["GroupName"].endswith("-efs")]
    return sorted(r["CidrIp"] for p in group["IpPermissions"] if p.get("FromPort") == 22 for r in p["IpRanges"])


def test_owner_is_recorded_on_the_security_group_and_the_instances(moto_aws, aws_env):
    assert up("own1", 2).code == 0
    held = tagged_everything("own1")
    local_id = (aws_env / "mxlaunch-home" / "owner-id").read_text().strip()
    for resource in [g for g in held["security_groups"] if g["GroupName"] == "launch-own1"] + held["instances"]:
        tags = {t["Key"]: t["Value"] for t in resource["Tags"]}
        assert tags["launch:owner"] == "arn:aws:sts::123456789012:user/moto"
        assert tags["launch:owner-id"] == local_id and len(local_id) == 32
    s = launch("cluster", "status", "own1")
    assert f"owner: arn:aws:sts::123456789012:user/moto (mxlaunch id {local_id})" in s.out
    assert launch("cluster", "down", "own1", "--yes").code == 0


def test_another_user_is_refused_up_down_and_ssh_and_force_keeps_the_owners_ssh_rule(
        moto_aws, aws_env, monkeypatch, hooks, tmp_path):
    assert up("shared", 1).code == 0  # Alice
    alice_ids = sorted(i["InstanceId"] for i in tagged_everything("shared")["instances"])
    become(monkeypatch, hooks, tmp_path, "bob", BOB)
    bob_cidr = "198.51.100.9/32"
    for args in (up_args("shared", 2, "--ssh-cidr", bob_cidr), ["cluster", "down", "shared", "--yes"],
                 ["cluster", "ssh", "shared", "0", "--print"]):
        if args[1] == "up":
            args[args.index(AMI)] = KNOWN_AMI
        r = launch(*args)
        assert r.code == Exit.USAGE, r
        (line,) = r.err.strip().splitlines()[-1:]
        if args[1] == "ssh":  # not destructive: only whose it is matters
            assert "cluster shared in us-east-1 belongs to arn:aws:sts::123456789012:user/moto" in line
            assert BOB in line
        else:  # Bob's machine holds no local state of it: who made it, from where, when
            assert "cluster shared in us-east-1 was created by arn:aws:sts::123456789012:user/moto" in line
            assert " from " in line and " at 20" in line and "holds no local state" in line
        assert "--force" in line
        assert len([x for x in r.err.splitlines() if x.startswith("launch: error")]) == 1
    # nothing changed: Alice's instances, her SSH rule
    assert sorted(i["InstanceId"] for i in tagged_everything("shared")["instances"]) == alice_ids
    assert ssh_cidrs("shared") == ["203.0.113.7/32"]
    # Bob insists, with his own key pair: he adds an instance and his SSH rule; Alice's rule stays
    plain_client("ec2").create_key_pair(KeyName="bob-key")
    r = up("shared", 2, "--ssh-cidr", bob_cidr, "--key-name", "bob-key", "--force")
    assert r.code == 0, r.err
    assert "warning: cluster shared in us-east-1 was created by" in r.err
    assert ssh_cidrs("shared") == ["198.51.100.9/32", "203.0.113.7/32"]
    assert len(tagged_everything("shared")["instances"]) == 2
    r = launch("cluster", "down", "shared", "--yes", "--force")
    assert r.code == 0 and not tagged_everything("shared")["instances"]


def test_the_same_state_under_another_session_is_the_owner(moto_aws, aws_env, hooks):
    """Alice's next role session (botocore-session-<time>): another ARN, her local id and her local state."""
    assert up("same-id", 1).code == 0
    hooks.append(CallerIs("arn:aws:sts::123456789012:assumed-role/Admin/botocore-session-2"))
    r = launch("cluster", "down", "same-id", "--yes")
    assert r.code == 0, r.err
    assert not tagged_everything("same-id")["instances"]


def test_the_same_identity_on_a_machine_without_its_state_needs_force_to_remove_it(
        moto_aws, aws_env, monkeypatch, hooks, tmp_path):
    """A colleague on the same IAM user (or Alice's second machine): her ARN, another HOME, no key."""
    assert up("same-arn", 1).code == 0
    ids = sorted(i["InstanceId"] for i in tagged_everything("same-arn")["instances"])
    home = aws_env / "mxlaunch-home" / "clusters" / "same-arn"
    key = (home / "id_key").read_bytes()
    become(monkeypatch, hooks, tmp_path, "alice2")
    r = launch("cluster", "down", "same-arn", "--yes")
    assert r.code == Exit.USAGE, r
    (line,) = r.err.strip().splitlines()
    assert line.startswith("launch: error: cluster same-arn in us-east-1 was created by "
                           "arn:aws:sts::123456789012:user/moto (mxlaunch id ")
    assert " from " in line and " at 20" in line and "this machine holds no local state of it" in line
    assert line.endswith("refusing to remove it; pass --force to remove it anyway")
    assert sorted(i["InstanceId"] for i in tagged_everything("same-arn")["instances"]) == ids
    assert (home / "id_key").read_bytes() == key
    r = launch("cluster", "down", "same-arn", "--yes", "--force")
    assert r.code == 0, r.err
    assert "warning: cluster same-arn in us-east-1 was created by" in r.err
    assert not tagged_everything("same-arn")["instances"]
    assert (home / "id_key").read_bytes() == key  # the owner's state is on the owner's machine: untouched here


def test_a_cluster_made_before_owners_were_recorded_belongs_to_nobody_but_needs_its_state(
        moto_aws, aws_env, monkeypatch, hooks, tmp_path):
    assert up("legacy", 1).code == 0
    ec2 = plain_client("ec2")
    held = tagged_everything("legacy")
    ids = [g["GroupId"] for g in held["security_groups"]] + [i["InstanceId"] for i in held["instances"]]
    ec2.delete_tags(Resources=ids, Tags=[{"Key": "launch:owner"}, {"Key": "launch:owner-id"}])
    become(monkeypatch, hooks, tmp_path, "bob", BOB)
    r = launch("cluster", "down", "legacy", "--yes")  # nobody's, but Bob holds none of its state
    assert r.code == Exit.USAGE and "records no creator; this machine holds no local state" in r.err
    assert launch("cluster", "down", "legacy", "--yes", "--force").code == 0
    assert not ec2.describe_instances(Filters=[{"Name": f"tag:{TAG}", "Values": ["legacy"]},
                                               {"Name": "instance-state-name", "Values": ["running"]}])[
        "Reservations"]
