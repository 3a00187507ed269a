"""The cluster in a box itself (testkit/box.py): `launch cluster up` against its moto server gets
real hosts of this run, in launch order, that look like DLAMI instances from the inside; `down` leaves nothing."""
from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

from aws_fixtures import tagged_everything
from fixtures_box import box_up_args
from testkit import bed as beds
from testkit import box as boxes
from testkit import users
from testkit.image import READY_DIR
from testkit.system import pid_alive

pytestmark = [pytest.mark.bed, pytest.mark.aws, pytest.mark.timeout(120)]
BOX_CAPACITY = 2


def test_up_gets_bed_hosts_that_look_like_instances_and_down_leaves_nothing(box):
    code, out, err = box.launch("cluster", "up", "bx", *box_up_args(box, 2))
    assert code == 0, err
    addresses = [m.address for m in box.bed.members]
    assert [e["address"] for e in box.booted()] == addresses  # launch order
    assert all(e["booted"] and e["key_name"] == "launch-bx" for e in box.booted())
    held = tagged_everything("bx", endpoint_url=box.endpoint)
    by_index = sorted(held["instances"], key=lambda i: i["AmiLaunchIndex"])
    assert [(i["PrivateIpAddress"], i["PublicIpAddress"]) for i in by_index] == [(a, a) for a in addresses]
    placement = box.client("ec2").describe_placement_groups()["PlacementGroups"]  # answered by the server
    assert [g["GroupName"] for g in placement] == ["launch-bx"]

    code, out, err = box.launch("cluster", "hostfile", "bx")
    assert code == 0, err
    assert sorted(line.split()[0] for line in out.splitlines() if line.strip() and not line.startswith("#")) == \
        sorted(f"ubuntu@{a}" for a in addresses)

    # the cluster's own ssh config and key (made by `up` from moto's key pair) let `ubuntu` in, not root
    hidden = [boxes.REPO, box.home, os.path.dirname(box.dir)]
    probe = (f"whoami; echo $HOME; cat {READY_DIR}/ready >/dev/null && echo ready; "
             + "; ".join(f"test -e {h} && ls -A {h} | head -1 | grep -q . && echo sees {h}" for h in hidden)
             + "; echo from-0 > /efs/mxlaunch/work/x; true")
    first = box.ssh("bx", 0, probe)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split("\n")[:3] == ["ubuntu", "/home/ubuntu", "ready"], first.stdout
    assert "sees" not in first.stdout  # the checkout, MXLAUNCH_HOME, the test run's tmp dirs: empty there
    second = box.ssh("bx", 1, "cat /efs/mxlaunch/work/x; ls -A ~ | grep -c . || true; python3 -c 'import sys; "
                              "print(sys.executable)'")
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["from-0", "1", "/usr/bin/python3"]  # home: only .ssh; the system python3
    with open(os.path.join(box.bed.shared, "mxlaunch", "work", "x")) as fh:
        assert fh.read() == "from-0\n"  # /efs is the box's shared directory, seen by the test too

    code, out, err = box.launch("cluster", "down", "bx", "--yes")
    assert code == 0, err
    assert not any(tagged_everything("bx", endpoint_url=box.endpoint).values())
    assert box.client("ec2").describe_placement_groups()["PlacementGroups"] == []
    assert not os.path.exists(box.cluster_dir("bx"))
    assert all(box.bed.job_pids(i) == [] for i in range(2))


def test_a_box_out_of_hosts_refuses_run_instances_as_aws_does(box):
    ec2 = box.client("ec2")
    with pytest.raises(ClientError) as refused:
        ec2.run_instances(ImageId="ami-12345678", MinCount=BOX_CAPACITY + 1, MaxCount=BOX_CAPACITY + 1,
                          InstanceType="g5.xlarge")
    assert refused.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert ec2.describe_instances(Filters=[{"Name": "instance-type", "Values": ["g5.xlarge"]}])["Reservations"] == []


def test_down_of_a_box_leaves_no_namespace_process_or_dir_and_the_user_only_to_other_live_boxes(tmp_path):
    b = boxes.up(1, hide=(boxes.REPO,), dir=str(tmp_path / "box"))
    server, sshd, name = b.server.pid, b.bed.members[0].sshd_pid, b.bed.name
    assert users.user_exists("ubuntu") and os.path.isdir("/efs")
    assert b.down() == []
    assert beds.leftovers(name) == [] and not pid_alive(server) and not pid_alive(sshd)
    assert not os.path.exists(b.bed.dir) and not os.path.exists(b.dir)
    if beds._image_users(but=name):  # this module's box (or another run's) still uses them: they stay
        assert users.user_exists("ubuntu") and os.path.isdir("/efs")
    else:  # the last box gone: what a box made is gone too
        assert not any(m.startswith(("user-", "dir-")) for m in users.made_here(beds.STATE_ROOT))
