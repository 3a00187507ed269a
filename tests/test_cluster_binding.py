"""A cluster is (account, partition, region, name) (moto in-process; --wait running): recorded at creation in
cluster.json and in its tags, checked by every command that acts before anything is read or changed. Another
account's credentials come from moto's STS AssumeRole (its credentials act in the role's account: moto keys
them to the account in the role's ARN), as `--profile prod` or an SSO session of another account would.
The deadline and the shutdown behaviour of every instance: tests/test_cluster_deadline.py."""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from aws_fixtures import AMI, REGION, TAG, launch, plain_client, tagged_everything, up_args
from mxlaunch.exits import Exit

pytestmark = [pytest.mark.aws, pytest.mark.timeout(120)]
ACCOUNT = "123456789012"  # moto's default: what the fixtures' credentials act in
OTHER = "111111111111"


def state_of(home: Path, name: str) -> dict:
    """Every file of the cluster's local state, with its bytes."""
    folder = home / "clusters" / name
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def running_ids(name: str, region: str = REGION) -> list:
    return sorted(i["InstanceId"] for i in tagged_everything(name, region)["instances"]
                  if i["State"]["Name"] == "running")


def another_account(monkeypatch) -> boto3.Session:
    """This process's credentials become those of a role in account OTHER (what `launch` reads from the
    environment); returns a session with them, to look into that account."""
    creds = plain_client("sts").assume_role(RoleArn=f"arn:aws:iam::{OTHER}:role/prod",
                                            RoleSessionName="prod")["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", creds["SessionToken"])
    return boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                         aws_session_token=creds["SessionToken"], region_name=REGION)


class Calls:
    """The operations every client of the AWS boundary makes, in order."""

    def __init__(self):
        self.ops = []

    def install(self, client) -> None:
        client.meta.events.register("provide-client-params", self._record)

    def _record(self, event_name, **_):
        self.ops.append(event_name.rsplit(".", 1)[1])


def test_up_records_the_account_partition_and_region_in_cluster_json_and_its_tags(moto_aws, aws_env):
    assert launch(*up_args("rec", 1)).code == 0
    meta = json.loads((aws_env / "mxlaunch-home" / "clusters" / "rec" / "cluster.json").read_text())
    assert (meta["account"], meta["partition"], meta["region"]) == (ACCOUNT, "aws", REGION)
    held = tagged_everything("rec")
    (group,) = [g for g in held["security_groups"] if g["GroupName"] == "launch-rec"]
    for resource in [group] + held["instances"]:
        tags = {t["Key"]: t["Value"] for t in resource["Tags"]}
        assert (tags["launch:account"], tags["launch:region"]) == (f"aws/{ACCOUNT}", REGION)
        assert "@" in tags["launch:origin"] and tags["launch:created"].startswith("20")
    assert launch("cluster", "down", "rec", "--yes").code == 0


def test_credentials_of_another_account_are_refused_by_every_command_and_touch_nothing(
        moto_aws, aws_env, monkeypatch, tmp_path):
    assert launch(*up_args("acct", 2)).code == 0
    home = aws_env / "mxlaunch-home"
    before, ids = state_of(home, "acct"), running_ids("acct")
    assert len(ids) == 2 and "id_key" in before
    prod = another_account(monkeypatch)
    assert prod.client("sts").get_caller_identity()["Account"] == OTHER  # moto: really another account
    (tmp_path / "data.rec").write_bytes(b"x")
    for args in (["cluster", "down", "acct", "--yes"], up_args("acct", 2), ["cluster", "repair", "acct"],
                 ["cluster", "ssh", "acct", "0", "--print"], ["cluster", "hostfile", "acct"],
                 ["cluster", "exec", "acct", "--", "true"], ["cluster", "put", "acct", tmp_path / "data.rec"],
                 ["train", "--cluster", "acct", "-n", "1", "--dry-run", "--", "trainer", "fit"],
                 ["runs", "--cluster", "acct"], ["logs", "--cluster", "acct", "run-1"],
                 ["stop", "--cluster", "acct", "run-1"]):
        r = launch(*args)
        assert r.code == Exit.USAGE, (args, r)
        (line,) = r.err.strip().splitlines()
        assert line.startswith(f"launch: error: cluster acct lives in account {ACCOUNT} (aws), region {REGION} "
                               f"(its local state: {home / 'clusters' / 'acct'}); these credentials and region act "
                               f"in account {OTHER} (aws), region {REGION}: refusing to "), (args, line)
    assert state_of(home, "acct") == before  # the key above all: byte for byte
    assert running_ids("acct") == ids
    flt = [{"Name": f"tag:{TAG}", "Values": ["acct"]}]
    assert not prod.client("ec2").describe_instances(Filters=flt)["Reservations"]
    assert not prod.client("ec2").describe_security_groups(Filters=flt)["SecurityGroups"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    r = launch("cluster", "down", "acct", "--yes")  # its own account: removed, and its local state with it
    assert r.code == 0 and not (home / "clusters" / "acct").exists(), r.err


def test_a_same_named_cluster_in_another_region_is_refused_at_once(moto_aws, aws_env, monkeypatch, hooks):
    """Alice's live1 in us-east-1 (her state); Bob's live1 in us-west-2 (his state, another HOME)."""
    alice, bob = aws_env / "mxlaunch-home", aws_env / "bob-home"
    assert launch(*up_args("live1", 1)).code == 0
    monkeypatch.setenv("MXLAUNCH_HOME", str(bob))
    assert launch(*up_args("live1", 1, "--region", "us-west-2")).code == 0
    monkeypatch.setenv("MXLAUNCH_HOME", str(alice))
    mine, theirs = state_of(alice, "live1"), state_of(bob, "live1")
    east, west = running_ids("live1"), running_ids("live1", "us-west-2")
    calls = Calls()
    hooks.append(calls)
    for args in (["cluster", "repair", "live1", "--region", "us-west-2", "--replace-unreachable"],
                 ["cluster", "down", "live1", "--region", "us-west-2", "--yes"]):
        r = launch(*args)
        assert r.code == Exit.USAGE and r.out == "", (args, r)
        (line,) = r.err.strip().splitlines()
        assert f"cluster live1 lives in account {ACCOUNT} (aws), region us-east-1" in line
        assert f"act in account {ACCOUNT} (aws), region us-west-2: refusing to " in line
    assert set(calls.ops) == {"GetCallerIdentity"}  # at once: nothing read, let alone changed
    assert running_ids("live1") == east and running_ids("live1", "us-west-2") == west
    assert state_of(alice, "live1") == mine and state_of(bob, "live1") == theirs
    assert launch("cluster", "down", "live1", "--yes").code == 0
    monkeypatch.setenv("MXLAUNCH_HOME", str(bob))
    assert launch("cluster", "down", "live1", "--yes").code == 0  # his, from his state: its region recorded
    assert not tagged_everything("live1", "us-west-2")["instances"]


def test_a_cluster_json_without_an_account_is_bound_where_its_cluster_is_found(moto_aws, aws_env, monkeypatch):
    """A cluster.json of an older mxlaunch: found in the caller's account, the account is recorded; found
    nowhere, no command can tell gone from elsewhere: `down` keeps the key and `up` binds nothing, unless --force."""
    assert launch(*up_args("old", 1)).code == 0
    path = aws_env / "mxlaunch-home" / "clusters" / "old" / "cluster.json"
    older = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("account", "partition")}
    path.write_text(json.dumps(older))
    key = (path.parent / "id_key").read_bytes()
    another_account(monkeypatch)
    r = launch("cluster", "down", "old", "--yes")
    assert r.code == Exit.USAGE and "names no account, and nothing of it is in account 111111111111" in r.err
    assert (path.parent / "id_key").read_bytes() == key and running_ids("old")
    r = launch(*up_args("old", 1))  # would bind the state here, and the `down` it suggests would drop the key
    assert r.code == Exit.USAGE and "names no account, and nothing of it is in account 111111111111" in r.err
    assert json.loads(path.read_text()) == older and (path.parent / "id_key").read_bytes() == key
    assert launch("cluster", "down", "old", "--yes").code == Exit.USAGE
    assert (path.parent / "id_key").read_bytes() == key and running_ids("old")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    assert launch("cluster", "status", "old").code == 0  # reads only: nothing recorded yet
    assert "account" not in json.loads(path.read_text())
    assert launch("cluster", "ssh", "old", "0", "--print").code == 0  # found here: its account is recorded
    assert json.loads(path.read_text())["account"] == ACCOUNT
    assert launch("cluster", "down", "old", "--yes").code == 0 and not path.parent.exists()


def test_up_never_unlinks_an_existing_key(moto_aws, aws_env):
    """The key pair went behind mxlaunch's back (the instances and the rest stay): `up` does not take the key
    for stale; `down` removes it once the cluster is gone."""
    assert launch(*up_args("kp", 1)).code == 0
    key = aws_env / "mxlaunch-home" / "clusters" / "kp" / "id_key"
    held = key.read_bytes()
    plain_client("ec2").delete_key_pair(KeyName="launch-kp")
    r = launch(*up_args("kp", 1))
    assert r.code == Exit.FAILED and key.read_bytes() == held
    assert r.err.strip().splitlines()[-1] == (
        f"launch: error: cluster kp: a private key {key} is here but no key pair launch-kp in us-east-1; nothing "
        f"was created. `launch cluster down kp` removes it once it has checked the cluster is gone, or pass "
        f"--key-name")
    assert not tagged_everything("kp")["key_pairs"] and len(running_ids("kp")) == 1
    r = launch("cluster", "down", "kp", "--yes")
    assert r.code == 0 and not key.exists() and not any(tagged_everything("kp").values())


def test_the_dry_run_of_up_binds_nothing(moto_aws, aws_env):
    r = launch(*up_args("dry", 1), "--dry-run")
    assert r.code == 0 and "reads  sts.GetCallerIdentity" in r.out
    assert not (aws_env / "mxlaunch-home" / "clusters" / "dry").exists()


def test_a_fresh_up_refused_by_its_preflight_leaves_no_local_state(moto_aws, aws_env):
    args = up_args("pre", 1)
    args[args.index(AMI)] = "ami-12345678"  # moto has no such image: refused before anything is created
    assert launch(*args).code == Exit.USAGE
    assert not (aws_env / "mxlaunch-home" / "clusters" / "pre").exists()
