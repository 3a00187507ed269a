"""Pure parts of `launch cluster`: catalog, spec validation, error translation, templates, and the SSH/install
step over the fake Connection of testkit.fake_ssh (nothing is ever connected to)."""
from __future__ import annotations

import errno
import socket
import subprocess
from pathlib import Path

import botocore.exceptions as bce
import paramiko
import pytest

from aws_fixtures import CIDR, launch, nothing_tagged, up_args
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
        with pytest.raises(UsageError, match=f"retired by AWS.*{r.instead}"):
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
                                  ("OptInRequired", awsmod.UnknownRegion, Exit.USAGE),
                                  ("SomethingElse", awsmod.AwsError, Exit.AWS_ERROR)]:
        e = awsmod.translate(client_error(code), "ec2.RunInstances")
        assert type(e) is kind and e.exit_code == exit_code
        assert "\n" not in e.format_message() and "ec2.RunInstances" in e.format_message()


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
    assert sorted(a for a, command in net.commands() if command == "test -f /var/lib/mxlaunch/ready") == ["c-0", "c-1"]
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


def test_failed_install_rolls_back(moto_aws, aws_env, monkeypatch):
    def boom(*a, **k):
        raise wait.WaitTimeout("timed out after 600s waiting for SSH answering: ws-0: port 22 unreachable")
    monkeypatch.setattr(remote, "wait_ssh_and_install", boom)
    args = [a if a != "running" else "ssh" for a in up_args("wsf", 2)]
    r = launch(*args)
    assert r.code == Exit.WAIT_TIMEOUT and "port 22 unreachable" in r.err.strip().splitlines()[-1]
    assert nothing_tagged("wsf") and not moto_aws.groups
    assert not (aws_env / "mxlaunch-home" / "clusters" / "wsf").exists()
