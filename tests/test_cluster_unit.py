"""Pure parts of `launch cluster`: catalog, spec validation, error translation, templates, and the SSH/install
step over the fake Connection of testkit.fake_ssh (nothing is ever connected to)."""
from __future__ import annotations

import errno
import shlex
import socket
import subprocess
from pathlib import Path

import botocore.exceptions as bce
import paramiko
import pytest

from aws_fixtures import CIDR, launch, nothing_tagged, tagged_everything, up_args
from mxlaunch.exits import Exit
from mxlaunch.errors import UsageError
from mxlaunch.infra.cloud import aws as awsmod, catalog, install as remote, local_state as state, spec as specs, wait
from mxlaunch.infra.cloud.aws import Aws
from mxlaunch.infra.transport.ssh import SSHConnectError
from mxlaunch.infra.transport.ssh_options import SSHOptions
from testkit.fake_ssh import FakeNetwork

pytestmark = [pytest.mark.aws, pytest.mark.timeout(60)]


@pytest.mark.parametrize("name, gpus", [
    ("g4dn.xlarge", 1), ("g4dn.12xlarge", 4), ("g4dn.metal", 8), ("g5.xlarge", 1), ("g5.12xlarge", 4),
    ("g5.24xlarge", 4), ("g5.48xlarge", 8), ("g6.xlarge", 1), ("g6.12xlarge", 4), ("g6.48xlarge", 8),
    ("g6e.xlarge", 1), ("g6e.12xlarge", 4), ("g6e.48xlarge", 8), ("p4d.24xlarge", 8), ("p4de.24xlarge", 8),
    ("p5.48xlarge", 8), ("p5e.48xlarge", 8), ("p5en.48xlarge", 8)])
def test_catalog_gpu_counts(name, gpus):
    assert catalog.lookup(name).gpus == gpus


def test_every_retired_type_names_a_current_type_with_the_same_gpu_count():
    assert {"g2.2xlarge", "g2.8xlarge", "p2.xlarge", "p2.8xlarge", "p2.16xlarge", "p3.2xlarge", "p3.8xlarge",
            "p3.16xlarge"} <= set(catalog.RETIRED)
    for r in catalog.RETIRED.values():
        assert catalog.CATALOG[r.instead].gpus * r.count == r.gpus, r
        # p3 still exists on EC2: what stops it is the Deep Learning AMI's driver, and the line says so
        why = "not supported by the current Deep Learning AMI's NVIDIA driver" if r.name.startswith("p3") else \
            "retired by AWS"
        with pytest.raises(UsageError, match=f"{why}.*{r.instead}"):
            catalog.lookup(r.name)


def test_unknown_types_and_price_labels():
    with pytest.raises(UsageError, match="g5 sizes: g5.xlarge"):
        catalog.lookup("g5.3xlarge")
    with pytest.raises(UsageError, match="unknown GPU instance type t3.micro"):
        catalog.lookup("t3.micro")
    assert "estimate" in catalog.price_text(catalog.lookup("g5.xlarge"), 2)
    assert "$2.01/h" in catalog.price_text(catalog.lookup("g5.xlarge"), 2)
    assert "no price estimate" in catalog.price_text(catalog.lookup("p5e.48xlarge"))


def test_spec_validation():
    s = specs.build("ok-1", "G5.XLARGE", 2, "198.51.100.4")
    assert s.ssh_cidr == "198.51.100.4/32" and s.instance_type == "g5.xlarge" and s.use_placement_group
    assert specs.build("v6", "g5.xlarge", 1, "2001:db8::/32").ssh_cidr == "2001:db8::/32"
    assert not specs.build("one", "g5.xlarge", 1, CIDR).use_placement_group  # one instance: nothing to place
    assert specs.build("mh", "g5.xlarge", 1, CIDR, max_hours=1.01).max_minutes == 61
    for bad in [dict(name="Bad_Name"), dict(count=-1), dict(ssh_cidr="1.2.3.4/33"), dict(ssh_cidr=None),
                dict(max_hours=0.0), dict(ami="ami-xyz")]:
        args = dict(name="ok", instance_type="g5.xlarge", count=1, ssh_cidr=CIDR)
        extra = {k: bad.pop(k) for k in list(bad) if k in ("max_hours", "ami")}
        args.update(bad)
        with pytest.raises(UsageError):
            specs.build(args.pop("name"), args.pop("instance_type"), args.pop("count"), args.pop("ssh_cidr"),
                        **extra)


def test_error_translation_is_one_typed_line():
    e = awsmod.translate(bce.NoCredentialsError(), "ec2.DescribeInstances")
    assert isinstance(e, awsmod.NoCredentials) and e.exit_code == Exit.AWS_CREDENTIALS

    def client_error(code):
        return bce.ClientError({"Error": {"Code": code, "Message": "why\nnot"}}, "RunInstances")
    for code, kind, exit_code in [("UnauthorizedOperation", awsmod.PermissionDenied, Exit.AWS_DENIED),
                                  ("VcpuLimitExceeded", awsmod.QuotaExceeded, Exit.AWS_QUOTA),
                                  ("InsufficientInstanceCapacity", awsmod.CapacityUnavailable, Exit.AWS_CAPACITY),
                                  ("AuthFailure", awsmod.NoCredentials, Exit.AWS_CREDENTIALS),
                                  ("OptInRequired", awsmod.OptInRequired, Exit.AWS_DENIED),
                                  ("PendingVerification", awsmod.AwsError, Exit.AWS_ERROR),
                                  ("InsufficientFreeAddressesInSubnet", awsmod.CapacityUnavailable, Exit.AWS_CAPACITY),
                                  ("AuthFailure.ServiceLinkedRoleCreationNotPermitted", awsmod.PermissionDenied,
                                   Exit.AWS_DENIED),
                                  ("SomethingElse", awsmod.AwsError, Exit.AWS_ERROR)]:
        e = awsmod.translate(client_error(code), "ec2.RunInstances")
        assert type(e) is kind and e.exit_code == exit_code and e.code == code
        assert "\n" not in e.format_message() and "ec2.RunInstances" in e.format_message()


@pytest.mark.parametrize("code, words", [
    ("OptInRequired", ["opt in", "region", "Marketplace", "subscribe", "--ami"]),
    ("PendingVerification", ["verifying your account", "try again"]),
    ("InsufficientFreeAddressesInSubnet", ["no free address"]),
    ("AuthFailure.ServiceLinkedRoleCreationNotPermitted", ["service-linked role", "spot.amazonaws.com",
                                                           "iam:CreateServiceLinkedRole"]),
])
def test_codes_with_a_meaning_of_their_own_say_it_and_what_to_do(code, words):
    e = awsmod.translate(bce.ClientError({"Error": {"Code": code, "Message": "AWS's words"}}, "RunInstances"),
                         "ec2.RunInstances")
    line = e.format_message()
    assert all(w in line for w in words), line
    assert f"ec2.RunInstances: {code}: AWS's words" in line  # AWS's own code and message stay


def test_a_missing_credential_has_a_code_no_retry_rule_names():
    e = awsmod.translate(bce.NoCredentialsError(), "ec2.RunInstances")
    assert e.code == "NoCredentials"
    from mxlaunch.infra.cloud import run_instances
    assert e.code not in run_instances.LAUNCH_RETRY.codes | awsmod.CONSISTENCY.codes | awsmod.JUST_CREATED_DENIED.codes


@pytest.mark.parametrize("region, partition", [("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")])
def test_a_region_of_another_partition_is_refused_in_one_line(aws_env, region, partition):
    with pytest.raises(UsageError, match=f"region {region} is in the {partition} partition"):
        Aws(region=region)
    r = launch(*up_args("part", 1), "--region", region)
    assert r.code == Exit.USAGE and r.err.count("\n") == 1, r.err
    assert f"{partition} partition" in r.err and "aws partition only" in r.err


def test_region_must_exist(aws_env, monkeypatch):
    with pytest.raises(awsmod.UnknownRegion, match="mars-1"):
        Aws(region="mars-1")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(UsageError, match="no AWS region"):
        Aws()
    assert Aws(region="eu-west-1").region == "eu-west-1"


def pip_wheel(argv, **_):
    """The local runner of the wheel build: a stand-in wheel (any other local command fails the test)."""
    assert argv[1:3] == ["-m", "pip"] and "wheel" in argv, argv
    (Path(argv[argv.index("-w") + 1]) / "mxlaunch-0.1.0-py3-none-any.whl").write_text("wheel")
    return subprocess.CompletedProcess(argv, 0, "", "")


def ssh_options(tmp_path) -> SSHOptions:
    return SSHOptions(user="ubuntu", known_hosts=str(tmp_path / "known_hosts"), accept_new=True, config_path=None)


def test_ssh_wait_and_install_commands(tmp_path, monkeypatch):
    monkeypatch.setattr(wait, "SLEEP", lambda s: None)
    net = FakeNetwork()
    net.fail("c-0", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), times=1)  # booting
    lines = []
    hosts = [("c-0", "198.51.100.1"), ("c-1", "198.51.100.2")]
    remote.wait_ssh_and_install(hosts, ssh_options(tmp_path), efs=True, echo=lines.append, connect=net.connect,
                                run=pip_wheel)
    assert [e.host.address for e in net.connects].count("c-0") == 2  # refused once, then kept to the end
    assert sorted(a for a, command in net.commands() if command == "true") == ["c-0", "c-1"]
    assert "  SSH answering: 1/2" in lines and "  SSH answering: 2/2" in lines
    state = shlex.join(["sh", "-c", remote.USER_DATA_STATE])  # exit 0 (the fake's answer): the ready marker is there
    assert sorted(a for a, command in net.commands() if command == state) == ["c-0", "c-1"]
    assert list(net.files) == ["/efs/mxlaunch/wheels/mxlaunch-0.1.0-py3-none-any.whl"]
    (install,) = [(c.address, c.stdin) for c in net.calls if c.argv == ("bash", "-s")]
    assert install[0] == "c-0"  # one venv on EFS: installed once
    assert "python3 -m venv /efs/mxlaunch/venv" in install[1]
    assert "/efs/mxlaunch/wheels/mxlaunch-0.1.0-py3-none-any.whl[cpu]" in install[1]  # no GPUs: the cpu extra
    checks = [c.address for c in net.calls if c.argv[:1] == ("/efs/mxlaunch/venv/bin/python",)]
    assert sorted(checks) == ["c-0", "c-1"]  # every host sees the shared venv (checked in parallel)


def test_ssh_wait_is_bounded_and_diagnoses_each_host(tmp_path, monkeypatch):
    ticks = iter(range(0, 10 ** 6, 100))
    monkeypatch.setattr(wait, "CLOCK", lambda: next(ticks))
    monkeypatch.setattr(wait, "SLEEP", lambda s: None)
    net = FakeNetwork(answer=lambda call: (1, "", "") if call.address == "c-3" else None)
    net.fail("c-0", socket.timeout("timed out"))
    net.fail("c-1", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    net.fail("c-2", paramiko.AuthenticationException("Authentication failed."))
    net.fail("c-4", ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    r = remote.Remote(ssh_options(tmp_path), echo=lambda line: None, connect=net.connect)
    hosts = [("c-0", "198.51.100.1"), ("c-1", "198.51.100.2"), ("c-2", "198.51.100.3"), ("c-3", "198.51.100.4"),
             ("c-4", None)]
    with pytest.raises(wait.WaitTimeout) as err:
        r.wait_for(hosts, ["test", "-f", "/var/lib/mxlaunch/ready"], "user data finished", 600)
    msg = err.value.format_message()
    assert msg.startswith("timed out after 600s waiting for user data finished: ") and "\n" not in msg
    assert "c-0: port 22 unreachable: is your address inside --ssh-cidr? still booting? (ssh: cannot " \
           "connect to ubuntu@c-0:22: timed out after 10s" in msg
    assert "c-1: port 22 refused: sshd not started yet (ssh: cannot connect to ubuntu@c-1:22: connection refused" in msg
    assert "c-2: port 22 open: SSH answers but the login failed (ssh: authentication failed as ubuntu" in msg
    assert "c-3: SSH answers; the command exited 1 (ssh: exit 1)" in msg
    assert "c-4: no public address" in msg
    assert err.value.exit_code == Exit.WAIT_TIMEOUT
    tries = [c.address for c in net.calls].count("c-3")  # 600 s of 100 s ticks: a bounded number of tries ...
    assert 3 <= tries <= 8 and [e.host.address for e in net.connects].count("c-0") == tries
    assert [e.host.address for e in net.connects].count("c-3") == 1  # ... over the one connection that works


def user_data(failed=None, log="", ready=False):
    """A fake host's answers to the user-data wait: its failed marker (or not), its ready marker, its log."""
    def answer(call):
        if call.argv[:2] == ("sh", "-c") and call.argv[2] == remote.USER_DATA_STATE:
            return (remote.FAILED_STATUS, failed + "\n", "") if failed else (0 if ready else 1, "", "")
        if call.argv[:2] == ("tail", "-n"):  # as tail(1) answers
            assert call.argv[-1] == "/var/log/mxlaunch-userdata.log"
            return 0, "".join(line + "\n" for line in log.splitlines()[-int(call.argv[2]):]), ""
        return None
    return answer


def test_a_failed_marker_ends_the_user_data_wait_at_once_with_the_step_and_the_logs_tail(tmp_path, monkeypatch):
    polls = []
    monkeypatch.setattr(wait, "SLEEP", polls.append)
    log = "".join(f"line {n}\n" for n in range(30)) + "mxlaunch: step efs failed: EFS fs-1 could not be mounted\n"
    net = FakeNetwork(answer=lambda call: user_data(
        failed="efs: EFS fs-1 could not be mounted" if call.address == "c-1" and len(polls) >= 2 else None,
        log=log)(call))
    r = remote.Remote(ssh_options(tmp_path), echo=lambda line: None, connect=net.connect)
    with pytest.raises(remote.UserDataFailed) as err:
        r.wait_user_data([("c-0", "198.51.100.1"), ("c-1", "198.51.100.2")], 900)
    msg = err.value.format_message()
    assert len(polls) == 2  # the poll that saw the marker ended the wait: no timeout, no third try
    assert msg.startswith("the user data of c-1 failed at step efs: EFS fs-1 could not be mounted; the end of its "
                          "log /var/log/mxlaunch-userdata.log: line 19 | line 20 |"), msg
    assert msg.endswith("| mxlaunch: step efs failed: EFS fs-1 could not be mounted") and "line 18" not in msg
    assert "login failed" not in msg and err.value.exit_code == Exit.FAILED


def test_a_user_data_still_running_at_the_timeout_names_each_host_with_its_logs_tail(tmp_path, monkeypatch):
    ticks = iter(range(0, 10 ** 6, 100))
    monkeypatch.setattr(wait, "CLOCK", lambda: next(ticks))
    monkeypatch.setattr(wait, "SLEEP", lambda s: None)
    answers = user_data(log="mxlaunch: apt is busy (first-boot unattended-upgrades?): waiting for its lock\n")
    net = FakeNetwork(answer=lambda call: (0, "", "") if call.address == "c-0" and call.argv[0] == "sh" else
                      answers(call))
    net.fail("c-2", paramiko.AuthenticationException("Authentication failed."))
    r = remote.Remote(ssh_options(tmp_path), echo=lambda line: None, connect=net.connect)
    with pytest.raises(wait.WaitTimeout) as err:
        r.wait_user_data([("c-0", "198.51.100.1"), ("c-1", "198.51.100.2"), ("c-2", "198.51.100.3")], 900)
    msg = err.value.format_message()
    assert msg.startswith("timed out after 900s waiting for the user data to finish: c-1: still running; the end of "
                          "its log /var/log/mxlaunch-userdata.log: mxlaunch: apt is busy"), msg
    assert "c-0" not in msg  # ready
    # only a host where SSH itself does not get in is said to fail the login
    assert "c-2: port 22 open: SSH answers but the login failed" in msg and msg.count("login failed") == 1


def test_a_changed_host_key_ends_the_wait_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(wait, "SLEEP", lambda s: pytest.fail("no second try: a changed key is not a booting host"))
    net = FakeNetwork()
    old, new = paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)
    net.fail("c-1", paramiko.BadHostKeyException("198.51.100.2", new, old))
    r = remote.Remote(ssh_options(tmp_path), echo=lambda line: None, connect=net.connect)
    with pytest.raises(SSHConnectError) as err:
        r.wait_for([("c-0", "198.51.100.1"), ("c-1", "198.51.100.2")], ["true"], "SSH answering", 600)
    assert err.value.exit_code == Exit.SSH
    assert err.value.format_message().startswith("c-1: host key ssh-rsa SHA256:") and "does NOT match" in \
        err.value.format_message()


def test_up_wait_ssh_hands_the_cluster_to_the_install_step(moto_aws, aws_env, monkeypatch):
    seen = []
    monkeypatch.setattr(remote, "wait_ssh_and_install",
                        lambda hosts, ssh, efs, echo, gpus_per_host, options: seen.append((hosts, ssh, efs, gpus_per_host)))
    args = [a if a != "running" else "ssh" for a in up_args("ws", 2)]
    r = launch(*args)
    assert r.code == 0, r.err
    (hosts, ssh, efs, gpus), = seen
    assert [h[0] for h in hosts] == ["ws-0", "ws-1"] and efs is True
    # the cluster's own SSH settings, as `launch train --cluster` uses them; first-seen host keys recorded
    assert ssh == SSHOptions(key=str(state.key_path("ws")), user="ubuntu", known_hosts=str(state.known_hosts_path("ws")),
                             accept_new=True, config_path=str(state.ssh_config_path("ws")))
    assert gpus == 4  # g5.12xlarge: the install step ends with the GPU check of all 4 on every instance
    assert "next: launch train --cluster ws -n 2" in r.out and "--gpus 0,1,2,3" in r.out


def test_a_failed_install_keeps_the_launched_cluster_and_says_how_to_go_on(moto_aws, aws_env, monkeypatch):
    def boom(*a, **k):
        raise wait.WaitTimeout("timed out after 600s waiting for SSH answering: wsf-0: port 22 unreachable")
    monkeypatch.setattr(remote, "wait_ssh_and_install", boom)
    args = [a if a != "running" else "ssh" for a in up_args("wsf", 2)]
    r = launch(*args)
    assert r.code == Exit.WAIT_TIMEOUT and "port 22 unreachable" in r.err.strip().splitlines()[-1]
    held = tagged_everything("wsf")
    ids = sorted(i["InstanceId"] for i in held["instances"])
    assert len(ids) == 2 and len(held["file_systems"]) == 1 and len(held["security_groups"]) == 2
    assert (aws_env / "mxlaunch-home" / "clusters" / "wsf" / "id_key").exists()  # the key stays with it
    (kept,) = [line for line in r.err.splitlines() if line.startswith("up failed after launching")]
    assert all(i in kept for i in ids) and held["file_systems"][0]["FileSystemId"] in kept
    assert "~$11.34/h" in kept  # 2 x g5.12xlarge, the catalog's estimate
    assert ("`launch cluster up wsf --instance-type g5.12xlarge --count 2 --ssh-cidr 203.0.113.7/32` finishes it, "
            "`launch cluster down wsf` removes it") in kept
    # the way on works: `up` again (the install now succeeds) launches nothing and finishes
    monkeypatch.setattr(remote, "wait_ssh_and_install", lambda *a, **k: None)
    r = launch(*args)
    assert r.code == 0 and "is complete: nothing to create" in r.err, r.err
    assert sorted(i["InstanceId"] for i in tagged_everything("wsf")["instances"]) == ids
    assert launch("cluster", "down", "wsf", "--yes").code == 0 and nothing_tagged("wsf")
