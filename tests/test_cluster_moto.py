"""`launch cluster` against moto in-process: what a user sees (exit status, lines, files) and what AWS holds."""
from __future__ import annotations

import base64
import os
import stat

import pytest

from mxlaunch.exits import Exit
from aws_fixtures import AMI, CIDR, REGION, TAG, launch, nothing_tagged, plain_client, tagged_everything, up_args

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]


def home(tmp):
    return tmp / "mxlaunch-home" / "clusters"


def test_up_creates_exactly_what_the_contract_says(moto_aws, aws_env):
    r = launch(*up_args("c1", 3, "--max-hours", "2"))
    assert r.code == 0, r.err
    held = tagged_everything("c1")
    # exactly N tagged instances of the type, in one placement group, IMDSv2 required, terminate on shutdown
    assert len(held["instances"]) == 3
    assert {i["InstanceType"] for i in held["instances"]} == {"g5.12xlarge"}
    assert {i["ImageId"] for i in held["instances"]} == {AMI}
    assert {i["MetadataOptions"]["HttpTokens"] for i in held["instances"]} == {"required"}
    ec2 = plain_client("ec2")
    reservations = ec2.describe_instances(Filters=[{"Name": f"tag:{TAG}", "Values": ["c1"]}])["Reservations"]
    assert len(reservations) == 1  # all N from ONE RunInstances call
    iid = held["instances"][0]["InstanceId"]
    assert ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")[
        "InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    assert moto_aws.groups == {"launch-c1": {TAG: "c1", "launch:role": "cluster", "Name": "launch-c1"}}
    # security groups: SSH only from --ssh-cidr, all traffic only from the group; EFS: NFS only from the group
    groups = {g["GroupName"]: g for g in held["security_groups"]}
    assert set(groups) == {"launch-c1", "launch-c1-efs"}
    members, efs_sg = groups["launch-c1"], groups["launch-c1-efs"]
    rules = members["IpPermissions"]
    ssh = [p for p in rules if p.get("FromPort") == 22]
    assert len(ssh) == 1 and [r["CidrIp"] for r in ssh[0]["IpRanges"]] == [CIDR]
    everything = [p for p in rules if p["IpProtocol"] == "-1"]
    assert len(everything) == 1 and not everything[0].get("IpRanges")
    assert [g["GroupId"] for g in everything[0]["UserIdGroupPairs"]] == [members["GroupId"]]
    assert len(rules) == 2
    (nfs,) = efs_sg["IpPermissions"]
    assert (nfs["IpProtocol"], nfs["FromPort"], nfs["ToPort"]) == ("tcp", 2049, 2049)
    assert not nfs.get("IpRanges") and [g["GroupId"] for g in nfs["UserIdGroupPairs"]] == [members["GroupId"]]
    assert efs_sg["IpPermissionsEgress"] == []
    # EFS: encrypted, one mount target in the instances' subnet, guarded by the EFS group
    (fs,) = held["file_systems"]
    assert fs["Encrypted"] is True
    (mt,) = held["mount_targets"]
    assert mt["SubnetId"] == held["instances"][0]["SubnetId"]
    efs = plain_client("efs")
    assert efs.describe_mount_target_security_groups(MountTargetId=mt["MountTargetId"])["SecurityGroups"] == [
        efs_sg["GroupId"]]
    # user data: mounts that EFS at /efs, schedules the shutdown, carries no secret
    data = base64.b64decode(ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"][
        "Value"]).decode()
    assert f"{fs['FileSystemId']}.efs.{REGION}.amazonaws.com:/ /efs" in data
    assert "/etc/mxlaunch/deadline" in data and "mxlaunch-deadline.timer" in data
    key_file = home(aws_env) / "c1" / "id_key"
    key_text = key_file.read_text()
    assert "PRIVATE KEY" in key_text and key_text.strip().splitlines()[1] not in data
    assert "testing" not in data and "AWS_SECRET" not in data
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # key pair tagged; hostfile lists every instance's private address; ssh config maps them to public ones
    assert [k["KeyName"] for k in held["key_pairs"]] == ["launch-c1"]
    hostfile = (home(aws_env) / "c1" / "hosts").read_text()
    private = sorted(i["PrivateIpAddress"] for i in held["instances"])
    assert sorted(line.split()[0] for line in hostfile.splitlines() if line and not line.startswith("#")) == \
        [f"ubuntu@{ip}" for ip in private]
    ssh_config = (home(aws_env) / "c1" / "ssh_config").read_text()
    for i in held["instances"]:
        assert f"{i['PrivateIpAddress']}\n    HostName {i['PublicIpAddress']}" in ssh_config
    assert f"IdentityFile {key_file}" in ssh_config
    assert "c1: 3 x g5.12xlarge" in r.out and "$17.02/h" in r.out  # 3 x 5.672 (estimate)
    assert "estimate" in r.err


def test_up_twice_creates_no_duplicates_and_completes_a_partial_cluster(moto_aws, aws_env):
    assert launch(*up_args("c2", 2)).code == 0
    first = tagged_everything("c2")
    again = launch(*up_args("c2", 2))
    assert again.code == 0, again.err
    assert "nothing to create" in again.err
    second = tagged_everything("c2")
    assert sorted(i["InstanceId"] for i in second["instances"]) == sorted(i["InstanceId"] for i in first["instances"])
    assert len(second["security_groups"]) == 2 and len(second["file_systems"]) == 1
    assert len(second["mount_targets"]) == 1 and len(second["key_pairs"]) == 1
    # one instance gone (e.g. spot reclaimed): up starts only the missing one, in the same zone
    ec2 = plain_client("ec2")
    ec2.terminate_instances(InstanceIds=[first["instances"][0]["InstanceId"]])
    third = launch(*up_args("c2", 2))
    assert third.code == 0, third.err
    held = tagged_everything("c2")
    assert len(held["instances"]) == 2 and len(held["mount_targets"]) == 1
    assert len({i["SubnetId"] for i in held["instances"]}) == 1
    assert "launched 1 x g5.12xlarge" in third.err


def test_more_instances_than_asked_is_likely_a_leak(moto_aws, aws_env):
    assert launch(*up_args("c3", 3)).code == 0
    r = launch(*up_args("c3", 2))
    assert r.code == 0 and "likely a leak" in r.err
    assert len(tagged_everything("c3")["instances"]) == 3  # never terminates on its own
    s = launch("cluster", "status", "c3")
    assert s.code == 0 and "3 live instances, 2 asked: likely a leak" in s.out


def test_a_new_ssh_cidr_replaces_the_old_one(moto_aws, aws_env):
    assert launch(*up_args("cidr", 1)).code == 0
    args = up_args("cidr", 1)
    args[args.index(CIDR)] = "198.51.100.0/24"
    r = launch(*args)
    assert r.code == 0, r.err
    (group,) = [g for g in tagged_everything("cidr")["security_groups"] if g["GroupName"] == "launch-cidr"]
    ssh = [p for p in group["IpPermissions"] if p.get("FromPort") == 22]
    assert [rng["CidrIp"] for p in ssh for rng in p["IpRanges"]] == ["198.51.100.0/24"]
    assert "SSH no longer allowed from 203.0.113.7/32" in r.err


def test_down_removes_everything_tagged_and_is_safe_to_rerun(moto_aws, aws_env):
    assert launch(*up_args("c4", 2)).code == 0
    assert launch(*up_args("other", 1)).code == 0
    r = launch("cluster", "down", "c4", "--yes")
    assert r.code == 0, r.err
    assert nothing_tagged("c4")
    assert "launch-c4" not in moto_aws.groups
    for what in ("2 instance(s)", "EFS file system", "EFS mount target", "placement group launch-c4",
                 "security group", "key pair launch-c4", "private key"):
        assert what in r.out
    assert not (home(aws_env) / "c4").exists()
    # the other cluster is untouched
    assert len(tagged_everything("other")["instances"]) == 1
    again = launch("cluster", "down", "c4", "--yes")
    assert again.code == 0 and "nothing to remove" in again.out


def test_down_without_terminal_and_without_yes_refuses(moto_aws, aws_env):
    assert launch(*up_args("c5", 1)).code == 0
    r = launch("cluster", "down", "c5")
    assert r.code == 2 and "pass --yes" in r.err and len(r.err.strip().splitlines()) == 1
    assert len(tagged_everything("c5")["instances"]) == 1


def test_up_without_terminal_and_without_yes_refuses_and_creates_nothing(moto_aws, aws_env):
    args = [a for a in up_args("c6", 2) if a != "--yes"]
    r = launch(*args)
    assert r.code == 2 and r.err.strip().splitlines()[-1].startswith("launch: error:") and "--yes" in r.err
    assert nothing_tagged("c6") and not moto_aws.groups


@pytest.mark.parametrize("args, code, words", [
    (["--instance-type", "p2.16xlarge", "--count", "1"], 2, ["retired", "g5.48xlarge", "2x"]),
    (["--instance-type", "p3.8xlarge", "--count", "1"], 2, ["not supported by the current Deep Learning AMI's NVIDIA "
                                                            "driver", "g5.12xlarge"]),
    (["--instance-type", "g2.2xlarge", "--count", "1"], 2, ["retired", "g5.xlarge"]),
    (["--instance-type", "x9.huge", "--count", "1"], 2, ["unknown", "g4dn"]),
    (["--instance-type", "g5.xlarge", "--count", "0"], 2, ["--count", "at least 1"]),
    (["--instance-type", "g5.xlarge", "--count", "1", "--ssh-cidr", "10.0.0.300/32"], 2, ["--ssh-cidr"]),
    (["--instance-type", "g5.xlarge", "--count", "1", "--ssh-cidr", "10.1.2.3/8"], 2, ["did you mean 10.0.0.0/8"]),
    (["--instance-type", "g5.xlarge", "--count", "1", "--region", "mars-north-1"], 2, ["unknown AWS region"]),
    (["--instance-type", "g5.xlarge", "--count", "1", "--ami", "not-an-ami"], 2, ["--ami"]),
])
def test_bad_input_is_one_line_and_creates_nothing(moto_aws, aws_env, args, code, words):
    base = ["cluster", "up", "bad", "--ssh-cidr", CIDR, "--yes", "--wait", "none"]
    if "--ssh-cidr" in args:
        base = ["cluster", "up", "bad", "--yes", "--wait", "none"]
    r = launch(*base, *args)
    assert r.code == code, r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("launch: error:"), r.err
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in r.err
    assert nothing_tagged("bad") and not (home(aws_env) / "bad").exists()


def test_missing_credentials_is_one_line_own_exit_status_nothing_created(moto_aws, aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    r = launch(*up_args("nocreds", 1))
    assert r.code == Exit.AWS_CREDENTIALS, r.err
    assert r.err.strip().splitlines()[-1].startswith("launch: error: no AWS credentials")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert nothing_tagged("nocreds")


def test_dry_run_prints_every_call_and_creates_nothing(moto_aws, aws_env):
    r = launch(*up_args("dry", 4, "--spot", "--dry-run"))
    assert r.code == 0, r.err
    for call in ("reads  ec2.DescribeInstances", "would call  ec2.CreateKeyPair", "would call  ec2.CreateSecurityGroup",
                 "would call  ec2.AuthorizeSecurityGroupIngress", "would call  ec2.CreatePlacementGroup",
                 "would call  efs.CreateFileSystem", "would call  ec2.RunInstances", "would call  efs.CreateMountTarget"):
        assert call in r.out, call
    run = next(line for line in r.out.splitlines() if "RunInstances" in line)
    assert "MinCount=4" in run and "'MarketType': 'spot'" in run and "'HttpTokens': 'required'" in run
    assert nothing_tagged("dry") and not moto_aws.groups and not (home(aws_env) / "dry").exists()


def test_spot_and_no_efs_no_placement_group(moto_aws, aws_env):
    r = launch(*up_args("sp", 2, "--spot", "--no-efs", "--no-placement-group"))
    assert r.code == 0, r.err
    held = tagged_everything("sp")
    assert {i.get("InstanceLifecycle") for i in held["instances"]} == {"spot"}
    assert not held["file_systems"] and [g["GroupName"] for g in held["security_groups"]] == ["launch-sp"]
    assert not moto_aws.groups
    ec2 = plain_client("ec2")
    data = base64.b64decode(ec2.describe_instance_attribute(InstanceId=held["instances"][0]["InstanceId"],
                                                            Attribute="userData")["UserData"]["Value"]).decode()
    assert "nfs4" not in data and "shutdown" not in data
    assert launch("cluster", "down", "sp", "--yes").code == 0 and nothing_tagged("sp")


def test_status_list_hostfile_ssh(moto_aws, aws_env, monkeypatch, tmp_path):
    assert launch(*up_args("st", 2, "--max-hours", "1.5")).code == 0
    held = tagged_everything("st")
    s = launch("cluster", "status", "st")
    assert s.code == 0, s.err
    for i in held["instances"]:
        assert i["InstanceId"] in s.out
    assert "running" in s.out and "4 x NVIDIA A10G" in s.out and "$11.34/h" in s.out and "so far" in s.out
    assert "deadline: 2 instance(s) terminate themselves at" in s.out
    lst = launch("cluster", "list")
    assert lst.code == 0 and "st " in lst.out and "running:2" in lst.out and "8 " in lst.out
    out_file = tmp_path / "hosts.txt"
    h = launch("cluster", "hostfile", "st", "-o", out_file)
    assert h.code == 0 and out_file.read_text() == h.out
    assert sorted(line.split()[0] for line in h.out.splitlines() if not line.startswith("#")) == \
        sorted(f"ubuntu@{i['PrivateIpAddress']}" for i in held["instances"])
    p = launch("cluster", "ssh", "st", "1", "--print")
    assert p.code == 0 and p.out.strip() == f"ssh -F {home(aws_env) / 'st' / 'ssh_config'} st-1"
    ran = []
    monkeypatch.setattr(os, "execvp", lambda prog, argv: ran.append(argv))  # never connects
    assert launch("cluster", "ssh", "st").code == 0 and ran == [["ssh", "-F", str(home(aws_env) / "st" / "ssh_config"),
                                                                 "st-0"]]
    bad = launch("cluster", "ssh", "st", "5", "--print")
    assert bad.code == 2 and "0..1" in bad.err
    missing = launch("cluster", "status", "nosuch")
    assert missing.code == 1 and "no cluster nosuch" in missing.err


def test_cluster_target_for_launch_train(moto_aws, aws_env):
    assert launch(*up_args("tg", 2)).code == 0
    from mxlaunch.infra.cloud.cluster_target import cluster_target
    from mxlaunch.infra.transport.ssh import SSHOptions
    t = cluster_target("tg")
    held = tagged_everything("tg")
    assert sorted(h.address for h in t.hosts) == sorted(i["PrivateIpAddress"] for i in held["instances"])
    assert {h.slots for h in t.hosts} == {1} and {h.user for h in t.hosts} == {"ubuntu"}
    assert t.gpus_per_host == 4
    assert t.workdir.startswith("/efs/") and t.python == "/efs/mxlaunch/venv/bin/python"
    assert t.ssh.key == str(home(aws_env) / "tg" / "id_key") and os.path.exists(t.ssh.config_path)
    assert (t.ssh.user, t.ssh.known_hosts, t.cluster, t.local) == (
        "ubuntu", str(home(aws_env) / "tg" / "known_hosts"), "tg", False)
    mine = cluster_target("tg", workdir="/scratch", python="/opt/bin/python", ssh=SSHOptions(user="me"))
    assert (mine.workdir, mine.python, mine.ssh.user, mine.ssh.config_path) == (
        "/scratch", "/opt/bin/python", "me", t.ssh.config_path)  # the user's values win; the ssh config stays


def test_existing_key_name_is_used_and_never_deleted(moto_aws, aws_env):
    ec2 = plain_client("ec2")
    ec2.create_key_pair(KeyName="mine")
    missing = launch(*up_args("kn", 1, "--key-name", "nosuch"))
    assert missing.code == 2 and "--key-name nosuch: no such key pair" in missing.err and nothing_tagged("kn")
    r = launch(*up_args("kn", 1, "--key-name", "mine"))
    assert r.code == 0, r.err
    assert {i["KeyName"] for i in tagged_everything("kn")["instances"]} == {"mine"}
    assert not tagged_everything("kn")["key_pairs"] and not (home(aws_env) / "kn" / "id_key").exists()
    assert "IdentityFile" not in (home(aws_env) / "kn" / "ssh_config").read_text()
    assert launch("cluster", "down", "kn", "--yes").code == 0 and nothing_tagged("kn")
    assert ec2.describe_key_pairs(KeyNames=["mine"])["KeyPairs"][0]["KeyName"] == "mine"  # still there


def test_region_is_remembered_and_one_name_lives_in_one_region(moto_aws, aws_env):
    assert launch(*up_args("rg", 1, "--region", "eu-west-1")).code == 0
    s = launch("cluster", "status", "rg")  # no --region: the cluster's own, not AWS_DEFAULT_REGION
    assert s.code == 0 and "cluster rg (eu-west-1)" in s.out
    other = launch(*up_args("rg", 1, "--region", "us-west-2"))
    assert other.code == 2 and "already exists in eu-west-1" in other.err
    assert not tagged_everything("rg", region="us-west-2")["instances"]
    lst = launch("cluster", "list")  # us-east-1
    assert "cluster rg is in eu-west-1" in lst.err
    assert launch("cluster", "down", "rg", "--yes").code == 0
    assert not any(tagged_everything("rg", region="eu-west-1").values())


def test_ipv6_ssh_cidr_is_refused_and_open_world_warning(moto_aws, aws_env):
    args = up_args("v6", 1, "--no-efs")
    args[args.index(CIDR)] = "2001:db8::/32"
    r = launch(*args)  # the default VPC and its instances have no IPv6: such a rule could never match
    assert r.code == Exit.USAGE and "IPv6" in r.err.strip().splitlines()[-1]
    assert nothing_tagged("v6")
    args[args.index("2001:db8::/32")] = "0.0.0.0/0"
    assert "whole internet" in launch(*args).err
